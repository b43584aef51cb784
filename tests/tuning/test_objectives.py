"""Training-spec and cross-validation objectives: the Trainer reports each epoch so pruners stop bad trials;
k-fold and stratified k-fold for torch models and scikit-learn estimators, mean and std per trial."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from cleanai.errors import ConfigError
from cleanai.training import TrainConfig
from cleanai.tuning import CrossValidation, TrainingSpec, TuneConfig, train_config_for, tune

from .conftest import build_mlp


def test_train_config_for_applies_field_names_and_dotted_keys() -> None:
    base = TrainConfig(optimizer="sgd", optimizer_kwargs={"nesterov": False}, progress=False)
    config = train_config_for(base, {"lr": 0.05, "optimizer_kwargs.momentum": 0.9, "units": 16, "epochs": 2})
    assert (config.lr, config.epochs, config.optimizer_kwargs) == (0.05, 2, {"nesterov": False, "momentum": 0.9})
    with pytest.raises(ValueError, match="unknown optimizer 'no_such_optimizer'"):  # pydantic's, as for any TrainConfig
        train_config_for(base, {"optimizer": "no_such_optimizer"})


def test_training_spec_trains_reports_every_epoch_and_keeps_the_best_model(digit_loaders, tmp_path) -> None:
    train, val = digit_loaders
    spec = TrainingSpec(build_mlp, train, val, TrainConfig(epochs=3, optimizer="adam", seed=0, progress=False))
    space = {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
             "optimizer": {"type": "categorical", "choices": ["adam", "sgd"], "registry": "optimizers"}}
    result = tune(spec, space, TuneConfig(n_trials=3, seed=0, run_dir=tmp_path))
    assert result.directions == ["maximize"]  # val_accuracy is maximised
    for trial in result.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert trial.value == trial.intermediate_values[3]
        assert "units" in trial.params  # declared by the builder through hp.Int
    best = result.get_best_models(1)[0]  # rebuilt with the best trial's width, its trained weights loaded
    from cleanai.training import Trainer

    scores = Trainer(best, config=TrainConfig(progress=False)).evaluate(val)
    assert scores["accuracy"] == pytest.approx(result.best_value)


def test_hyperband_stops_bad_trials_early(digit_loaders) -> None:
    train, val = digit_loaders
    spec = TrainingSpec(build_mlp, train, val, TrainConfig(epochs=6, optimizer="sgd", seed=0, progress=False))
    space = {"lr": {"type": "float", "low": 1e-5, "high": 0.5, "log": True}}  # tiny lrs never learn
    result = tune(spec, space, TuneConfig(sampler="random", pruner="hyperband", n_trials=10, seed=0,
                                          pruner_kwargs={"min_resource": 1, "max_resource": 6, "reduction_factor": 3}))
    pruned = [t for t in result.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "Hyperband pruned no trial"
    assert all(len(t.intermediate_values) < 6 for t in pruned)  # stopped before the last epoch
    assert result.best_trial.state == optuna.trial.TrialState.COMPLETE


def test_median_pruner_through_the_training_spec(digit_loaders) -> None:
    train, val = digit_loaders
    spec = TrainingSpec(build_mlp, train, val, TrainConfig(epochs=4, optimizer="sgd", seed=0, progress=False))
    result = tune(spec, {"lr": [0.3, 1e-5]},
                  TuneConfig(sampler="random", pruner="median", n_trials=6, seed=0,
                             pruner_kwargs={"n_startup_trials": 1, "n_warmup_steps": 1}))
    pruned = [t for t in result.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.params["lr"] == 1e-5 for t in pruned)  # only the lr that cannot learn is stopped
    assert all(len(t.intermediate_values) < 4 for t in pruned)


def test_a_metric_the_run_does_not_record_fails_the_trial_naming_the_keys(digit_loaders) -> None:
    train, val = digit_loaders
    spec = TrainingSpec(build_mlp, train, val, TrainConfig(epochs=1, progress=False), metric="val_f1")
    result = tune(spec, {"lr": [0.01]}, TuneConfig(n_trials=1))
    assert "metric 'val_f1' is not in the epoch's record; choose one of: train_loss, val_loss, val_accuracy" in \
        result.trials[0].user_attrs["fail_reason"]


def test_stratified_kfold_keeps_class_shares_and_covers_every_example_once(digits) -> None:
    from cleanai.data import subset

    data = subset(digits.train, 200, seed=0)
    cv = CrossValidation(build_mlp, data, folds=4, stratified=True)
    held = np.concatenate([h for _, h in cv.splits()])
    assert sorted(held.tolist()) == list(range(len(data)))
    labels = np.asarray([int(data[i][1]) for i in range(len(data))])
    for _, h in cv.splits():
        assert abs(np.bincount(labels[h], minlength=10) - np.bincount(labels, minlength=10) / 4).max() <= 1


def test_cross_validation_of_a_torch_model_reports_mean_and_std(digits) -> None:
    from cleanai.data import subset

    data = subset(digits.train, 240, seed=0)
    cv = CrossValidation(build_mlp, data, folds=3, config=TrainConfig(epochs=2, lr=0.01, seed=0, progress=False))
    result = tune(cv, {"units": [8, 16]}, TuneConfig(sampler="grid", n_trials=2))
    for trial in result.trials:
        scores = trial.user_attrs["cv_scores"]
        assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
        assert trial.value == pytest.approx(np.mean(scores)) == trial.user_attrs["cv_mean"]
        assert trial.user_attrs["cv_std"] == pytest.approx(np.std(scores))
        assert sorted(trial.intermediate_values) == [0, 1, 2]  # the running mean after each fold
    assert result.directions == ["maximize"] and result.dataframe()["cv_accuracy"].notna().all()


def test_cross_validation_of_a_scikit_learn_estimator(digits) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x[:400] / 16.0, y[:400]
    cv = CrossValidation(lambda hp: LogisticRegression(C=hp["C"], max_iter=300), (x, y), folds=3, stratified=False)
    result = tune(cv, {"C": {"type": "float", "low": 1e-4, "high": 10.0, "log": True}},
                  TuneConfig(sampler="tpe", n_trials=5, seed=0))
    assert result.best_value > 0.85
    worst = min(result.completed(), key=lambda t: t.value)
    assert worst.params["C"] < result.best_params["C"]  # heavy regularisation underfits
    assert len(result.best_trial.user_attrs["cv_scores"]) == 3


def test_cross_validation_refuses_one_fold() -> None:
    with pytest.raises(ConfigError, match="folds must be >= 2"):
        CrossValidation(build_mlp, (torch.zeros(4, 64), torch.zeros(4)), folds=1)

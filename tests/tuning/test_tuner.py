"""The Keras-Tuner-like API: a model-building function declaring hp.Int / hp.Float / hp.Choice."""

from __future__ import annotations

import pytest
from torch import nn

from cleanai.errors import ConfigError
from cleanai.training import Callback, TrainConfig, Trainer
from cleanai.tuning import TuneConfig, Tuner


def build(hp):
    width = hp.Int("units", 8, 32, step=8)
    hp.Float("lr", 1e-3, 3e-2, sampling="log")  # a TrainConfig field: it sets the learning rate
    hp.Choice("optimizer", ["adam", "adamw"], registry="optimizers")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def test_search_then_best_models_and_summary(digit_loaders, capsys) -> None:
    train, val = digit_loaders
    tuner = Tuner(build, train, val, train_config=TrainConfig(epochs=2, seed=0, progress=False),
                  tune_config=TuneConfig(sampler="random", n_trials=4, seed=0, keep_models=2))
    with pytest.raises(ConfigError, match="call search\\(\\) first"):
        tuner.get_best_models()
    result = tuner.search()
    assert {"units", "lr", "optimizer"} == set(result.best_params)
    models = tuner.get_best_models(2)
    ranked = result.completed()
    for model, trial in zip(models, ranked):
        assert model[1].out_features == trial.params["units"]  # rebuilt with that trial's width
        accuracy = Trainer(model, config=TrainConfig(progress=False)).evaluate(val)["accuracy"]
        assert accuracy == pytest.approx(trial.value)  # and its trained weights
    text = tuner.results_summary(3)
    assert text in capsys.readouterr().out
    assert "4 complete" in text and "val_accuracy" in text and f"units={ranked[0].params['units']}" in text


def test_the_trial_learning_rate_and_optimizer_reach_the_trainer(digit_loaders) -> None:
    train, val = digit_loaders
    used = []

    class Watch(Callback):
        def on_train_begin(self, trainer) -> None:
            used.append((trainer.optimizer.param_groups[0]["lr"], type(trainer.optimizer).__name__.lower()))

    tuner = Tuner(build, train, val, train_config=TrainConfig(epochs=1, progress=False),
                  tune_config=TuneConfig(sampler="random", n_trials=3, seed=3), callbacks=[Watch()])
    result = tuner.search()
    assert used == [(t.params["lr"], t.params["optimizer"]) for t in result.trials]

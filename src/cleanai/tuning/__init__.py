"""Hyperparameter search on Optuna: `tune(objective_or_spec, space, TuneConfig(...))` -> `TuneResult`.

    from cleanai.tuning import TrainingSpec, TuneConfig, tune
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
             "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"], "registry": "optimizers"}}
    spec = TrainingSpec(lambda hp: create_model("small_cnn", num_classes=10), loaders.train, loaders.val,
                        TrainConfig(epochs=5, progress=False))
    result = tune(spec, space, TuneConfig(sampler="tpe", pruner="hyperband", n_trials=20, run_dir="runs/tune"))
    result.best_params, result.best_weights, result.dataframe(); save_result(result, "runs/tune")

Samplers (grid, random, tpe, gp, cmaes, nsga2, qmc) and pruners (none, median, sha, hyperband) are chosen by
name. A study lives in `<run_dir>/study.db` (SQLite) and resumes after a crash; workers on many machines share
one through a PostgreSQL URL (`storage=`; `local_postgres()` starts a throw-away server on this machine to try
it). `Tuner` is the Keras-Tuner-like API (`hp.Int`, `hp.Float`, `hp.Choice`), `CrossValidation` scores k folds,
`search_distillation` tunes epochs, alpha and T.
"""

from cleanai.tuning.config import TuneConfig, TuningError
from cleanai.tuning.distillation import DISTILLATION_SPACE, DistillationSpec, search_distillation
from cleanai.tuning.local_postgres import local_postgres
from cleanai.tuning.objectives import CrossValidation, TrainingSpec, TrialReporter, train_config_for
from cleanai.tuning.plots import plot_study, save_result
from cleanai.tuning.samplers import (
    PRUNERS, SAMPLERS, create_pruner, create_sampler, list_pruners, list_samplers, register_pruner, register_sampler,
)
from cleanai.tuning.space import HyperParameters, Param, SearchSpace, load_space
from cleanai.tuning.study import mask_url
from cleanai.tuning.tune import TuneResult, TuneTrial, tune
from cleanai.tuning.tuner import Tuner

__all__ = [
    "DISTILLATION_SPACE", "PRUNERS", "SAMPLERS", "CrossValidation", "DistillationSpec", "HyperParameters", "Param",
    "SearchSpace", "TrainingSpec", "TrialReporter", "TuneConfig", "TuneResult", "TuneTrial", "Tuner", "TuningError",
    "create_pruner", "create_sampler", "list_pruners", "list_samplers", "load_space", "local_postgres", "mask_url",
    "plot_study", "register_pruner", "register_sampler", "save_result", "search_distillation", "train_config_for",
    "tune",
]

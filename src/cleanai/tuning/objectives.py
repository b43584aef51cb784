"""Objectives that train a model per trial.

- `TrainingSpec`: a model builder + data + a base `TrainConfig`; the trial's parameters named like TrainConfig
  fields (`lr`, `optimizer`, `epochs`, `optimizer_kwargs.momentum`) override it, the model builder reads the
  rest through `hp`. The Trainer reports the validation metric each epoch (`TrialReporter`), so median,
  successive-halving and Hyperband pruners stop bad trials early.
- `CrossValidation`: k-fold or stratified k-fold, for torch models (trained by the Trainer) and scikit-learn
  estimators; the trial's value is the mean score, `cv_mean` / `cv_std` / `cv_scores` are kept with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from cleanai.errors import ConfigError
from cleanai.training import Callback, TrainConfig, Trainer, seed_everything
from cleanai.tuning.space import ModelBuilder
from cleanai.tuning.tune import TuneTrial

_TRAIN_FIELDS = frozenset(TrainConfig.model_fields)


def _quiet() -> TrainConfig:
    return TrainConfig(progress=False)


def train_config_for(base: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """`base` with the values named like its fields applied (`optimizer_kwargs.momentum` sets one key of a dict field)."""
    fields = base.model_dump()
    for key, value in values.items():
        head, dot, sub = key.partition(".")
        if dot and isinstance(fields.get(head), dict):
            fields[head] = {**fields[head], sub: value}
        elif key in _TRAIN_FIELDS:
            fields[key] = value
    return TrainConfig.model_validate(fields)


def direction_of(metric: str) -> str:
    """`minimize` for a loss (not a scikit-learn `neg_` score), else `maximize`."""
    return "minimize" if "loss" in metric and not metric.startswith("neg_") else "maximize"


class MetricObjective:
    """An objective scored by one named metric: minimised when it is a loss, else maximised."""

    metric: str

    @property
    def direction(self) -> str:
        return direction_of(self.metric)

    @property
    def metric_names(self) -> list[str]:
        return [self.metric]


class TrialReporter(Callback):
    """After each epoch, report `monitor` to the trial; raises `optuna.TrialPruned` when the pruner stops it."""

    def __init__(self, trial: TuneTrial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ConfigError(f"metric {self.monitor!r} is not in the epoch's record; choose one of: "
                              f"{', '.join(k for k in logs if k != 'epoch')}")
        self.trial.report(logs[self.monitor], epoch)


def fit_reporting(trial: TuneTrial, model: nn.Module, train: Iterable[Any], val: Iterable[Any], config: TrainConfig,
                  metric: str, callbacks: Sequence[Callback] = ()) -> float:
    """Train `model` with the Trainer, reporting `metric` each epoch; keep the model; return the last epoch's value."""
    history = Trainer(model, config=config, callbacks=[*callbacks, TrialReporter(trial, metric)]).fit(train, val)
    trial.keep_model(model)
    return history.last[metric]


@dataclass
class TrainingSpec(MetricObjective):
    """Train `build(hp)` on `train`, score it on `val` by `metric` (a History key such as `val_accuracy`)."""

    build: ModelBuilder
    train: Iterable[Any]
    val: Iterable[Any]
    config: TrainConfig = field(default_factory=_quiet)
    metric: str = "val_accuracy"
    callbacks: Sequence[Callback] = ()

    def __call__(self, trial: TuneTrial) -> float:
        if self.config.seed is not None:  # before the model is built: the seed fixes its initial weights too
            seed_everything(self.config.seed)
        model = self.build(trial.hp)
        return fit_reporting(trial, model, self.train, self.val, train_config_for(self.config, trial.hp.values),
                             self.metric, self.callbacks)


@dataclass
class CrossValidation(MetricObjective):
    """k-fold cross-validation of `build(hp)`: a torch module trained by the Trainer on a `Dataset`, or a
    scikit-learn estimator on `data=(X, y)`. `metric` is a task metric name (`accuracy`, `loss`, `macro_f1`) for
    torch and a scikit-learn scorer name for estimators. The running mean is reported after each fold."""

    build: ModelBuilder
    data: Dataset[Any] | tuple[Any, Any]
    folds: int = 5
    stratified: bool = True
    config: TrainConfig = field(default_factory=_quiet)
    metric: str = "accuracy"
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2 (each fold holds out 1/folds of the data), got {self.folds}")

    @property
    def metric_names(self) -> list[str]:
        return [f"cv_{self.metric}"]

    def splits(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train indices, held-out indices) per fold; stratified folds keep each class's share."""
        from sklearn.model_selection import KFold, StratifiedKFold

        labels = self._labels()
        splitter = (StratifiedKFold if self.stratified else KFold)(n_splits=self.folds, shuffle=True,
                                                                   random_state=self.seed)
        return list(splitter.split(np.zeros(len(labels)), labels))

    def __call__(self, trial: TuneTrial) -> float:
        scores: list[float] = []
        for fold, (train_idx, held_idx) in enumerate(self.splits()):
            if self.config.seed is not None:
                seed_everything(self.config.seed)
            model = self.build(trial.hp)
            scores.append(self._score(model, train_idx, held_idx, trial))
            trial.report(float(np.mean(scores)), fold)
        mean, std = float(np.mean(scores)), float(np.std(scores))
        trial.set("cv_scores", scores)
        trial.set("cv_mean", mean)
        trial.set("cv_std", std)
        return mean

    def _score(self, model: Any, train_idx: np.ndarray, held_idx: np.ndarray, trial: TuneTrial) -> float:
        if isinstance(model, nn.Module):
            if not isinstance(self.data, Dataset):
                raise ConfigError(f"a torch model is cross-validated on a torch Dataset, got {type(self.data).__name__}")
            generator = torch.Generator().manual_seed(self.seed)
            train = DataLoader(Subset(self.data, train_idx.tolist()), batch_size=self.batch_size, shuffle=True,
                               generator=generator)
            held = DataLoader(Subset(self.data, held_idx.tolist()), batch_size=self.batch_size)
            history = Trainer(model, config=train_config_for(self.config, trial.hp.values)).fit(train, held)
            key = f"val_{self.metric}"
            if key not in history.last:
                raise ConfigError(f"metric {self.metric!r} is not measured; the run records "
                                  f"{', '.join(k.removeprefix('val_') for k in history.last if k.startswith('val_'))} "
                                  f"(add it to TrainConfig.metrics)")
            return float(history.last[key])
        if not hasattr(model, "fit"):
            raise ConfigError(f"build(hp) must return a torch nn.Module or a scikit-learn estimator, got "
                              f"{type(model).__name__}")
        from sklearn.metrics import get_scorer

        x, y = self._arrays()
        model.fit(x[train_idx], y[train_idx])
        try:
            scorer = get_scorer(self.metric)
        except ValueError:
            raise ConfigError(f"metric {self.metric!r} is not a scikit-learn scorer name (e.g. accuracy, f1_macro, "
                              f"neg_log_loss)") from None
        return float(scorer(model, x[held_idx], y[held_idx]))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.data, Dataset):
            raise ConfigError("a scikit-learn estimator is cross-validated on data=(X, y) arrays, not a torch Dataset")
        x, y = self.data
        return np.asarray(x), np.asarray(y)

    def _labels(self) -> np.ndarray:
        if not isinstance(self.data, Dataset):
            return self._arrays()[1]
        base, index = (self.data.dataset, self.data.indices) if isinstance(self.data, Subset) else (self.data, None)
        for attr in ("labels", "targets"):
            found = getattr(base, attr, None)
            if found is not None:
                found = np.asarray(found)
                return found if index is None else found[np.asarray(index)]
        return np.asarray([int(self.data[i][1]) for i in range(len(self.data))])  # type: ignore[arg-type]

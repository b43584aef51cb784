"""A Keras-Tuner-like front door: `Tuner(build_model, train, val, ...).search()`, `get_best_models(n)`,
`results_summary()`, where `build_model(hp)` declares its hyperparameters with `hp.Int`, `hp.Float`, `hp.Choice`.

    def build(hp):
        width = hp.Int("units", 32, 512, step=32)
        hp.Float("lr", 1e-4, 1e-1, sampling="log")           # a TrainConfig field: it sets the learning rate
        hp.Choice("optimizer", registry="optimizers")          # any registered optimizer, by name
        return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    tuner = Tuner(build, loaders.train, loaders.val, tune_config=TuneConfig(sampler="tpe", pruner="hyperband"))
    tuner.search()
    best, = tuner.get_best_models(1)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from cleanai.errors import ConfigError
from cleanai.training import Callback, TrainConfig
from cleanai.tuning.config import TuneConfig
from cleanai.tuning.objectives import TrainingSpec
from cleanai.tuning.space import ModelBuilder, SearchSpace
from cleanai.tuning.tune import TuneResult, tune


class Tuner:
    """Tunes a model-building function with the CleanAI Trainer; hyperparameters named like TrainConfig fields
    (`lr`, `optimizer`, `epochs`, ...) set the training run, the others shape the model."""

    def __init__(self, build: ModelBuilder, train: Iterable[Any], val: Iterable[Any], *,
                 objective: str = "val_accuracy", train_config: TrainConfig | None = None,
                 tune_config: TuneConfig | Mapping[str, Any] | None = None,
                 space: SearchSpace | Mapping[str, Any] | None = None, callbacks: Sequence[Callback] = ()) -> None:
        self.spec = TrainingSpec(build, train, val, train_config or TrainConfig(progress=False), objective, callbacks)
        self.tune_config = tune_config
        self.space = space
        self.result: TuneResult | None = None

    def search(self) -> TuneResult:
        """Run (or resume) the search; returns its `TuneResult`."""
        self.result = tune(self.spec, self.space, self.tune_config)
        return self.result

    def get_best_models(self, n: int = 1) -> list[nn.Module]:
        """The `n` best models, rebuilt and loaded with their trained weights."""
        return self._searched().get_best_models(n)

    def results_summary(self, n: int = 10) -> str:
        """Print and return a table of the `n` best trials."""
        return self._searched().results_summary(n)

    def _searched(self) -> TuneResult:
        if self.result is None:
            raise ConfigError("call search() first")
        return self.result

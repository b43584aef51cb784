"""Registries of Optuna samplers and pruners, chosen by name: `create_sampler("tpe", seed=0)`, `create_pruner("hyperband")`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from cleanai.errors import ConfigError
from cleanai.registry import Registry, accepted_kwargs
from cleanai.tuning.space import SearchSpace

SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry("sampler")
SAMPLERS.register("grid", optuna.samplers.GridSampler)
SAMPLERS.register("random", optuna.samplers.RandomSampler)
SAMPLERS.register("tpe", optuna.samplers.TPESampler)
SAMPLERS.register("gp", optuna.samplers.GPSampler)
SAMPLERS.register("cmaes", optuna.samplers.CmaEsSampler)
SAMPLERS.register("nsga2", optuna.samplers.NSGAIISampler)
SAMPLERS.register("qmc", optuna.samplers.QMCSampler)

register_sampler = SAMPLERS.register  # a factory may take `seed` and `search_space`

PRUNERS: Registry[Callable[..., optuna.pruners.BasePruner]] = Registry("pruner")
PRUNERS.register("none", optuna.pruners.NopPruner)
PRUNERS.register("median", optuna.pruners.MedianPruner)
PRUNERS.register("sha", optuna.pruners.SuccessiveHalvingPruner)
PRUNERS.register("hyperband", optuna.pruners.HyperbandPruner)
register_pruner = PRUNERS.register


def list_samplers() -> list[str]:
    """Names accepted by `create_sampler` (and TuneConfig.sampler)."""
    return SAMPLERS.names()


def list_pruners() -> list[str]:
    """Names accepted by `create_pruner` (and TuneConfig.pruner)."""
    return PRUNERS.names()


def create_sampler(name: str, *, seed: int | None = None, space: SearchSpace | None = None,
                   **kwargs: Any) -> optuna.samplers.BaseSampler:
    """Build a sampler by name; `seed` and the space's grid go to the factories that take them."""
    accepted = accepted_kwargs(SAMPLERS.get(name)) or []
    if "search_space" in accepted and "search_space" not in kwargs:
        if space is None:
            raise ConfigError(f"sampler {name!r} needs the search space as data (a dict or YAML file of parameters), "
                              "not an objective that samples its own parameters")
        kwargs["search_space"] = space.grid()
    if "seed" in accepted:
        kwargs.setdefault("seed", seed)
    return SAMPLERS.create(name, **kwargs)


def create_pruner(name: str, **kwargs: Any) -> optuna.pruners.BasePruner:
    """Build a pruner by name (`none`, `median`, `sha`, `hyperband`)."""
    return PRUNERS.create(name, **kwargs)

"""Sampler and pruner registries: every name builds its Optuna object; bad names and arguments are named."""

from __future__ import annotations

import optuna
import pytest

from cleanai.errors import ConfigError, UnknownNameError
from cleanai.tuning import SearchSpace, create_pruner, create_sampler, list_pruners, list_samplers, register_sampler

SPACE = SearchSpace.from_dict({"x": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5}})


def test_the_issue_names_are_registered() -> None:
    assert {"grid", "random", "tpe", "gp", "cmaes", "nsga2", "qmc"} <= set(list_samplers())
    assert {"none", "median", "sha", "hyperband"} <= set(list_pruners())


@pytest.mark.parametrize("name", ["grid", "random", "tpe", "gp", "cmaes", "nsga2", "qmc"])
def test_every_sampler_runs_a_study(name: str) -> None:
    sampler = create_sampler(name, seed=0, space=SPACE)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: SPACE.sample(t)["x"], n_trials=3)
    assert all(t.params["x"] in (0.0, 0.5, 1.0) for t in study.trials)


def test_grid_gets_the_space_and_refuses_without_one() -> None:
    assert create_sampler("grid", space=SPACE)._search_space == {"x": [0.0, 0.5, 1.0]}
    with pytest.raises(ConfigError, match="sampler 'grid' needs the search space as data"):
        create_sampler("grid")


@pytest.mark.parametrize(("name", "cls"), [("none", optuna.pruners.NopPruner), ("median", optuna.pruners.MedianPruner),
                                           ("sha", optuna.pruners.SuccessiveHalvingPruner),
                                           ("hyperband", optuna.pruners.HyperbandPruner)])
def test_pruners_by_name(name: str, cls: type) -> None:
    assert isinstance(create_pruner(name), cls)


def test_unknown_names_and_arguments_are_named() -> None:
    with pytest.raises(UnknownNameError, match="unknown sampler 'tpee'. Did you mean 'tpe'"):
        create_sampler("tpee")
    with pytest.raises(TypeError, match="pruner 'median' does not accept 'patience'"):
        create_pruner("median", patience=3)


def test_a_user_sampler_registers_by_name() -> None:
    register_sampler("my_random", lambda seed=None: optuna.samplers.RandomSampler(seed=seed), override=True)
    assert isinstance(create_sampler("my_random", seed=1), optuna.samplers.RandomSampler)

"""Search spaces as data and through `hp`: parsing, load-time validation naming the parameter, sampling, grids."""

from __future__ import annotations

import optuna
import pytest

from cleanai.errors import ConfigError
from cleanai.tuning import HyperParameters, SearchSpace, load_space

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "units": {"type": "int", "low": 8, "high": 64, "step": 8},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"], "registry": "optimizers"},
    "momentum": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.3, "when": {"optimizer": "sgd"}},
}


def test_sampling_respects_ranges_steps_log_and_conditions() -> None:
    space = SearchSpace.from_dict(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(40):
        trial = study.ask()
        values = space.sample(trial)
        study.tell(trial, 0.0)
        seen.append(values)
        assert 1e-4 <= values["lr"] <= 1e-1
        assert values["units"] in range(8, 65, 8)
        assert ("momentum" in values) == (values["optimizer"] == "sgd")
    assert {v["optimizer"] for v in seen} == {"sgd", "adamw"}
    assert isinstance(study.trials[0].distributions["lr"], optuna.distributions.FloatDistribution)
    assert study.trials[0].distributions["lr"].log


def test_a_list_is_a_categorical_and_yaml_loads_the_same_space(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("space:\n  lr: {type: float, low: 1e-4, high: 0.1, log: true}\n  act: [relu, gelu]\n")
    space = load_space(path)
    assert space.names == ["lr", "act"]
    assert space.params[0].low == 1e-4  # YAML reads 1e-4 as a string: still a number here
    assert space.to_dict()["act"] == {"type": "categorical", "choices": ["relu", "gelu"]}


def test_a_registry_gives_its_names_as_choices() -> None:
    space = SearchSpace.from_dict({"loss": {"type": "categorical", "registry": "losses"}})
    from cleanai.training import list_losses

    assert list(space.params[0].choices) == list_losses()


@pytest.mark.parametrize(("spec", "message"), [
    ({}, "the search space is empty"),
    ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "parameter 'lr': low (0.1) is greater than high (0.01)"),
    ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "parameter 'lr': log scale needs low > 0"),
    ({"lr": {"type": "double", "low": 0, "high": 1}}, "parameter 'lr': unknown type 'double'"),
    ({"units": {"type": "int", "low": 1.5, "high": 4}}, "parameter 'units': an int parameter needs whole numbers"),
    ({"units": {"type": "int", "low": 1}}, "parameter 'units': int parameters need low and high"),
    ({"act": {"type": "categorical", "choices": []}}, "parameter 'act': choices must be a non-empty list"),
    ({"opt": {"type": "categorical", "choices": ["sgd", "adamm"], "registry": "optimizers"}},
     "parameter 'opt': unknown optimizer 'adamm'"),
    ({"m": {"type": "float", "low": 0, "high": 1, "when": {"optimizer": "sgd"}}},
     "parameter 'm': its condition names 'optimizer', which is not a parameter declared before it"),
    ({"o": ["sgd", "adam"], "m": {"type": "float", "low": 0, "high": 1, "when": {"o": "rmsprop"}}},
     "parameter 'm': its condition o='rmsprop' can never hold"),
    ({"lr": {"type": "float", "low": 1e-3, "high": 1, "log": True, "step": 0.1}},
     "parameter 'lr': log scale and a step cannot be combined"),
    ({"lr": {"type": "float", "low": 0, "hihg": 1}}, "parameter 'lr': unknown key(s) 'hihg'"),
])
def test_a_bad_space_is_refused_at_load_time_naming_the_parameter(spec, message) -> None:
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict(spec)
    assert message in str(info.value)


def test_grid_values_and_a_float_without_step_is_refused_for_grid() -> None:
    space = SearchSpace.from_dict({"units": {"type": "int", "low": 8, "high": 24, "step": 8}, "act": ["a", "b"],
                                   "p": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25}})
    assert space.grid() == {"units": [8, 16, 24], "act": ["a", "b"], "p": [0.0, 0.25, 0.5]}
    with pytest.raises(ConfigError, match="parameter 'lr': the grid sampler needs a finite set of values"):
        SearchSpace.from_dict({"lr": {"type": "float", "low": 0.0, "high": 1.0}}).grid()


def test_hp_declares_samples_and_reuses_values() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    hp = HyperParameters(trial, {"units": 48})  # already sampled from a data space: returned as is
    assert hp.Int("units", 32, 512, step=32) == 48
    lr = hp.Float("lr", 1e-4, 1e-1, sampling="log")
    assert 1e-4 <= lr <= 1e-1 and trial.params["lr"] == lr
    assert hp.Choice("optimizer", registry="optimizers") in __import__("cleanai").training.list_optimizers()
    assert hp.Float("lr", 1e-4, 1e-1, sampling="log") == lr  # the same name twice: one value
    assert hp["lr"] == lr and "optimizer" in hp
    with pytest.raises(ConfigError, match="parameter 'depth': low \\(4\\) is greater than high \\(2\\)"):
        hp.Int("depth", 4, 2)


def test_hp_without_a_trial_gives_defaults() -> None:
    hp = HyperParameters()
    assert hp.Int("units", 32, 512, step=32) == 32
    assert hp.Choice("act", ["relu", "gelu"], default="gelu") == "gelu"
    assert hp.Boolean("bias") is False

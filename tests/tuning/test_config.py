"""TuneConfig: names and their arguments checked at load time, inconsistent settings refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cleanai.tuning import TuneConfig


def test_defaults_and_one_direction_as_a_string() -> None:
    config = TuneConfig(directions="maximize")
    assert config.directions == ["maximize"] and config.sampler == "tpe" and config.pruner == "none"


@pytest.mark.parametrize(("fields", "message"), [
    ({"sampler": "bayes"}, "unknown sampler 'bayes'"),
    ({"pruner": "hyperbnd"}, "Did you mean 'hyperband'"),
    ({"pruner": "median", "pruner_kwargs": {"min_resource": 1}}, "pruner 'median' does not accept 'min_resource'"),
    ({"n_trials": None, "timeout": None}, "n_trials, timeout and max_steps are all unset"),
    ({"max_steps": 0}, "max_steps"),
    ({"directions": ["maximize", "minimize"], "max_steps": 10}, "max_steps counts the steps"),
    ({"directions": ["maximize", "minimize"], "pruner": "hyperband"}, "needs one objective"),
    ({"heartbeat_interval": 5, "grace_period": 5}, "grace_period (5) must exceed heartbeat_interval (5)"),
    ({"directions": ["upward"]}, "directions"),
    ({"n_trials": 0}, "n_trials"),
])
def test_bad_settings_are_refused(fields, message) -> None:
    with pytest.raises(ValidationError) as info:
        TuneConfig(**fields)
    assert message in str(info.value)

"""OptimizeConfig: the quick preset and bad values refused with their names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cleanai.errors import CleanAIError
from cleanai.optimize import OptimizeConfig


def test_quick_preset_is_small_and_fields_given_win():
    quick = OptimizeConfig.quick(n_trials=2)
    assert quick.n_trials == 2 and quick.search_epochs == 1 and quick.final_epochs == 1
    assert OptimizeConfig().accuracy_budget == pytest.approx(0.01)


@pytest.mark.parametrize(("fields", "message"), [
    ({"criteria": ["nope"]}, "nope"),
    ({"search_epochs": 4, "final_epochs": 2}, "final_epochs"),
    ({"n_trials": None}, "never end"),
    ({"max_accuracy_drop": -1}, "max_accuracy_drop"),
    ({"objective": "speed"}, "objective"),
])
def test_bad_settings_are_refused_naming_the_field(fields, message):
    with pytest.raises((ValidationError, CleanAIError), match=message):
        OptimizeConfig(**fields)

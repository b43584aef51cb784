"""Successive halving of the fine-tuning budget inside a multi-objective study."""

from __future__ import annotations

import optuna
import pytest

from cleanai.optimize import SuccessiveHalving, rungs
from cleanai.tuning import TuneTrial


def test_rungs_grow_by_eta_and_end_at_the_budget():
    assert rungs(0, 3) == []
    assert rungs(1, 3) == [1]
    assert rungs(3, 3) == [1, 3]
    assert rungs(10, 3) == [1, 3, 9, 10]


def _trial(study: optuna.Study, tmp_path) -> TuneTrial:
    return TuneTrial(study.ask(), None, tmp_path, multi=True)


def test_a_trial_below_the_floor_and_the_top_third_stops_but_one_within_budget_goes_on(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    halving = SuccessiveHalving(eta=3, floor=0.9)
    for value in (0.8, 0.7):  # two earlier trials at rung 0, below the floor
        halving.check(_trial(study, tmp_path), 0, value)  # fewer than eta values: nobody is stopped yet
    with pytest.raises(optuna.TrialPruned, match="rung 0"):
        halving.check(_trial(study, tmp_path), 0, 0.6)  # the worst of three, below the floor
    halving.check(_trial(study, tmp_path), 0, 0.82)  # the best so far, though below the floor: in the top third
    halving.check(_trial(study, tmp_path), 0, 0.9)  # meets the floor: goes on whatever the others did
    with pytest.raises(optuna.TrialPruned):
        halving.check(_trial(study, tmp_path), 0, 0.81)  # below the floor and below the top third (0.9)

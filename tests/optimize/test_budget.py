"""TimeBudget: a trial starts only while it and the final rerun are expected to end within the whole call's budget."""

from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from cleanai.optimize.budget import TRAIN_EPOCHS, TRAIN_SECONDS, TimeBudget, TrainingClock

T0 = datetime(2026, 1, 1)


def finished(number: int, seconds: float, state: TrialState = TrialState.COMPLETE, **attrs) -> FrozenTrial:
    return FrozenTrial(number=number, trial_id=number, state=state, value=None,
                       values=[1.0] if state == TrialState.COMPLETE else None, datetime_start=T0,
                       datetime_complete=T0 + timedelta(seconds=seconds), params={}, distributions={},
                       user_attrs=attrs, system_attrs={}, intermediate_values={})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def study_of(*trials: FrozenTrial) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for trial in trials:
        study.add_trial(trial)
    return study


def test_estimates_come_from_the_complete_trials_and_take_the_longest_schedule():
    trials = [finished(0, 100, **{TRAIN_SECONDS: 60.0, TRAIN_EPOCHS: 2}),  # 30 s per epoch, 40 s outside training
              finished(1, 50, **{TRAIN_SECONDS: 0.0, TRAIN_EPOCHS: 0}),  # no training: 50 s outside
              finished(2, 10, TrialState.PRUNED, **{TRAIN_SECONDS: 10.0, TRAIN_EPOCHS: 1})]  # not counted
    budget = TimeBudget(1000, trial_epochs=3, final_epochs=7, final_extra=20, clock=Clock())
    assert budget.trial_estimate(trials) == pytest.approx(3 * 30 + 50)  # longest schedule, longest outside
    assert budget.final_estimate(trials) == pytest.approx(7 * 30 + 2 * 50 + 20)  # ... and the test benchmark
    short = TimeBudget(1000, trial_epochs=1, final_epochs=7, clock=Clock())
    assert short.trial_estimate(trials) == pytest.approx(100)  # a complete trial took longer than 1 epoch + 50 s
    assert short.trial_estimate([]) == short.final_estimate([]) == 0


def test_a_trial_starts_only_while_it_and_the_final_rerun_fit():
    clock = Clock()
    budget = TimeBudget(1000, trial_epochs=3, final_epochs=7, final_extra=20, clock=clock)
    study = study_of(finished(0, 100, **{TRAIN_SECONDS: 60.0, TRAIN_EPOCHS: 2}), finished(1, 50))
    clock.now = 530  # 530 + 140 + 330 = 1000
    assert budget.may_start(study)
    clock.now = 531
    assert not budget.may_start(study)
    assert "531 s spent" in budget.describe(study.trials) and "final rerun 330 s" in budget.describe(study.trials)


def test_before_any_trial_only_the_time_spent_counts():
    clock = Clock()
    budget = TimeBudget(60, trial_epochs=2, final_epochs=3, clock=clock)
    clock.now = 59
    assert budget.may_start(study_of())
    clock.now = 61
    assert not budget.may_start(study_of())


def test_the_training_clock_adds_up_what_a_trial_trained():
    class Trial:
        def __init__(self) -> None:
            self.attrs: dict = {}

        def set(self, key, value):
            self.attrs[key] = value

    clock, trial = TrainingClock(), Trial()
    with clock.training(2):
        pass
    with clock.training(1):
        pass
    clock.record(trial)
    assert trial.attrs[TRAIN_EPOCHS] == 3 and 0 <= trial.attrs[TRAIN_SECONDS] < 1


def test_a_near_miss_is_rerun_only_while_its_rerun_and_the_choices_fit():
    clock = Clock()
    budget = TimeBudget(1000, trial_epochs=3, final_epochs=7, final_extra=20, clock=clock)
    trials = [finished(0, 100, **{TRAIN_SECONDS: 60.0, TRAIN_EPOCHS: 2}), finished(1, 50)]  # a final rerun: 330 s
    clock.now = 340  # 340 + 2 x 330 = 1000
    assert budget.may_rerun(trials, 2)
    clock.now = 341
    assert not budget.may_rerun(trials, 2) and budget.may_rerun(trials, 1)

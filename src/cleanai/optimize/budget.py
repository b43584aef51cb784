"""The wall-time budget of a whole `optimize()` call (`OptimizeConfig.time_budget`).

Optuna's `timeout` only stops new trials from starting, and the chosen pipeline's final rerun comes after the
study, so a search bounded by `timeout` alone ends late by a trial and the rerun. `TimeBudget` lets a trial
start only while it and the final rerun are expected to end within the budget. Both are estimated from the
study's finished trials, on the side of caution: a trial takes the longest schedule a trial may train
(`max_steps` x `finetune.epochs` + `search_epochs`) at the slowest seconds per epoch a trial measured (KD epochs
cost more than plain ones), plus the longest time a trial spent outside training (export, quantization,
evaluation, timing), or the longest complete trial if that took more; the final rerun trains its longest
schedule (`max_steps` x `finetune.epochs` + `final_epochs`) at that pace, plus twice the longest time outside
training, plus its benchmark of the original and the artifact on the test split (`final_extra`: measuring the
original on the validation split, scaled to the test split's size). Until a trial has trained, only the trial
estimate counts. After the study, a near miss is rerun only while its rerun and the choice's are expected to fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from cleanai.tuning import TuneTrial

TRAIN_SECONDS, TRAIN_EPOCHS = "train_seconds", "train_epochs"  # the user attributes a trial records


class TimeBudget:
    """`seconds` of wall time from construction for everything; `trial_epochs` / `final_epochs`: the longest
    training of one trial / of the final rerun; `final_extra`: seconds the final benchmark adds (set once known)."""

    def __init__(self, seconds: float, trial_epochs: int, final_epochs: int, final_extra: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.trial_epochs, self.final_epochs = seconds, trial_epochs, final_epochs
        self.final_extra, self._clock = final_extra, clock
        self.start = clock()

    def elapsed(self) -> float:
        return self._clock() - self.start

    def final_estimate(self, trials: Sequence[FrozenTrial]) -> float:
        """Expected seconds of the final rerun, from the finished trials (0 when none has finished)."""
        done = _complete(trials)
        if not done:
            return 0.0
        return self.final_epochs * _per_epoch(done) + 2 * _outside(done) + self.final_extra

    def trial_estimate(self, trials: Sequence[FrozenTrial]) -> float:
        """Expected seconds of one more trial: its longest schedule at the measured pace, or the longest complete
        trial if that took more (0 when none has finished)."""
        done = _complete(trials)
        longest = max((t.duration.total_seconds() for t in done), default=0.0)
        return max(longest, self.trial_epochs * _per_epoch(done) + _outside(done)) if done else 0.0

    def may_start(self, study: optuna.Study) -> bool:
        """Whether another trial and the final rerun are expected to end within the budget."""
        trials = study.get_trials(deepcopy=False)
        return self.elapsed() + self.trial_estimate(trials) + self.final_estimate(trials) <= self.seconds

    def may_rerun(self, trials: Sequence[FrozenTrial], reruns: int) -> bool:
        """Whether `reruns` more final reruns are expected to end within the budget."""
        return self.elapsed() + reruns * self.final_estimate(trials) <= self.seconds

    def describe(self, trials: Sequence[FrozenTrial]) -> str:
        return (f"time_budget {self.seconds:g} s: {self.elapsed():.0f} s spent, a trial expected to take "
                f"{self.trial_estimate(trials):.0f} s and the final rerun {self.final_estimate(trials):.0f} s")


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.duration is not None]


def _per_epoch(done: Sequence[FrozenTrial]) -> float:
    """The slowest seconds per training epoch of the complete trials (0 when none trained)."""
    return max((t.user_attrs[TRAIN_SECONDS] / t.user_attrs[TRAIN_EPOCHS] for t in done
                if t.user_attrs.get(TRAIN_EPOCHS)), default=0.0)


def _outside(done: Sequence[FrozenTrial]) -> float:
    """The longest time a complete trial spent outside training."""
    return max((t.duration.total_seconds() - t.user_attrs.get(TRAIN_SECONDS, 0.0) for t in done), default=0.0)


class TrainingClock:
    """The seconds and epochs one trial spends training, kept as its user attributes for `TimeBudget`."""

    def __init__(self) -> None:
        self.seconds, self.epochs = 0.0, 0

    @contextmanager
    def training(self, epochs: int) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - start
        self.epochs += epochs

    def record(self, trial: TuneTrial) -> None:
        trial.set(TRAIN_SECONDS, self.seconds)
        trial.set(TRAIN_EPOCHS, self.epochs)

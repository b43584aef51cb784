"""The wall-time budget of a whole `optimize()` call (`OptimizeConfig.time_budget`).

Optuna's `timeout` only stops new trials from starting, and the chosen pipeline's final rerun comes after the
study, so a search bounded by `timeout` alone ends late by a trial and the rerun. `TimeBudget` lets a trial
start only while it and the final rerun are expected to end within the budget. Both are estimated from the
study's finished trials: a trial takes the median duration of the complete ones; the final rerun trains its
longest possible schedule (`max_steps` x `finetune.epochs` + `final_epochs`) at the slowest seconds per epoch a
trial measured (KD epochs cost more than plain ones), plus twice the longest time a trial spent outside
training (export, quantization, evaluation, timing; the rerun also benchmarks the original on the test split
and writes the report). Until a trial has trained, only the trial estimate counts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from cleanai.tuning import TuneTrial

TRAIN_SECONDS, TRAIN_EPOCHS = "train_seconds", "train_epochs"  # the user attributes a trial records


class TimeBudget:
    """`seconds` of wall time from construction for everything; `final_epochs`: the rerun's longest training."""

    def __init__(self, seconds: float, final_epochs: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.final_epochs, self._clock = seconds, final_epochs, clock
        self.start = clock()

    def elapsed(self) -> float:
        return self._clock() - self.start

    def final_estimate(self, trials: Sequence[FrozenTrial]) -> float:
        """Expected seconds of the final rerun, from the finished trials (0 when none has finished)."""
        done = _complete(trials)
        trained = [t for t in done if t.user_attrs.get(TRAIN_EPOCHS)]
        per_epoch = max((t.user_attrs[TRAIN_SECONDS] / t.user_attrs[TRAIN_EPOCHS] for t in trained), default=0.0)
        outside = max((t.duration.total_seconds() - t.user_attrs.get(TRAIN_SECONDS, 0.0) for t in done), default=0.0)
        return self.final_epochs * per_epoch + 2 * outside

    def trial_estimate(self, trials: Sequence[FrozenTrial]) -> float:
        """Expected seconds of one more trial: the median of the complete ones (0 when none has finished)."""
        durations = [t.duration.total_seconds() for t in _complete(trials)]
        return statistics.median(durations) if durations else 0.0

    def may_start(self, study: optuna.Study) -> bool:
        """Whether another trial and the final rerun are expected to end within the budget."""
        trials = study.get_trials(deepcopy=False)
        return self.elapsed() + self.trial_estimate(trials) + self.final_estimate(trials) <= self.seconds

    def describe(self, trials: Sequence[FrozenTrial]) -> str:
        return (f"time_budget {self.seconds:g} s: {self.elapsed():.0f} s spent, a trial expected to take "
                f"{self.trial_estimate(trials):.0f} s and the final rerun {self.final_estimate(trials):.0f} s")


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.duration is not None]


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

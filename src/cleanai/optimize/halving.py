"""Successive halving of fine-tuning budgets inside a multi-objective study.

Optuna's pruners (SHA, Hyperband) judge single-objective studies only, and the optimize study has three
objectives; so the rule is applied here, on the one value that fine-tuning changes (validation accuracy),
with what every trial recorded at each rung. Rungs sit at 0, 1, eta, eta^2... extra fine-tuning epochs;
at each rung a candidate goes on if it already meets the accuracy floor or ranks in the top 1/eta of
the candidates that reached that rung (asynchronous successive halving), and stops (pruned) otherwise.
"""

from __future__ import annotations

import optuna

from cleanai.tuning import TuneTrial


def rungs(max_epochs: int, eta: int) -> list[int]:
    """The cumulative extra epochs a candidate trains to, one stretch at a time (1, eta, eta^2, ..., `max_epochs`;
    empty for 0); it is judged before each stretch, at 0, 1, eta, ... epochs."""
    out, epochs = [], 1
    while max_epochs and epochs < max_epochs:
        out.append(epochs)
        epochs *= eta
    return [*out, max_epochs] if max_epochs else []


class SuccessiveHalving:
    """Stops a trial at a rung when its accuracy is below `floor` and below the top 1/`eta` at that rung."""

    def __init__(self, eta: int, floor: float) -> None:
        self.eta, self.floor = eta, floor

    def check(self, trial: TuneTrial, rung: int, accuracy: float) -> None:
        """Record `accuracy` at `rung`; raise `optuna.TrialPruned` if the trial should stop here."""
        key = f"rung_{rung}"
        trial.set(key, accuracy)
        seen = [t.user_attrs[key] for t in trial.optuna.study.get_trials(deepcopy=False)
                if t.number != trial.number and key in t.user_attrs]
        values = sorted([*seen, accuracy], reverse=True)
        if accuracy >= self.floor or len(values) < self.eta:
            return
        cutoff = values[len(values) // self.eta - 1]
        if accuracy < cutoff:
            raise optuna.TrialPruned(f"trial {trial.number} stopped at rung {rung}: val accuracy {accuracy:.4f} is "
                                     f"below the floor {self.floor:.4f} and the top 1/{self.eta} ({cutoff:.4f})")

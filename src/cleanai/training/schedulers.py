"""Learning-rate schedulers by name, each with the interval at which the Trainer steps it.

`get_scheduler("cosine", optimizer, T_max=10)` returns a torch scheduler. Every entry is a
`SchedulerSpec`: a factory `(optimizer, **kwargs)`, the interval it is stepped at, and (optionally)
the name of its *horizon* argument, the total number of scheduler steps, which the Trainer fills in
from the run length when it is not given:

| name              | built from                          | stepped        | horizon     |
|-------------------|-------------------------------------|----------------|-------------|
| step              | StepLR(step_size, gamma)            | per epoch      |             |
| multistep         | MultiStepLR(milestones, gamma)      | per epoch      |             |
| exponential       | ExponentialLR(gamma)                | per epoch      |             |
| reduce_on_plateau | ReduceLROnPlateau(...)              | per epoch, with the monitored value (e.g. val_loss) | |
| cosine            | CosineAnnealingLR(T_max, eta_min)   | per epoch      | T_max       |
| polynomial        | PolynomialLR(total_iters, power)    | per epoch      | total_iters |
| piecewise         | PiecewiseConstantLR(boundaries, values) | per epoch  |             |
| warmup_cosine     | WarmupCosineLR(warmup_steps, total_steps, min_lr) | per optimizer step | total_steps |

Warm-up schedules are stepped per optimizer step (a warm-up of a few epochs is too coarse);
`TrainConfig.scheduler_interval` overrides the default for any entry. Counts such as `step_size`,
`boundaries` and `warmup_steps` are in units of that interval.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim import lr_scheduler

from cleanai.registry import Registry
from cleanai.registry import check_kwargs
from cleanai.errors import ConfigError

Interval = Literal["epoch", "step"]
Scheduler = lr_scheduler.LRScheduler  # ReduceLROnPlateau is a subclass too


class WarmupCosineLR(lr_scheduler.LRScheduler):
    """Linear warm-up from base_lr/warmup_steps to base_lr over `warmup_steps` steps, then a half
    cosine down to `min_lr` at `total_steps` (held there afterwards)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0, last_epoch: int = -1) -> None:
        if not 0 <= warmup_steps <= total_steps:
            raise ConfigError(f"warmup_cosine needs 0 <= warmup_steps <= total_steps, got warmup_steps="
                             f"{warmup_steps}, total_steps={total_steps}")
        self.warmup_steps, self.total_steps, self.min_lr = warmup_steps, total_steps, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step < self.warmup_steps:
            return [base * (step + 1) / self.warmup_steps for base in self.base_lrs]
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return [self.min_lr + (base - self.min_lr) * cosine for base in self.base_lrs]


class PiecewiseConstantLR(lr_scheduler.LRScheduler):
    """Learning rate `values[i]` while `boundaries[i-1] <= step < boundaries[i]` (absolute values,
    applied to every parameter group); needs one more value than boundaries."""

    def __init__(self, optimizer: torch.optim.Optimizer, boundaries: Sequence[int], values: Sequence[float],
                 last_epoch: int = -1) -> None:
        if len(values) != len(boundaries) + 1:
            raise ConfigError(f"piecewise needs len(values) == len(boundaries) + 1, got {len(boundaries)} "
                             f"boundaries {list(boundaries)} and {len(values)} values {list(values)}")
        if any(b <= a for a, b in zip(boundaries, boundaries[1:])):
            raise ConfigError(f"piecewise boundaries must increase strictly, got {list(boundaries)}")
        self.boundaries, self.values = list(boundaries), [float(v) for v in values]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        value = self.values[bisect.bisect_right(self.boundaries, self.last_epoch)]
        return [value for _ in self.optimizer.param_groups]


@dataclass(frozen=True)
class SchedulerSpec:
    """A registered scheduler: its factory, default stepping interval and horizon argument name."""

    factory: Callable[..., Scheduler]
    interval: Interval = "epoch"
    horizon: str | None = None

    def __call__(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Scheduler:
        return self.factory(optimizer, **kwargs)


SCHEDULERS: Registry[SchedulerSpec] = Registry("scheduler")


def register_scheduler(name: str | None = None, factory: Callable[..., Scheduler] | None = None, *,
                       interval: Interval = "epoch", horizon: str | None = None, override: bool = False) -> Any:
    """Register `factory(optimizer, **kwargs)` under `name`; without `factory`, return a decorator.

    `interval` says whether the Trainer steps it per epoch or per optimizer step; `horizon` names the
    argument that takes the total number of scheduler steps, filled in by the Trainer when omitted.
    """

    def add(fn: Callable[..., Scheduler]) -> Callable[..., Scheduler]:
        SCHEDULERS.register(name or fn.__name__, SchedulerSpec(fn, interval, horizon), override=override)
        return fn

    return add if factory is None else add(factory)


register_scheduler("step", lr_scheduler.StepLR)
register_scheduler("multistep", lr_scheduler.MultiStepLR)
register_scheduler("exponential", lr_scheduler.ExponentialLR)
register_scheduler("reduce_on_plateau", lr_scheduler.ReduceLROnPlateau)
register_scheduler("cosine", lr_scheduler.CosineAnnealingLR, horizon="T_max")
register_scheduler("polynomial", lr_scheduler.PolynomialLR, horizon="total_iters")
register_scheduler("piecewise", PiecewiseConstantLR)
register_scheduler("warmup_cosine", WarmupCosineLR, interval="step", horizon="total_steps")


def list_schedulers() -> list[str]:
    """Names accepted by `get_scheduler`."""
    return SCHEDULERS.names()


def scheduler_spec(name: str) -> SchedulerSpec:
    """The registered entry for `name` (its default interval and horizon argument)."""
    return SCHEDULERS.get(name)


def get_scheduler(name: str, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Scheduler:
    """Build the scheduler `name` for `optimizer`."""
    spec = SCHEDULERS.get(name)
    check_kwargs("scheduler", name, spec.factory, kwargs, positional=(optimizer,))
    return spec(optimizer, **kwargs)

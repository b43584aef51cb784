from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cleanai.errors import UnknownNameError
from cleanai.training import SCHEDULERS, get_scheduler, list_schedulers, register_scheduler, scheduler_spec

CASES = {
    "step": {"step_size": 2, "gamma": 0.5},
    "multistep": {"milestones": [1, 3], "gamma": 0.1},
    "exponential": {"gamma": 0.9},
    "reduce_on_plateau": {"patience": 0, "factor": 0.5},
    "cosine": {"T_max": 4},
    "polynomial": {"total_iters": 4, "power": 2.0},
    "piecewise": {"boundaries": [2, 4], "values": [0.5, 0.05, 0.005]},
    "warmup_cosine": {"warmup_steps": 2, "total_steps": 6},
}


def lrs(name: str, steps: int, **kwargs: object) -> list[float]:
    """Learning rate before each of `steps` optimizer steps, stepping the scheduler after each."""
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=1.0)
    sched = get_scheduler(name, opt, **kwargs)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        sched.step(1.0) if name == "reduce_on_plateau" else sched.step()
    return seen


def test_every_registered_scheduler_has_a_case() -> None:
    assert set(list_schedulers()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_scheduler_changes_the_learning_rate(name: str) -> None:
    seen = lrs(name, 7, **CASES[name])
    assert all(math.isfinite(v) and v >= 0 for v in seen)
    assert len(set(seen)) > 1


def test_warmup_cosine_rises_linearly_then_decays_to_min_lr() -> None:
    seen = lrs("warmup_cosine", 8, warmup_steps=2, total_steps=6, min_lr=0.1)
    assert seen[:2] == pytest.approx([0.5, 1.0])
    assert seen[2] == pytest.approx(1.0)
    assert seen[4] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert seen[6:] == pytest.approx([0.1, 0.1])
    assert scheduler_spec("warmup_cosine").interval == "step"


def test_piecewise_uses_absolute_values_between_boundaries() -> None:
    assert lrs("piecewise", 6, boundaries=[2, 4], values=[0.5, 0.05, 0.005]) == pytest.approx(
        [0.5, 0.5, 0.05, 0.05, 0.005, 0.005])


def test_piecewise_rejects_mismatched_values() -> None:
    with pytest.raises(ValueError, match="len\\(values\\) == len\\(boundaries\\) \\+ 1"):
        lrs("piecewise", 1, boundaries=[2, 4], values=[0.5, 0.05])


def test_missing_argument_is_named() -> None:
    with pytest.raises(TypeError, match="scheduler 'step'.*step_size"):
        get_scheduler("step", torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0))


def test_unknown_scheduler_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="warmup_cosine"):
        get_scheduler("cosine_warmup", torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0))


def test_user_scheduler_registers_with_interval_and_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SCHEDULERS, "_items", dict(SCHEDULERS._items))

    @register_scheduler("linear_decay", interval="step", horizon="total")
    def linear_decay(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=total)

    spec = scheduler_spec("linear_decay")
    assert (spec.interval, spec.horizon) == ("step", "total")
    assert lrs("linear_decay", 3, total=2) == pytest.approx([1.0, 0.5, 0.0])

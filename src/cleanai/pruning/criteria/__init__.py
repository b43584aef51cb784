"""Pruning criteria by name: `list_criteria()`, `create_criterion("wanda")`, `@register_criterion("mine")`.

Every criterion is a Torch-Pruning `Importance` (group -> 1-D scores, higher = keep) with the
calibration contract of `Criterion` (`requirements()`, `prepare`, `refresh_each_step`, `on_pruned`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cleanai.pruning.criteria.base import NORMALIZERS, Criterion, Requirements, handler_kind, normalize, requirements
from cleanai.pruning.criteria.coverage import (
    METRICS,
    AdaptiveCoverageCriterion,
    CoverageCriterion,
    HybridCriterion,
    coverage_metric,
)
from cleanai.pruning.criteria.random import RandomCriterion
from cleanai.pruning.criteria.weights import MagnitudeCriterion, TaylorCriterion, WandaCriterion
from cleanai.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

CRITERIA: Registry[Callable[..., Criterion]] = Registry("criterion")
CRITERIA.register("magnitude", MagnitudeCriterion)
CRITERIA.register("taylor", TaylorCriterion)
CRITERIA.register("wanda", WandaCriterion)
CRITERIA.register("coverage", CoverageCriterion)
CRITERIA.register("adaptive", AdaptiveCoverageCriterion)
CRITERIA.register("hybrid", HybridCriterion)
CRITERIA.register("random", RandomCriterion)


def list_criteria() -> list[str]:
    """Names accepted by `create_criterion` and `PruneConfig.criterion`."""
    return CRITERIA.names()


def register_criterion(name: str | None = None, *, override: bool = False) -> Callable[[F], F]:
    """Decorator registering a `Criterion` subclass (or factory) under `name` (default: its `__name__`)."""
    return CRITERIA.register(name, override=override)


def create_criterion(name: str, **kwargs: Any) -> Criterion:
    """Build the criterion registered as `name`; a bad keyword names the criterion and what it accepts."""
    return CRITERIA.create(name, **kwargs)


__all__ = [
    "CRITERIA", "METRICS", "NORMALIZERS", "AdaptiveCoverageCriterion", "CoverageCriterion", "Criterion",
    "HybridCriterion", "MagnitudeCriterion", "RandomCriterion", "Requirements", "TaylorCriterion", "WandaCriterion",
    "coverage_metric", "create_criterion", "handler_kind", "list_criteria", "normalize", "register_criterion",
    "requirements",
]

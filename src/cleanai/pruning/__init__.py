"""Structured pruning with activation-aware criteria on Torch-Pruning's DependencyGraph.

`prune(model, example_inputs, PruneConfig(criterion="coverage", ratio=0.3), calib=batches)` returns a
physically smaller model and a `PruneReport`. Criteria are chosen by name (`list_criteria()`).
"""

from cleanai.pruning.activations import ActivationRecorder, ChannelStats
from cleanai.pruning.criteria import (
    CRITERIA,
    AdaptiveCoverageCriterion,
    CoverageCriterion,
    Criterion,
    HybridCriterion,
    MagnitudeCriterion,
    RandomCriterion,
    TaylorCriterion,
    WandaCriterion,
    create_criterion,
    list_criteria,
    register_criterion,
)
from cleanai.pruning.report import LayerChange, PruneReport, StepRecord
from cleanai.pruning.shortcuts import CUSTOMIZED_PRUNERS, ChannelSelect, ChannelSelectPruner, rewrite_pad_shortcuts
from cleanai.pruning.structured import PruneConfig, StructuredPruner, prunable_groups, prune

__all__ = [
    "CRITERIA", "CUSTOMIZED_PRUNERS", "ActivationRecorder", "AdaptiveCoverageCriterion", "ChannelSelect",
    "ChannelSelectPruner", "ChannelStats", "CoverageCriterion", "Criterion", "HybridCriterion", "LayerChange",
    "MagnitudeCriterion", "PruneConfig", "PruneReport", "RandomCriterion", "StepRecord", "StructuredPruner",
    "TaylorCriterion", "WandaCriterion", "create_criterion", "list_criteria", "prunable_groups", "prune",
    "register_criterion", "rewrite_pad_shortcuts",
]

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
    Requirements,
    TaylorCriterion,
    WandaCriterion,
    create_criterion,
    list_criteria,
    register_criterion,
    requirements,
)
from cleanai.pruning.report import LayerChange, LeftLayer, PruneReport, StepRecord
from cleanai.pruning.layer_pruners import RecurrentPruner, customized_pruners
from cleanai.pruning.shortcuts import CUSTOMIZED_PRUNERS, ChannelSelect, ChannelSelectPruner, rewrite_pad_shortcuts
from cleanai.pruning.batchnorm import recalibrate_batchnorm
from cleanai.pruning.config import PruneConfig
from cleanai.pruning.structured import StructuredPruner, prunable_groups, prune
from cleanai.pruning.iterative import IterativeHistory, IterativeStep, prune_and_finetune
from cleanai.pruning.sensitivity import (
    LayerSensitivity, SensitivityPoint, SensitivityResult, sensitivity_scan, suggest_ratios,
)
from cleanai.pruning.attention import (
    ATTENTION_ADAPTERS, AttentionAdapter, AttentionParts, HeadLayout, head_layout, list_attention_adapters,
    register_attention_adapter,
)
from cleanai.pruning.serialization import (
    build_manifest, load_pretrained_pruned, load_pruned, read_manifest, save_pruned, shrink_to_manifest,
)
from cleanai.pruning.movement import MovementConfig, MovementLinear, MovementPruner
from cleanai.pruning.schedules import ConstantSparsity, PolynomialDecay
from cleanai.pruning.sparse_format import SparseFileInfo, load_sparse, read_sparse, save_sparse
from cleanai.pruning.unstructured import (
    LAYER_TYPES, LayerSparsity, MaskedLayer, SparsityReport, SparsityScheduler, UnstructuredConfig, list_layer_types,
    magnitude_masks, make_permanent, prunable_weights, prune_unstructured, sparsity_report,
)

__all__ = [
    "CRITERIA", "CUSTOMIZED_PRUNERS", "ActivationRecorder", "AdaptiveCoverageCriterion", "ChannelSelect",
    "ChannelSelectPruner", "ChannelStats", "CoverageCriterion", "Criterion", "HybridCriterion",
    "LayerChange", "LeftLayer", "RecurrentPruner", "customized_pruners",
    "MagnitudeCriterion", "PruneConfig", "PruneReport", "RandomCriterion", "Requirements", "StepRecord",
    "StructuredPruner", "TaylorCriterion", "WandaCriterion", "create_criterion", "list_criteria", "prunable_groups",
    "prune", "recalibrate_batchnorm", "register_criterion", "requirements", "rewrite_pad_shortcuts",
]
__all__ += [  # unstructured and movement pruning
    "LAYER_TYPES", "ConstantSparsity", "LayerSparsity", "MaskedLayer", "MovementConfig", "MovementLinear",
    "MovementPruner", "PolynomialDecay", "SparseFileInfo", "SparsityReport", "SparsityScheduler",
    "UnstructuredConfig", "list_layer_types", "load_sparse", "magnitude_masks", "make_permanent",
    "prunable_weights", "prune_unstructured", "read_sparse", "save_sparse", "sparsity_report",
]
__all__ += [  # iterative prune -> fine-tune, sensitivity analysis, pruned-model save/load
    "IterativeHistory", "IterativeStep", "LayerSensitivity", "SensitivityPoint", "SensitivityResult",
    "build_manifest", "load_pruned", "prune_and_finetune", "read_manifest", "save_pruned", "sensitivity_scan",
    "shrink_to_manifest", "suggest_ratios",
]
__all__ += [  # attention heads: one adapter per transformer family; pruned Hugging Face models reloaded
    "ATTENTION_ADAPTERS", "AttentionAdapter", "AttentionParts", "HeadLayout", "head_layout", "list_attention_adapters",
    "load_pretrained_pruned",
    "register_attention_adapter",
]

"""The criterion contract: a Torch-Pruning `Importance` with an explicit calibration step.

A criterion maps a DepGraph group (all layers coupled to one set of channels) to one score per
channel, higher meaning keep. Each subclass scores the channels of one coupled layer at a time
(`channel_scores`); the base class averages those per-layer scores over every layer of the group
that has one, then normalises them so groups can be ranked against each other (global scope).

A criterion declares what it needs (`requirements(criterion)`): data-driven criteria
(`requires_data = True`) read calibration batches in `prepare(model, batches)`, which the pruner
calls before the first step; gradient-based ones (`requires_gradients = True`, and Torch-Pruning's
own `GroupTaylorImportance`) read `.grad` of the weights, which the pruner fills by a backward pass
over the calibration batches before every step. Criteria whose statistics must be measured again on
the partly pruned model (`refresh_each_step = True`) are prepared again before every later step;
the others keep their statistics aligned with the surgery through `on_pruned(group)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

from cleanai._batches import Batch
from cleanai._hf import HFConv1D
from cleanai.errors import CleanAIError, ConfigError

NORMALIZERS = ("mean", "max", "sum", "none")

_OUT = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels)
_IN = (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels)
_DEPTHWISE = (tpf.prune_depthwise_conv_out_channels, tpf.prune_depthwise_conv_in_channels)
_NORM = (tpf.prune_batchnorm_out_channels, tpf.prune_layernorm_out_channels, tpf.prune_groupnorm_out_channels)
WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear, HFConv1D)
_CUSTOM = {"prune_out_channels": "out", "prune_in_channels": "in"}  # a custom pruner's methods (HF Conv1D)


def handler_kind(layer: Any, handler: Any) -> str | None:
    """What a group item prunes: "out" or "in" channels of a Conv/Linear, "dw" (both, depthwise), "norm", or None."""
    if not isinstance(layer, nn.Module):
        return None
    if handler in _DEPTHWISE and isinstance(layer, nn.modules.conv._ConvNd):
        return "dw"
    if handler in _OUT and isinstance(layer, WEIGHTED):
        return "out"
    if handler in _IN and isinstance(layer, WEIGHTED):
        return "in"
    if isinstance(layer, HFConv1D):
        return _CUSTOM.get(getattr(handler, "__name__", ""))
    if handler in _NORM and getattr(layer, "weight", None) is not None:
        return "norm"
    return None


def normalize(scores: torch.Tensor, normalizer: str) -> torch.Tensor:
    """Scale a group's scores so groups compare in global ranking (by |scores|: signs never flip; zeros stay zero)."""
    if normalizer == "none":
        return scores
    magnitude = scores.abs()
    scale = {"mean": magnitude.mean(), "max": magnitude.max(), "sum": magnitude.sum()}[normalizer]
    return scores / scale if float(scale) > 0 else torch.zeros_like(scores)


def reduce_weight_saliency(layer: nn.Module, kind: str, saliency: torch.Tensor, idxs: Sequence[int]) -> torch.Tensor:
    """Sum a per-weight saliency (same shape as `layer.weight`) to one value per pruned channel `idxs`."""
    idx = torch.as_tensor(list(idxs), dtype=torch.long, device=saliency.device)
    if saliency.dim() == 1:  # norm layers
        return saliency.index_select(0, idx)
    transposed = bool(getattr(layer, "transposed", False)) or isinstance(layer, HFConv1D)  # weight (in, out, ...)
    if kind in ("out", "dw"):
        s = saliency.transpose(0, 1) if transposed else saliency
        return s.flatten(1).sum(1).index_select(0, idx)
    s = saliency.flatten(1) if transposed else saliency.transpose(0, 1).flatten(1)
    per_in = s.sum(1)
    groups = getattr(layer, "groups", 1)
    if groups not in (1, getattr(layer, "in_channels", 1)):
        per_in = per_in.repeat(groups)
    return per_in.index_select(0, idx)


@dataclass(frozen=True)
class Requirements:
    """What a criterion needs before it can score: calibration batches, and `.grad` filled on the weights."""

    data: bool = False
    gradients: bool = False


# Torch-Pruning importances that read `.grad` (filled by one backward pass per calibration batch) ...
_TP_GRADIENTS = (tp.importance.GroupTaylorImportance,)
# ... and those that need a procedure of their own (per-sample gradients, Fisher hooks, activation hooks).
_TP_UNSUPPORTED = (tp.importance.GroupHessianImportance, tp.importance.OBDCImportance,
                   tp.importance.ActivationImportance)


def requirements(criterion: Any) -> Requirements:
    """The declared needs of `criterion` (`requires_data`, `requires_gradients`), or what a Torch-Pruning
    importance reads; gradients imply data. Refuses an importance whose procedure `prune()` cannot run."""
    if isinstance(criterion, _TP_UNSUPPORTED):
        raise CleanAIError(f"criterion {type(criterion).__name__} (Torch-Pruning) needs its own accumulation "
                           "procedure, which prune() does not run; use a registered criterion (list_criteria(): "
                           "'taylor' is first-order Taylor), tp.importance.GroupTaylorImportance, or a Criterion "
                           "subclass that measures what it needs in prepare(model, batches)")
    gradients = bool(getattr(criterion, "requires_gradients", isinstance(criterion, _TP_GRADIENTS)))
    return Requirements(data=gradients or bool(getattr(criterion, "requires_data", False)), gradients=gradients)


class Criterion(tp.importance.Importance):
    """Base of CleanAI criteria (see the module docstring for the contract)."""

    requires_data: ClassVar[bool] = False
    requires_gradients: ClassVar[bool] = False
    refresh_each_step: ClassVar[bool] = False

    def __init__(self, normalizer: str = "mean") -> None:
        if normalizer not in NORMALIZERS:
            raise ConfigError(f"{type(self).__name__}: normalizer must be one of {', '.join(NORMALIZERS)}, "
                             f"got {normalizer!r}")
        self.normalizer = normalizer

    def prepare(self, model: nn.Module, batches: Sequence[Batch]) -> None:
        """Measure whatever the criterion needs on `model` (called by the pruner before scoring)."""

    def on_pruned(self, group: Any) -> None:
        """Called with each group just before it is pruned, to keep cached per-channel statistics aligned."""

    def channel_scores(self, layer: nn.Module, kind: str, idxs: Sequence[int]) -> torch.Tensor | None:
        """Scores of channels `idxs` of one coupled layer (None if this layer has nothing to say)."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores = self.group_scores(group)
        return None if scores is None else normalize(scores, self.normalizer).float()

    def group_scores(self, group: Any) -> torch.Tensor | None:
        """Average of the per-layer scores over the layers of `group`, indexed by the root's channels."""
        n = len(group[0].idxs)
        total = torch.zeros(n, dtype=torch.float64)
        layers = torch.zeros(n, dtype=torch.float64)
        for item in group:
            root_idxs = item.root_idxs
            if not root_idxs or any(r is None for r in root_idxs):
                continue
            layer = item.dep.target.module
            kind = handler_kind(layer, item.dep.handler)
            local = None if kind is None else self.channel_scores(layer, kind, item.idxs)
            if local is None:
                continue
            index = torch.as_tensor(root_idxs, dtype=torch.long)
            total.scatter_add_(0, index, local.detach().to("cpu", torch.float64))
            layers += torch.zeros(n, dtype=torch.float64).index_fill_(0, index, 1.0)
        return None if not bool((layers > 0).any()) else total / layers.clamp(min=1.0)

"""Weight-based criteria: a per-weight saliency summed to channels, then reduced over the group.

- `magnitude`: |W|^p (L1 or L2 of the group's weights, BatchNorm/LayerNorm scales included).
- `taylor`: first-order Taylor, |W ⊙ ∂L/∂W| summed over calibration batches (Molchanov et al. 2019).
- `wanda`: |W| × ‖X‖₂ of each weight's input channel (Sun et al. 2023), aggregated to the group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cleanai._hf import HFConv1D
from cleanai.errors import ConfigError, DataError
from cleanai._batches import Batch, call_model, logits_of, model_device, split_batch, to_device
from cleanai.pruning.activations import ActivationRecorder
from cleanai.pruning.criteria.base import WEIGHTED, Criterion, reduce_weight_saliency

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class WeightSaliencyCriterion(Criterion):
    """Scores a channel by the summed saliency of the weights that prune with it."""

    def saliency(self, layer: nn.Module) -> torch.Tensor | None:
        """A tensor shaped like `layer.weight` (higher = more important), or None to skip the layer."""
        raise NotImplementedError

    def channel_scores(self, layer: nn.Module, kind: str, idxs: Sequence[int]) -> torch.Tensor | None:
        sal = self.saliency(layer)
        return None if sal is None else reduce_weight_saliency(layer, kind, sal, idxs)


class MagnitudeCriterion(WeightSaliencyCriterion):
    """Group L1 (p=1) or L2 (p=2) norm of the weights removed with each channel."""

    def __init__(self, p: int = 2, normalizer: str = "mean") -> None:
        super().__init__(normalizer)
        if p not in (1, 2):
            raise ConfigError(f"magnitude: p must be 1 (L1) or 2 (L2), got {p!r}")
        self.p = p

    def saliency(self, layer: nn.Module) -> torch.Tensor | None:
        weight = getattr(layer, "weight", None)
        return None if not isinstance(weight, torch.Tensor) else weight.detach().abs().pow(self.p)


class TaylorCriterion(WeightSaliencyCriterion):
    """First-order Taylor importance |w · dL/dw|, accumulated over the calibration batches.

    Gradients are taken in eval mode (BatchNorm statistics and the model's `.grad` are left
    untouched). `loss_fn(logits, targets)` defaults to cross-entropy.
    """

    requires_data = True
    refresh_each_step = True

    def __init__(self, loss_fn: LossFn | None = None, normalizer: str = "mean") -> None:
        super().__init__(normalizer)
        self.loss_fn = loss_fn or F.cross_entropy
        self._saliency: dict[nn.Module, torch.Tensor] = {}

    def prepare(self, model: nn.Module, batches: Sequence[Batch]) -> None:
        layers = [m for m in model.modules() if isinstance(getattr(m, "weight", None), nn.Parameter)
                  and isinstance(m, (*WEIGHTED, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))]
        weights = [m.weight for m in layers]
        acc = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
        flags = [w.requires_grad for w in weights]
        was_training, device = model.training, model_device(model)
        model.eval()
        try:
            for w in weights:
                w.requires_grad_(True)
            for i, batch in enumerate(batches):
                inputs, targets = split_batch(batch)
                if targets is None:
                    raise DataError(f"taylor needs (inputs, targets) calibration batches to compute a loss; "
                                    f"batch {i} has no targets")
                with torch.enable_grad():
                    loss = self.loss_fn(logits_of(call_model(model, to_device(inputs, device))), targets.to(device))
                    grads = torch.autograd.grad(loss, weights, allow_unused=True)
                for a, w, g in zip(acc, weights, grads, strict=True):
                    if g is not None:
                        a += (w.detach() * g).abs()
        finally:
            for w, flag in zip(weights, flags, strict=True):
                w.requires_grad_(flag)
            model.train(was_training)
        self._saliency = dict(zip(layers, acc, strict=True))

    def saliency(self, layer: nn.Module) -> torch.Tensor | None:
        return self._saliency.get(layer)


class WandaCriterion(WeightSaliencyCriterion):
    """|W_ij| × ‖X_j‖₂, with X_j the j-th input channel of the layer measured on calibration data."""

    requires_data = True
    refresh_each_step = True

    def __init__(self, normalizer: str = "mean") -> None:
        super().__init__(normalizer)
        self._input_norm: dict[nn.Module, torch.Tensor] = {}

    def prepare(self, model: nn.Module, batches: Sequence[Batch]) -> None:
        with ActivationRecorder(model, module_types=WEIGHTED, where="input") as rec:
            rec.run(batches)
        modules = dict(model.named_modules())
        self._input_norm = {modules[name]: stats.l2().float() for name, stats in rec.inputs.items()}

    def saliency(self, layer: nn.Module) -> torch.Tensor | None:
        norm = self._input_norm.get(layer)
        weight = getattr(layer, "weight", None)
        if norm is None or not isinstance(layer, WEIGHTED) or not isinstance(weight, torch.Tensor):
            return None
        w = weight.detach().abs()
        if isinstance(layer, nn.Linear):
            return w * norm.to(w.device)[None, :] if norm.numel() == w.shape[1] else None
        if getattr(layer, "transposed", False) or isinstance(layer, HFConv1D):  # weight (in, ...): input = dim 0
            return w * norm.to(w.device).reshape(-1, *([1] * (w.dim() - 1))) if norm.numel() == w.shape[0] else None
        out_ch, in_per_group, groups = w.shape[0], w.shape[1], layer.groups
        if norm.numel() != in_per_group * groups:
            return None
        # Input channel feeding weight [o, j]: group of o times channels per group, plus j.
        channel = (torch.arange(out_ch) // (out_ch // groups))[:, None] * in_per_group + torch.arange(in_per_group)
        return w * norm[channel].to(w.device).reshape(out_ch, in_per_group, *([1] * (w.dim() - 2)))

"""Loss functions by name, plus `CompositeLoss`, a weighted sum of losses.

`get_loss("cross_entropy", label_smoothing=0.1)` returns an `nn.Module`; the built-ins are torch's
loss classes, so their keyword arguments are torch's.

How the Trainer uses a loss: it calls `loss(outputs, targets)` with the model's logits and the
batch's targets. Most entries fit that call. Three kinds take other arguments and are registered for
custom training loops (or for wrapping in a module whose `forward(outputs, targets)` unpacks them):

- `margin_ranking(x1, x2, y)`
- `triplet_margin(anchor, positive, negative)`, `triplet_margin_with_distance(anchor, positive, negative)`
- `ctc(log_probs, targets, input_lengths, target_lengths)`

Note `bce` expects probabilities (a model ending in a sigmoid); for logits use `bce_with_logits`.
`nll` expects log-probabilities. `kl_div` defaults to `reduction="batchmean"`, the true KL divergence.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cleanai.registry import Registry
from cleanai.errors import ConfigError, InputError

LossFactory = Callable[..., Callable[..., torch.Tensor]]

LOSSES: Registry[LossFactory] = Registry("loss")
register_loss = LOSSES.register

for _name, _factory in {
    "cross_entropy": nn.CrossEntropyLoss,
    "bce": nn.BCELoss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
    "nll": nn.NLLLoss,
    "poisson_nll": nn.PoissonNLLLoss,
    "kl_div": functools.partial(nn.KLDivLoss, reduction="batchmean"),
    "hinge_embedding": nn.HingeEmbeddingLoss,
    "multi_margin": nn.MultiMarginLoss,
    "multilabel_margin": nn.MultiLabelMarginLoss,
    "soft_margin": nn.SoftMarginLoss,
    "multilabel_soft_margin": nn.MultiLabelSoftMarginLoss,
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "huber": nn.HuberLoss,
    "ctc": nn.CTCLoss,
    "margin_ranking": nn.MarginRankingLoss,
    "triplet_margin": nn.TripletMarginLoss,
    "triplet_margin_with_distance": nn.TripletMarginWithDistanceLoss,
}.items():
    LOSSES.register(_name, _factory)


def list_losses() -> list[str]:
    """Names accepted by `get_loss`."""
    return LOSSES.names()


def get_loss(name: str, **kwargs: Any) -> Callable[..., torch.Tensor]:
    """Build the loss `name` (an `nn.Module` for the built-ins)."""
    return LOSSES.create(name, **kwargs)


LossSpec = str | Callable[..., torch.Tensor]


@register_loss("composite")
class CompositeLoss(nn.Module):
    """Weighted sum of losses that all take `(outputs, targets)`.

    `CompositeLoss({"cross_entropy": 1.0, "multi_margin": 0.5})`, or a list of `(loss, weight)` pairs
    whose loss is a registered name or any callable, e.g. `[(get_loss("cross_entropy",
    label_smoothing=0.1), 1.0), (my_loss, 0.2)]`. In a config: `loss="composite",
    loss_kwargs={"losses": {...}}`.
    """

    def __init__(self, losses: Mapping[str, float] | Sequence[tuple[LossSpec, float]]) -> None:
        super().__init__()
        pairs = list(losses.items() if isinstance(losses, Mapping) else losses)
        if not pairs:
            raise ConfigError("CompositeLoss needs at least one (loss, weight) pair, got none")
        self.names: list[str] = []
        self.weights: list[float] = []
        fns: list[Callable[..., torch.Tensor]] = []
        for spec, weight in pairs:
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ConfigError(f"CompositeLoss weight for {spec!r} must be a finite number, got {weight!r}")
            fn = get_loss(spec) if isinstance(spec, str) else spec
            if not callable(fn):
                raise InputError(f"CompositeLoss entry {spec!r} is neither a registered loss name nor callable")
            self.names.append(spec if isinstance(spec, str) else type(fn).__name__)
            self.weights.append(float(weight))
            fns.append(fn)
        # Modules go into a ModuleList so .to(device) and state_dict see them; plain functions stay as they are.
        self.parts = nn.ModuleList(f for f in fns if isinstance(f, nn.Module))
        self._fns = fns

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = self.weights[0] * self._fns[0](outputs, targets)
        for weight, fn in zip(self.weights[1:], self._fns[1:]):
            total = total + weight * fn(outputs, targets)
        return total

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: {w:g}" for n, w in zip(self.names, self.weights))

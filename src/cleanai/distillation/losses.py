"""Distillation losses: soft-target KD on logits, and hidden-state / attention-map matching for transformer students.

KD (Hinton et al.): `alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))`, the KL summed
over classes and averaged over the batch (PyTorch's `KLDivLoss(reduction="batchmean")`). Both distributions
are taken as log-softmax, so large logits or small temperatures neither overflow nor produce log(0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cleanai.errors import ConfigError

Reduction = Literal["mean", "sum", "none"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.5,
            temperature: float = 2.0, reduction: Reduction = "mean") -> torch.Tensor:
    """Per-sample `alpha*CE + (1-alpha)*T^2*KL(teacher_T || student_T)`, reduced by `reduction`.

    "mean" equals `alpha * cross_entropy + (1 - alpha) * T^2 * KLDivLoss("batchmean")`; "sum" and "none"
    serve callers that normalise themselves (gradient accumulation over a known number of samples). A target of
    -100 (`UNLABELLED`, cross-entropy's ignore_index: a transfer-set example) gets the KD term only.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape; both must be (batch, classes)")
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    per_sample = alpha * F.cross_entropy(student_logits, targets, reduction="none") if alpha else 0.0
    if alpha < 1:
        log_s = F.log_softmax(student_logits / temperature, dim=-1)
        log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
        kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)
        per_sample = per_sample + (1 - alpha) * temperature ** 2 * kl
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (0-based) matched to each student layer, spread evenly and ending at the last layer.

    3 of 6 -> [1, 3, 5]: student layer m (1-based) learns from teacher layer m * teacher/student, as in TinyBERT.
    """
    if not 0 < student_layers <= teacher_layers:
        raise ConfigError(f"a uniform layer map needs 0 < student layers <= teacher layers, got "
                         f"{student_layers} student and {teacher_layers} teacher layers")
    return [(m + 1) * teacher_layers // student_layers - 1 for m in range(student_layers)]


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """MSE over the real (unpadded) positions of (batch, seq, ...) tensors."""
    if mask is None:
        return F.mse_loss(a, b)
    weights = mask.to(a.dtype).reshape(*mask.shape, *([1] * (a.dim() - 2)))
    return ((a - b) ** 2 * weights).sum() / (weights.sum() * a[0, 0].numel()).clamp_min(1)


class IntermediateLoss(nn.Module):
    """Hidden-state MSE (student layer i through a projection vs teacher layer `layer_map[i]`) plus attention MSE.

    Hidden states come as HF returns them (`hidden_states[0]` is the embedding output, so layer i is index
    i + 1). A "learned" projection is a bias-free Linear per student layer (student width -> teacher width),
    trained with the student; "identity" needs equal widths. Attention maps are compared per head when the
    head counts agree, else averaged over heads.
    """

    def __init__(self, student_width: int, teacher_width: int, layer_map: Sequence[int],
                 projection: Literal["learned", "identity"] = "learned", hidden_weight: float = 1.0,
                 attention_weight: float = 0.0) -> None:
        super().__init__()
        if projection == "identity" and student_width != teacher_width:
            raise ConfigError(f"projection='identity' needs equal hidden sizes, got student {student_width} and "
                             f"teacher {teacher_width}; use projection='learned'")
        self.layer_map = list(layer_map)
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        self.projections = nn.ModuleList(
            nn.Linear(student_width, teacher_width, bias=False) if projection == "learned" else nn.Identity()
            for _ in self.layer_map) if hidden_weight else nn.ModuleList()

    def forward(self, student_hidden: Sequence[torch.Tensor] | None, teacher_hidden: Sequence[torch.Tensor] | None,
                student_attn: Sequence[torch.Tensor] | None = None, teacher_attn: Sequence[torch.Tensor] | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        total: torch.Tensor | float = 0.0
        if self.hidden_weight:
            assert student_hidden is not None and teacher_hidden is not None
            terms = [_masked_mse(proj(student_hidden[i + 1]), teacher_hidden[t + 1].detach(), attention_mask)
                     for i, (proj, t) in enumerate(zip(self.projections, self.layer_map))]
            total = self.hidden_weight * torch.stack(terms).mean()
        if self.attention_weight:
            assert student_attn is not None and teacher_attn is not None
            terms = []
            for i, t in enumerate(self.layer_map):
                s_map, t_map = student_attn[i], teacher_attn[t].detach()
                if s_map.shape[1] != t_map.shape[1]:
                    s_map, t_map = s_map.mean(1, keepdim=True), t_map.mean(1, keepdim=True)
                terms.append(F.mse_loss(s_map, t_map))
            total = total + self.attention_weight * torch.stack(terms).mean()
        return torch.as_tensor(total)

"""Neuron-coverage criteria: keep the channels that are active on real data, remove the dead ones first.

Where the activation is measured matters. `position="activation"` (default) scores a channel by
the input of the layers that consume it — for a convolution that is the output of its BatchNorm
and non-linearity, the tensor the next layer really sees — and falls back to the raw output when
a group has no consumer layer. `position="output"` scores the raw Conv/Linear output, which the
source study found barely better than random right after pruning.

Metrics (per channel): `normalized_mean` (mean / the layer's global max), `frequency` (share of
values above `threshold`), `mean_absolute`, `combined` = sqrt(max(normalized_mean, 0) × frequency).
They are defined on the signed values, as the coverage literature does for post-ReLU activations;
where the consumed tensor is signed (a linear bottleneck, attention context), `mean_absolute`
measures activity better.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cleanai._batches import Batch
from cleanai.pruning.activations import ActivationRecorder, ChannelStats
from cleanai.pruning.criteria.base import WEIGHTED, Criterion, handler_kind, normalize
from cleanai.pruning.criteria.weights import MagnitudeCriterion
from cleanai.errors import ConfigError

METRICS = ("normalized_mean", "frequency", "mean_absolute", "combined")
COVERAGE_POSITIONS = ("activation", "output")


def coverage_metric(stats: ChannelStats, metric: str) -> torch.Tensor:
    """The per-channel coverage value of `stats` under `metric` (see the module docstring)."""
    if metric == "normalized_mean":
        return stats.normalized_mean()
    if metric == "frequency":
        return stats.frequency()
    if metric == "mean_absolute":
        return stats.mean_abs()
    return (stats.normalized_mean().clamp(min=0) * stats.frequency()).sqrt()


class CoverageCriterion(Criterion):
    """Coverage measured once on the model before pruning; statistics follow the surgery between steps."""

    requires_data = True

    def __init__(self, metric: str = "normalized_mean", threshold: float = 0.0, position: str = "activation",
                 max_batches: int | None = None, normalizer: str = "mean") -> None:
        super().__init__(normalizer)
        if metric not in METRICS:
            raise ConfigError(f"coverage: metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if position not in COVERAGE_POSITIONS:
            raise ConfigError(f"coverage: position must be one of {', '.join(COVERAGE_POSITIONS)}, got {position!r}")
        self.metric, self.threshold, self.position, self.max_batches = metric, float(threshold), position, max_batches
        self._use_outputs = position == "output"
        self.inputs: dict[nn.Module, ChannelStats] = {}
        self.outputs: dict[nn.Module, ChannelStats] = {}

    def prepare(self, model: nn.Module, batches: Sequence[Batch]) -> None:
        with ActivationRecorder(model, module_types=WEIGHTED, threshold=self.threshold,
                                max_batches=self.max_batches) as rec:
            rec.run(batches)
        modules = dict(model.named_modules())
        self.inputs = {modules[name]: stats for name, stats in rec.inputs.items()}
        self.outputs = {modules[name]: stats for name, stats in rec.outputs.items()}

    def on_pruned(self, group: Any) -> None:
        for item in group:
            layer = item.dep.target.module
            kind = handler_kind(layer, item.dep.handler)
            if kind in ("out", "dw") and layer in self.outputs:
                self.outputs[layer] = self.outputs[layer].drop(item.idxs)
            if kind in ("in", "dw") and layer in self.inputs:
                self.inputs[layer] = self.inputs[layer].drop(item.idxs)

    def _scores_from(self, table: dict[nn.Module, ChannelStats], kinds: tuple[str, ...], layer: nn.Module,
                     kind: str, idxs: Sequence[int]) -> torch.Tensor | None:
        stats = table.get(layer)
        if kind not in kinds or stats is None or max(idxs, default=-1) >= stats.channels:
            return None
        return coverage_metric(stats, self.metric)[torch.as_tensor(list(idxs), dtype=torch.long)]

    def channel_scores(self, layer: nn.Module, kind: str, idxs: Sequence[int]) -> torch.Tensor | None:
        if self._use_outputs:
            return self._scores_from(self.outputs, ("out", "dw"), layer, kind, idxs)
        return self._scores_from(self.inputs, ("in", "dw"), layer, kind, idxs)

    def group_scores(self, group: Any) -> torch.Tensor | None:
        self._use_outputs = self.position == "output"
        scores = super().group_scores(group)
        if scores is None and not self._use_outputs:  # no consumer layer: fall back to the raw output
            self._use_outputs = True
            scores = super().group_scores(group)
        return scores


class AdaptiveCoverageCriterion(CoverageCriterion):
    """Coverage measured again on the current, partly pruned model before every iterative step."""

    refresh_each_step = True


class HybridCriterion(Criterion):
    """Coverage × magnitude, each normalised by its group mean, so a channel must be active *and* weighty."""

    requires_data = True

    def __init__(self, metric: str = "normalized_mean", threshold: float = 0.0, position: str = "activation",
                 p: int = 2, max_batches: int | None = None, normalizer: str = "mean") -> None:
        super().__init__(normalizer)
        self.coverage = CoverageCriterion(metric, threshold, position, max_batches, normalizer="mean")
        self.magnitude = MagnitudeCriterion(p, normalizer="mean")

    def prepare(self, model: nn.Module, batches: Sequence[Batch]) -> None:
        self.coverage.prepare(model, batches)

    def on_pruned(self, group: Any) -> None:
        self.coverage.on_pruned(group)

    def group_scores(self, group: Any) -> torch.Tensor | None:
        cov, mag = self.coverage.group_scores(group), self.magnitude.group_scores(group)
        if cov is None or mag is None:
            return mag if cov is None else cov
        return normalize(cov.clamp(min=0), "mean") * normalize(mag, "mean")

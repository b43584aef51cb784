"""Classification metrics computed over a whole split, not averaged per batch.

A metric accumulates counts with `update(logits, targets)` (on the logits' device, without syncing)
and returns one number from `compute()`. Logits are `(N, C)` scores, or `(N,)`/`(N, 1)` for a binary
model with one logit (class 1 when the logit is > 0); targets are class indices. Macro averages
run over the classes present in the targets or the predictions, and a class with no predicted
(or no true) samples scores 0, as in scikit-learn with `zero_division=0`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cleanai.registry import Registry
from cleanai.errors import ConfigError


def _predictions(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Predicted class per sample and the number of classes."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return (logits.reshape(-1) > 0).long(), 2
    return logits.argmax(dim=1), logits.shape[1]


class Metric:
    """Base class: `reset()`, `update(logits, targets)` per batch, `compute()` once per split.

    `counts` names the attributes that add up over disjoint parts of a split; `reduce` sums them over the
    processes of a data-parallel evaluation, so `compute()` then scores the whole split.
    """

    name: str = "metric"
    counts: tuple[str, ...] = ()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError

    def reduce(self, all_reduce: Callable[..., torch.Tensor]) -> None:
        """Replace each of `counts` by its sum over the processes (`all_reduce(tensor)` returns that sum)."""
        if not self.counts:
            raise ConfigError(f"metric {self.name!r} ({type(self).__name__}) cannot be combined across processes: "
                              "set its `counts` to the names of its additive state attributes, or override reduce()")
        for attr in self.counts:
            setattr(self, attr, all_reduce(torch.as_tensor(getattr(self, attr))))


METRICS: Registry[Callable[..., Metric]] = Registry("metric")
register_metric = METRICS.register


@register_metric("accuracy")
class Accuracy(Metric):
    """Fraction of samples whose highest-scoring class is the target."""

    name = "accuracy"
    counts = ("correct", "total")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct: torch.Tensor | int = 0
        self.total = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        preds, _ = _predictions(logits)
        self.correct = self.correct + (preds == targets.reshape(-1)).sum()
        self.total += preds.numel()

    def compute(self) -> float:
        return float(self.correct) / float(self.total) if self.total else float("nan")


@register_metric("top_k")
class TopKAccuracy(Metric):
    """Fraction of samples whose target is among the `k` highest-scoring classes (named `top_<k>`)."""

    counts = ("correct", "total")

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise ConfigError(f"top_k needs k >= 1, got k={k}")
        self.k = k
        self.name = f"top_{k}"
        self.reset()

    def reset(self) -> None:
        self.correct: torch.Tensor | int = 0
        self.total = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] < self.k:
            raise ConfigError(f"top_k with k={self.k} needs logits of shape (N, C) with C >= {self.k}, "
                             f"got {tuple(logits.shape)}")
        top = logits.topk(self.k, dim=1).indices
        self.correct = self.correct + (top == targets.reshape(-1, 1)).any(dim=1).sum()
        self.total += logits.shape[0]

    def compute(self) -> float:
        return float(self.correct) / float(self.total) if self.total else float("nan")


class _ConfusionMetric(Metric):
    """Accumulates a confusion matrix (rows: target, columns: prediction) and derives macro scores."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        preds, classes = _predictions(logits)
        counts = torch.bincount(targets.reshape(-1).long() * classes + preds, minlength=classes * classes)
        if counts.numel() != classes * classes:
            raise ConfigError(f"{self.name}: targets must be class indices in [0, {classes}), "
                             f"got values up to {int(targets.max())}")
        counts = counts.reshape(classes, classes)
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def reduce(self, all_reduce: Callable[..., torch.Tensor]) -> None:
        """Sum the confusion matrices; a process that saw no batch adds zeros of the others' size."""
        own = 0 if self.confusion is None else self.confusion.shape[0]
        classes = int(all_reduce(torch.tensor(own), "max"))
        if classes:
            self.confusion = all_reduce(self.confusion if self.confusion is not None
                                        else torch.zeros(classes, classes, dtype=torch.int64))

    def _per_class(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """True positives, predicted counts and true counts of the classes seen in targets or predictions."""
        if self.confusion is None:
            raise ConfigError(f"{self.name}: compute() called before any update()")
        cm = self.confusion.double().cpu()
        tp, predicted, actual = cm.diagonal(), cm.sum(dim=0), cm.sum(dim=1)
        seen = (predicted + actual) > 0
        return tp[seen], predicted[seen], actual[seen]

    @staticmethod
    def _mean_ratio(num: torch.Tensor, den: torch.Tensor) -> float:
        return float(torch.where(den > 0, num / den.clamp(min=1), 0.0).mean())


@register_metric("precision")
class MacroPrecision(_ConfusionMetric):
    """Unweighted mean over classes of TP / (TP + FP)."""

    name = "precision"

    def compute(self) -> float:
        tp, predicted, _ = self._per_class()
        return self._mean_ratio(tp, predicted)


@register_metric("recall")
class MacroRecall(_ConfusionMetric):
    """Unweighted mean over classes of TP / (TP + FN)."""

    name = "recall"

    def compute(self) -> float:
        tp, _, actual = self._per_class()
        return self._mean_ratio(tp, actual)


@register_metric("macro_f1")
class MacroF1(_ConfusionMetric):
    """Unweighted mean over classes of 2·TP / (2·TP + FP + FN)."""

    name = "macro_f1"

    def compute(self) -> float:
        tp, predicted, actual = self._per_class()
        return self._mean_ratio(2 * tp, predicted + actual)


class _OutOfScopeMetric(Metric):
    """Accuracy over the samples whose target is (`in_scope=False`) or is not (`in_scope=True`) the out-of-scope
    class `oos_index` (default the last class, as in CLINC150)."""

    in_scope = True
    counts = ("correct", "total")

    def __init__(self, oos_index: int = -1) -> None:
        self.oos_index = oos_index
        self.reset()

    def reset(self) -> None:
        self.correct: torch.Tensor | int = 0
        self.total: torch.Tensor | int = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        preds, targets = _predictions(logits)[0], targets.reshape(-1)
        chosen = (targets != self.oos_index % logits.shape[1]) == self.in_scope
        self.correct = self.correct + (preds[chosen] == targets[chosen]).sum()
        self.total = self.total + chosen.sum()

    def compute(self) -> float:
        return float(self.correct) / float(self.total) if float(self.total) else float("nan")


@register_metric("in_scope_accuracy")
class InScopeAccuracy(_OutOfScopeMetric):
    """Accuracy over the samples whose target is an in-scope class (not `oos_index`)."""

    name = "in_scope_accuracy"


@register_metric("oos_recall")
class OutOfScopeRecall(_OutOfScopeMetric):
    """Fraction of out-of-scope samples (target `oos_index`) predicted out-of-scope."""

    name = "oos_recall"
    in_scope = False


def list_metrics() -> list[str]:
    """Names accepted by `get_metric`."""
    return METRICS.names()


def get_metric(name: str, **kwargs: Any) -> Metric:
    """Build the metric `name` (e.g. `get_metric("top_k", k=3)`)."""
    return METRICS.create(name, **kwargs)

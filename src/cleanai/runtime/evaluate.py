"""Task metrics of a Runner over a data split: the one accuracy code path of the benchmark and of compression.

`evaluate(runner, batches, metrics=("accuracy", "macro_f1"))` runs every batch through the runner,
checks it returns one row of logits per sample, and accumulates each metric over the whole split
(or its first `max_batches`, which the result then says).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from cleanai._batches import batch_len, split_batch
from cleanai.errors import DataError
from cleanai.metrics import get_metric
from cleanai.runtime.runners import BenchmarkError, Runner


@dataclass(frozen=True)
class Evaluation:
    """Metric values over the samples seen; `whole_split` False means only the first `max_batches` were read."""

    metrics: dict[str, float]
    samples: int
    whole_split: bool
    first_inputs: Any  # the inputs of the first batch (the benchmark times its calls on them)


def checked_logits(runner: Runner, inputs: Any, name: str | None = None) -> torch.Tensor:
    """Run `runner` once and check it returned logits of shape (batch, classes)."""
    logits = runner(inputs)
    n = batch_len(inputs)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise BenchmarkError(f"runner {name or runner.name!r} returned {got} for a batch of {n}; "
                             f"expected logits ({n}, classes)")
    return logits


def evaluate(runner: Runner, batches: Iterable[Any], metrics: Sequence[str] = ("accuracy",), *,
             max_batches: int | None = None, progress: bool = False, name: str | None = None) -> Evaluation:
    """Each metric of `metrics` (registry names, see `cleanai.metrics.list_metrics`) over `(inputs, targets)` batches."""
    name = name or runner.name
    meters = [get_metric(m) for m in metrics]
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    n_eval, first, whole = 0, None, True
    bar = tqdm(batches, total=min(filter(None, (total, max_batches)), default=None), desc=f"evaluating {name}",
               disable=None if progress else True, leave=False)  # None: shown only on a terminal
    for i, batch in enumerate(bar):
        if max_batches is not None and i >= max_batches:
            whole = False
            break
        inputs, targets = split_batch(batch, require_targets=True)
        targets = torch.as_tensor(targets).reshape(-1)
        if batch_len(inputs) != len(targets):
            raise DataError(f"batch {i} has {batch_len(inputs)} inputs but {len(targets)} targets")
        first = inputs if first is None else first
        logits = checked_logits(runner, inputs, name).cpu()
        for meter in meters:
            meter.update(logits, targets.cpu())
        n_eval += len(targets)
    bar.close()
    if first is None:
        raise DataError(f"evaluating {name!r}: the data yielded no batches; nothing to measure")
    return Evaluation({m: meter.compute() for m, meter in zip(metrics, meters)}, n_eval, whole, first)

"""Calling a model on CleanAI batches: `(inputs, targets)`, inputs a Tensor, a tuple or a dict of Tensors."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from cleanai.errors import DataError

Batch = Any


def split_batch(batch: Batch) -> tuple[Any, torch.Tensor | None]:
    """Return `(inputs, targets)`; a bare Tensor or dict is an inputs-only batch (targets None)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def to_device(inputs: Any, device: torch.device) -> Any:
    """Move a Tensor, or the Tensors of a tuple/list/dict, to `device`."""
    if isinstance(inputs, torch.Tensor):
        return inputs if inputs.device == device else inputs.to(device, non_blocking=True)
    if isinstance(inputs, Mapping):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call `model` the way CleanAI calls it: `model(**dict)`, `model(*tuple)` or `model(tensor)`."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def logits_of(output: Any) -> torch.Tensor:
    """The logits Tensor of a model output: a Tensor, or an object with `.logits` (an HF ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"the model returned a {type(output).__name__}; expected a Tensor of logits or an "
                    "object with a .logits Tensor")


def take_batches(batches: Iterable[Batch] | None, limit: int, who: str) -> list[Batch]:
    """Materialise at most `limit` batches, so every pruning step scores on the same data.

    Raises a DataError naming `who` when no batch is given: data-driven criteria cannot guess.
    """
    if batches is None:
        raise DataError(f"{who} needs calibration data: pass calib=<iterable of (inputs, targets) batches>, "
                        "for example a DataLoader over a few hundred training samples")
    if isinstance(batches, (torch.Tensor, Mapping)):
        raise DataError(f"{who}: calib must be an iterable of batches, got a single {type(batches).__name__}; "
                        "wrap it in a list: calib=[(inputs, targets)]")
    taken = list(itertools.islice(iter(batches), limit))
    if not taken:
        raise DataError(f"{who} needs calibration data, but calib yielded no batch")
    for i, batch in enumerate(taken):
        bad = non_finite(split_batch(batch)[0])
        if bad:
            raise DataError(f"{who}: calibration batch {i} holds {bad}; scores and ranges measured on it would be "
                            "meaningless, so clean or drop those samples")
    return taken


def non_finite(inputs: Any) -> str | None:
    """`"3 NaN and 1 infinite value(s)"` when the floating-point tensors of `inputs` hold any, else None."""
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs.values()) if isinstance(inputs, Mapping) \
        else list(inputs) if isinstance(inputs, (tuple, list)) else []
    floats = [t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    nan = sum(int(torch.isnan(t).sum()) for t in floats)
    inf = sum(int(torch.isinf(t).sum()) for t in floats)
    counts = [f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n]
    return " and ".join(counts) + " value(s)" if counts else None

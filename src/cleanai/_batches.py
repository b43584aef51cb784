"""Calling a model on CleanAI batches: `(inputs, targets)`, inputs a Tensor, a tuple or a dict of Tensors.

The one convention every step follows (prune, quantize, export, benchmark): a batch is a pair
`(inputs, targets)`, or bare inputs; inputs are a Tensor (`model(x)`), a tuple of Tensors
(`model(*inputs)`, a model with several inputs: `((image, mask), targets)`) or a dict of Tensors
(`model(**inputs)`, text models); axis 0 of every input Tensor is the batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from cleanai.errors import DataError, InputError

Batch = Any


def split_batch(batch: Batch, *, require_targets: bool = False) -> tuple[Any, Any]:
    """Return `(inputs, targets)`; a bare Tensor or dict is an inputs-only batch (targets None), or a
    DataError when `require_targets` (evaluating and training need the labels)."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if require_targets:
        raise DataError(f"a batch must be an (inputs, targets) pair, got a {type(batch).__name__}"
                        + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else ""))
    return batch, None


def is_tensor_tuple(inputs: Any) -> bool:
    """True for the inputs of a model with several positional inputs: a non-empty tuple or list of Tensors."""
    return isinstance(inputs, (tuple, list)) and bool(inputs) and all(isinstance(v, torch.Tensor) for v in inputs)


def batch_len(x: Any) -> int:
    """Samples in a batch of inputs or targets: a Tensor's first axis, that of a dict's or a tuple's first Tensor
    (a model with several inputs), a list's length (texts)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() else 1
    if isinstance(x, Mapping) and x:
        return batch_len(next(iter(x.values())))
    if is_tensor_tuple(x):
        return batch_len(x[0])
    if isinstance(x, (list, tuple)):
        return len(x)
    raise DataError(f"batch inputs of type {type(x).__name__} are not supported; expected a Tensor, a tuple or "
                    "dict of Tensors (batch on axis 0), or a list of strings")


def map_inputs(inputs: Any, fn: Any) -> Any:
    """Apply `fn` to every Tensor of a Tensor, tuple/list or dict of inputs, keeping the structure."""
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: map_inputs(v, fn) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(map_inputs(v, fn) for v in inputs)
    return inputs


def dynamic_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    """Axes of an input that vary between batches: the batch (axis 0), and the sequence (axis 1) of integer token
    inputs of rank 2 (input_ids, attention_mask); an image's or a feature vector's other axes are fixed."""
    if tensor.dim() == 0:
        return ()
    token_ids = tensor.dim() == 2 and not tensor.is_floating_point() and not tensor.is_complex()
    return (0, 1) if token_ids else (0,)


def to_device(inputs: Any, device: torch.device) -> Any:
    """Move a Tensor, or the Tensors of a tuple/list/dict, to `device`."""
    return map_inputs(inputs, lambda t: t if t.device == device else t.to(device, non_blocking=True))


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
    raise InputError(f"the model returned a {type(output).__name__}; expected a Tensor of logits or an "
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
    return taken

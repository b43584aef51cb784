"""What both backends need: calibration inputs taken from batches, example inputs, and the quantizable-layer check."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from cleanai._batches import is_tensor_tuple, split_batch, take_batches
from cleanai.quantization.config import QuantConfig, QuantizationError

Inputs = torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]
# Layers int8 quantization rewrites, by backend and mode; a model with none of them has nothing to quantize.
QUANTIZABLE_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd, nn.LSTM, nn.GRU, nn.Embedding)


def calibration_inputs(calib: Iterable[Any] | None, limit: int | None, who: str) -> list[Inputs]:
    """The inputs of at most `limit` batches of `calib` (all when None), checked to be Tensors, tuples or dicts of
    Tensors."""
    batches = take_batches(calib, limit if limit is not None else 2**62, who)
    inputs = [split_batch(b)[0] for b in batches]
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) and x.dim() >= 1 or is_tensor_tuple(x):
            continue
        if isinstance(x, Mapping) and x and all(isinstance(v, torch.Tensor) for v in x.values()):
            continue
        hint = (" (raw text: build the loader with cleanai.data.text_collate(tokenizer) to get token tensors)"
                if isinstance(x, (list, tuple)) and x and isinstance(x[0], str) else "")
        raise QuantizationError(f"{who}: batch {i} of calib holds inputs of type {type(x).__name__}; expected a "
                                f"Tensor, a tuple of Tensors or a dict of Tensors{hint}")
    return inputs


def example_from(model: nn.Module, calib_inputs: list[Inputs], example_inputs: Inputs | None, who: str) -> Inputs:
    """Example inputs for export or tracing: the given ones, else the first calibration batch, else a random
    batch shaped like the model's `input_size`."""
    if example_inputs is not None:
        return example_inputs
    if calib_inputs:
        return calib_inputs[0]
    size = getattr(model, "input_size", None)
    if size is not None:
        return torch.randn(2, *size)
    raise QuantizationError(f"{who}: pass example_inputs (a batch of model inputs) or calib; "
                            f"{type(model).__name__} has no input_size attribute to build one from")


def check_quantizable(model: nn.Module, config: QuantConfig) -> None:
    """Refuse a model with no layer an int8 mode could quantize, naming what the model holds instead."""
    if config.mode in ("fp16", "bf16"):
        if not any(p.is_floating_point() for p in itertools.chain(model.parameters(), model.buffers())):
            raise QuantizationError(f"{type(model).__name__} has no floating-point weights for "
                                    f"mode={config.mode!r} to cast")
        return
    if any(isinstance(m, QUANTIZABLE_LAYERS) for m in model.modules()):
        return
    found = sorted({type(m).__name__ for m in model.modules() if m is not model}) or ["no submodules"]
    kinds = ", ".join(t.__name__.lstrip("_") for t in QUANTIZABLE_LAYERS)
    raise QuantizationError(f"{type(model).__name__} has no quantizable layers: {config.describe()} quantizes "
                            f"{kinds} layers, and the model holds only {', '.join(found)}")

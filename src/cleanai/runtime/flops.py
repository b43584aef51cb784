"""Multiply-accumulate counts with ultralytics-thop, the one counter that also sees attention under SDPA."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cleanai._batches import is_tensor_tuple


class _KeywordCall(nn.Module):
    """Lets thop (which calls `model(*inputs)`) drive a model that takes keyword tensors."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *values: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, values)))


def count_macs(model: nn.Module, example_inputs: torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]
               ) -> int | None:
    """MACs of one forward pass on `example_inputs` (the whole batch, not per sample).

    Counted on a deep copy, so no hook, buffer or mode change can leak into `model`. Linear and
    convolution layers count `in_features * out_features` per output position (bias not counted);
    attention counts its Q·K and A·V products; an affine norm layer adds thop's 4 ops per element.
    None when thop recognises no operation at all (e.g. `torch.ao` quantized modules): not a real zero.
    """
    from thop import profile  # imported lazily: thop is only needed when MACs are asked for

    clone = copy.deepcopy(model)
    if isinstance(example_inputs, Mapping):
        names = tuple(example_inputs)
        clone, args = _KeywordCall(clone, names), tuple(example_inputs[n] for n in names)
    else:
        args = tuple(example_inputs) if is_tensor_tuple(example_inputs) else (example_inputs,)
    macs, _ = profile(clone, inputs=args, verbose=False)
    return int(macs) or None

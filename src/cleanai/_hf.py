"""Hugging Face model helpers shared by every layer, without importing transformers (a 6 s import).

`transformers.pytorch_utils.Conv1D` (GPT-2's linear layers: `y = x @ weight + bias`, the weight
stored transposed as `(in, out)`) is recognised by class name.

`isinstance(module, HFConv1D)` is True for that class and its subclasses, so pruning, MAC counting and
quantization can treat it as the Linear it is; `conv1d_types(model)` gives the real classes a model holds;
`conv1d_to_linear(model)` swaps each for the equivalent `nn.Linear` (for quantizers that only know Linear).
`no_kv_cache(model)` traces decoders without their key/value cache (pruning's graph, torch.export).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _is_conv1d_class(cls: type) -> bool:
    return any(c.__name__ == "Conv1D" and c.__module__ == "transformers.pytorch_utils" for c in cls.__mro__)


class HFConv1D(abc.ABC):
    """Virtual base class of transformers' `Conv1D` (for isinstance checks; never instantiated)."""

    @classmethod
    def __subclasshook__(cls, subclass: type) -> bool:
        return _is_conv1d_class(subclass)


def conv1d_types(model: nn.Module) -> set[type[nn.Module]]:
    """The transformers `Conv1D` classes (and subclasses) used in `model`."""
    return {type(m) for m in model.modules() if isinstance(m, HFConv1D)}


def conv1d_to_linear(model: nn.Module) -> list[str]:
    """Replace every transformers `Conv1D` in `model` (in place) by the `nn.Linear` computing the same function
    (weight transposed, same device and dtype); return the names replaced."""
    replaced = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, HFConv1D):
            continue
        weight = module.weight.detach()
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=module.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
            if module.bias is not None:
                linear.bias.copy_(module.bias.detach())
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, linear)
        replaced.append(name)
    return replaced


@contextlib.contextmanager
def no_kv_cache(model: nn.Module) -> Iterator[None]:
    """Run an HF decoder without its key/value cache: the cache is neither a channel dimension to prune nor an
    output torch.export can capture (GPT-2 returns a DynamicCache)."""
    configs = {id(c): c for m in model.modules() if getattr(c := getattr(m, "config", None), "use_cache", None)}
    for c in configs.values():
        c.use_cache = False
    try:
        yield
    finally:
        for c in configs.values():
            c.use_cache = True

"""Hugging Face `transformers.pytorch_utils.Conv1D` (GPT-2's linear layers: `y = x @ weight + bias`, the weight
stored transposed as `(in, out)`), recognised without importing transformers (a 6 s import).

`isinstance(module, HFConv1D)` is True for that class and its subclasses, so pruning, MAC counting and
quantization can treat it as the Linear it is; `conv1d_types(model)` gives the real classes a model holds.
"""

from __future__ import annotations

import abc

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

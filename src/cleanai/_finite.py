"""Non-finite detection: which weights, buffers or data tensors hold NaN or inf, named for the message.

One function serves training (each epoch), pruning, benchmarking and quantization's calibration
check, so each of them names the same tensors the same way.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cleanai.errors import CleanAIError

Tensors = nn.Module | Mapping[str, Any] | Sequence[Any]
_SHOWN = 3  # tensors named in a message


class NonFiniteWarning(UserWarning):
    """Weights that hold NaN or inf are being measured or used: the numbers that come out mean little."""


def _named(source: Tensors) -> Iterable[tuple[str, Any]]:
    if isinstance(source, nn.Module):
        return itertools.chain(source.named_parameters(), source.named_buffers())
    if isinstance(source, Mapping):
        return source.items()
    return ((f"batch {i}{f' {key}' if isinstance(batch, Mapping) else ''}", t) for i, batch in enumerate(source)
            for key, t in (batch.items() if isinstance(batch, Mapping) else [("", batch)]))


def nonfinite_tensors(source: Tensors, limit: int = _SHOWN) -> list[str]:
    """Up to `limit` of `source`'s floating-point tensors that hold NaN or inf, each described as
    `"name (k of n values nan/inf)"`; empty when all are finite.

    `source` is a module (its parameters and buffers), a mapping of names to Tensors or NumPy arrays,
    or a sequence of batch inputs (each a Tensor or a dict of Tensors, named "batch 3 input_ids").
    """
    found: list[str] = []
    for name, t in _named(source):
        if isinstance(t, np.ndarray) and t.dtype.kind == "f":
            lib: Any = np
        elif isinstance(t, torch.Tensor) and t.is_floating_point() and not t.is_quantized:
            lib = torch
        else:
            continue
        finite = lib.isfinite(t)
        if bool(finite.all()):
            continue
        kinds = "/".join(k for k, present in (("nan", lib.isnan(t).any()), ("inf", lib.isinf(t).any())) if present)
        found.append(f"{name} ({int((~finite).sum())} of {math.prod(t.shape)} values {kinds})")
        if len(found) == limit:
            break
    return found


def check_finite(source: Tensors, what: str, error: type[CleanAIError] | None = None, hint: str = "") -> None:
    """Raise `error` (or, without one, warn with `NonFiniteWarning`) naming the first non-finite tensors of `source`.

    `what` names the thing checked in the message ("the weights of resnet20", "the calibration batches").
    """
    bad = nonfinite_tensors(source)
    if not bad:
        return
    message = f"{what} hold NaN or inf: {', '.join(bad)}{' and maybe more' if len(bad) == _SHOWN else ''}"
    message += f"; {hint}" if hint else ""
    if error is not None:
        raise error(message)
    warnings.warn(message, NonFiniteWarning, stacklevel=3)

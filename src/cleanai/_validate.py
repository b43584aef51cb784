"""Checks every entry point shares: is this a model, does it run on this input, does it fit this data.

`check_model_input(model, example, where="prune")` is the one line each public function that
takes a model and an example input calls first, so a `None`, an image of the wrong channel count
or a text model given images fails at once with an `InputError` naming both sides, instead of
deep inside tracing, calibration or export.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from cleanai._batches import call_model, model_device, to_device
from cleanai._finite import check_finite
from cleanai.errors import CleanAIError, InputError


def describe(inputs: Any) -> str:
    """A short description of an input: `tensor of shape (1, 1, 8, 8)`, `dict input_ids (1, 12), ...`."""
    if isinstance(inputs, torch.Tensor):
        return f"a tensor of shape {tuple(inputs.shape)}"
    if isinstance(inputs, Mapping):
        return "a dict " + ", ".join(f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
                                     for k, v in inputs.items())
    if isinstance(inputs, (tuple, list)):
        return f"a {type(inputs).__name__} of " + ", ".join(describe(v) for v in inputs)
    return f"a {type(inputs).__name__}"


def takes_text(model: nn.Module) -> bool:
    """Whether `model` takes token ids (a text classifier) rather than image tensors."""
    forward = getattr(model, "forward", None)
    return forward is not None and "input_ids" in inspect.signature(forward).parameters


def check_model(model: Any, where: str) -> nn.Module:
    """Refuse anything but a torch module, naming the function (`where`) that needed it."""
    if not isinstance(model, nn.Module):
        raise InputError(f"{where} needs a torch.nn.Module, got {'None' if model is None else type(model).__name__}")
    return model


def check_modality(model: nn.Module, inputs_are_text: bool, *, where: str, source: str = "the example input",
                   name: str | None = None) -> None:
    """Refuse a text model given images, or an image model given text, naming the mismatch."""
    model_text = takes_text(model)
    if model_text != inputs_are_text:
        wants, has = ("token ids (text)", "images") if model_text else ("images", "text")
        raise InputError(f"{_who(where, model, name)} takes {wants} but {source} holds {has}; "
                         f"pair a {'text' if inputs_are_text else 'vision'} model with this data")


def check_model_input(model: Any, example: Any, *, where: str, source: str = "the example input",
                      name: str | None = None, example_optional: bool = False) -> nn.Module:
    """Check that `model` is a module that runs on `example` (one forward pass, no gradients, eval mode).

    Names the model, the input's shape and, for a model that declares `input_size`, the channels it
    wants; returns the model. `where` names the caller (`"prune"`), `source` the input's origin,
    `name` the model (default: its class); with `example_optional`, a `None` example skips the input checks.
    """
    check_model(model, where)
    if example is None and example_optional:
        return model
    if example is None:
        raise InputError(f"{where} needs example inputs (one batch shaped as the model takes it), got None")
    if not isinstance(example, (torch.Tensor, Mapping, tuple, list)):
        raise InputError(f"{where}: example inputs must be a Tensor, a tuple of Tensors or a dict of Tensors, "
                         f"got {type(example).__name__}")
    if isinstance(example, torch.Tensor) or (isinstance(example, Mapping) and "input_ids" in example):
        check_modality(model, isinstance(example, Mapping), where=where, source=source, name=name)
    check_finite(list(example) if isinstance(example, (tuple, list)) else [example], f"{where}: {source}",
                 InputError, f"{describe(example)}; give finite inputs")
    size = getattr(model, "input_size", None)
    if isinstance(example, torch.Tensor) and isinstance(size, tuple) and len(size) == 3:
        if example.dim() != 4:
            raise InputError(f"{_who(where, model, name)} takes a batch of images (N, {', '.join(map(str, size))}) but "
                             f"{source} is {describe(example)}; add the batch axis, e.g. x.unsqueeze(0)")
        if example.shape[1] != size[0]:
            raise InputError(f"{_who(where, model, name)} takes {size[0]}-channel images (input size "
                             f"{tuple(size)}) but {source} has {example.shape[1]}-channel images "
                             f"({describe(example)}); choose a model built for {example.shape[1]} channel(s)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, to_device(example, model_device(model)))
    except Exception as exc:  # any failure of the forward pass means the input does not fit the model
        raise InputError(f"{_who(where, model, name)} does not run on {source} ({describe(example)}): "
                         f"{_first_line(exc)}") from exc
    finally:
        model.train(was_training)
    return model


def _who(where: str, model: nn.Module, name: str | None) -> str:
    """`prune: the model (CifarResNet)`, or `model 'resnet20'` when the caller names it."""
    return name or f"{where}: the model ({type(model).__name__})"


def probe_runner(make: Callable[[], Any], example: Any, *, what: str, source: str,
                 num_classes: int | None = None) -> Any:
    """Build a runner with `make()` and call it once on `example`; refuse, naming `what`, a file that does not
    load, a graph that does not take `source`'s inputs, or one whose logits are not (batch, `num_classes`)."""
    try:
        runner = make()
    except CleanAIError:
        raise
    except Exception as exc:  # engines raise their own types (onnxruntime's InvalidProtobuf, Fail, ...)
        raise InputError(f"{what} cannot be loaded: {_first_line(exc)}") from exc
    try:
        logits = runner(example)
    except Exception as exc:
        raise InputError(f"{what} does not run on {source} ({describe(example)}): {_first_line(exc)}") from exc
    rows = len(next(iter(example.values()))) if isinstance(example, Mapping) else len(example)
    expected = (rows, num_classes if num_classes is not None else "classes")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != rows or (
            num_classes is not None and logits.shape[1] != num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"{what} returns {got} on {source}, expected logits {expected}: it was built for other data")
    return runner


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

"""Why an ONNX export failed: the unsupported operator, the module that calls it, or the failing source line.

The exporters' own messages bury this under pages of trace; `diagnose` digs it out, running the model
once under torch function and dispatch modes to find which module first calls the operator.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_OPERATOR_PATTERNS = (
    re.compile(r"the operator '([\w:.]+)'"),  # torchscript: Exporting the operator 'aten::x' to ONNX opset ...
    re.compile(r"OpOverload\(op='([\w.]+)'"),  # dynamo: No ONNX function found for <OpOverload(op='aten.x', ...)>
    re.compile(r"Python operator (\w+)"),  # torchscript: Couldn't export Python operator MyFunction
)


def diagnose(exc: BaseException, model: nn.Module, args: Any, kwargs: Any,
             opset: int | None) -> tuple[str, str | None, str | None]:
    """Why an exporter failed: (what, operator, module), naming the unsupported operator and the module that
    calls it, or else the failing source line."""
    text = str(exc)
    operator = next((m.group(1) for p in _OPERATOR_PATTERNS if (m := p.search(text))), None)
    module = _module_calling(model, args, kwargs, operator) if operator else None
    stated = re.search(r"opset version (\d+)", text)
    at_opset = f"opset {opset or stated.group(1)}" if opset or stated else "the default opset"
    if operator:
        where = f", called in module {module}," if module else ""
        what = f"operator {operator}{where} has no ONNX conversion at {at_opset}"
    else:
        what = _summary(text) or type(exc).__name__
    return what, operator, module


def _summary(text: str) -> str:
    """The informative line of an exporter message (dynamo buries it under '## Exception summary')."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        lines = lines[lines.index("## Exception summary") + 1:]
    summary = re.sub(r"^<class '[\w.]*?(\w+)'>: ", r"\1: ", lines[0]) if lines else ""
    call = re.search(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in \w+\s*\n\s*(.+)', text)
    return summary + (f" (at {call.group(1)}:{call.group(2)}: {call.group(3).strip()})" if call else "")


def _op_key(name: str) -> str:
    """'aten::_linalg_eigh', 'aten._linalg_eigh.default', 'linalg_eigh' -> 'linalg_eigh'."""
    name = name.split("::")[-1]
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "aten":
        parts = parts[1:]
    return parts[0].lstrip("_")


def _module_calling(model: nn.Module, args: Any, kwargs: Any, operator: str) -> str | None:
    """Run the model once, watching torch functions and aten ops, and name the module that first calls `operator`."""
    key = _op_key(operator)
    names = {id(m): name for name, m in model.named_modules()}
    stack: list[nn.Module] = []
    found: list[str] = []

    def seen(op_name: str) -> None:
        if not found and _op_key(op_name) == key:
            inner = next((m for m in reversed(stack) if id(m) in names), model)
            found.append(f"{names[id(inner)] or '<root>'!r} ({type(inner).__name__})")

    # no_grad, not inference_mode: only then do composite ops reach the dispatch mode decomposed, as dynamo sees them
    with contextlib.suppress(Exception), torch.no_grad(), _module_stack(stack), _Watch(seen), _WatchDispatch(seen):
        model(*args, **kwargs)
    return found[0] if found else None


@contextlib.contextmanager
def _module_stack(stack: list[nn.Module]) -> Iterator[None]:
    from torch.nn.modules.module import (
        register_module_forward_hook,
        register_module_forward_pre_hook,
    )

    def push(module: nn.Module, _inputs: Any) -> None:
        stack.append(module)

    def pop(module: nn.Module, _inputs: Any, _output: Any) -> None:
        if stack and stack[-1] is module:
            stack.pop()

    handles = [register_module_forward_pre_hook(push), register_module_forward_hook(pop)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Watch(TorchFunctionMode):
    """Reports every torch-level function called (`torch.linalg.eigvalsh` -> 'linalg_eigvalsh')."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__()
        self.report = report

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.report(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


class _WatchDispatch(TorchDispatchMode):
    """Reports every aten operator dispatched, after decomposition (`aten::_linalg_eigh`)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__()
        self.report = report

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.report(func._schema.name)
        return func(*args, **(kwargs or {}))

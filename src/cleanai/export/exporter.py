"""`export_onnx`: torch module -> one ONNX file, checked against torch in ONNX Runtime before it is kept.

Two exporters ship with torch 2.13. The TorchScript tracer (`exporter="torchscript"`, torch's
`dynamo=False`) takes about half a second for a small BERT; the torch.export-based "dynamo" exporter,
torch's own default, takes 8-17 s on this machine but knows newer operators (RMSNorm, torch.cond).
CleanAI defaults to the tracer, silences the DeprecationWarning torch attaches to that choice, and
falls back to the other exporter, with a warning that says why, when the first one fails.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cleanai._batches import dynamic_dims
from cleanai._validate import check_model, check_model_input
from cleanai.errors import CleanAIError, InputError
from cleanai.export.diagnosis import diagnose
from cleanai.export.session import create_session
from cleanai.io import staging_dir

EXPORTERS = ("torchscript", "dynamo")
# Protobuf cannot hold one message above 2 GiB, so bigger models keep their weights in a side file.
EXTERNAL_DATA_BYTES = 2 * 1024**3

ExampleInputs = torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]


class ExportError(CleanAIError, RuntimeError):
    """A model could not be exported to ONNX, or the exported graph disagrees with torch.

    `operator` and `module` name the unsupported operator and the module that called it, when known.
    """

    def __init__(self, message: str, *, operator: str | None = None, module: str | None = None) -> None:
        super().__init__(message)
        self.operator = operator
        self.module = module


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote and how well it matches torch (`max_abs_diff` is None when not checked)."""

    path: Path
    input_names: list[str]
    output_names: list[str]
    max_abs_diff: float | None
    seconds: float
    exporter: str
    opset: int
    data_path: Path | None = None  # the external weights file, when there is one


def export_onnx(
    model: nn.Module,
    example_inputs: ExampleInputs,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    dynamic_sequence: bool | None = None,
    opset: int | None = None,
    check_parity: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-5,
    external_data: bool | None = None,
    exporter: str = "torchscript",
    fallback: bool = True,
) -> ExportResult:
    """Export `model` to `path`, run the file in ONNX Runtime and compare it with torch; keep it only if they agree.

    `example_inputs` is a Tensor (graph input "input"), a tuple of Tensors (named after `forward`'s
    parameters) or a dict of Tensors passed as keywords (text models: input_ids, attention_mask, ...;
    named by their keys, ordered like `forward`'s parameters). Axis 0 of every input and output is
    dynamic ("batch") with `dynamic_batch`; axis 1 is dynamic ("sequence") for the integer token inputs
    of rank 2 (input_ids, attention_mask) when `dynamic_sequence` is None (derived from the example),
    for every input of two or more dimensions when True, for none when False. The parity check runs the example inputs and, to prove the
    dynamic axes work, the same inputs grown by one row (and one position); when the largest absolute
    difference exceeds `atol + rtol * max|torch output|` (float rounding grows with the outputs'
    magnitude, as in `numpy.allclose`), or the exporter fails, the other exporter is tried (unless
    `fallback=False`, with a warning saying why) and then `ExportError` is raised. `external_data=None` keeps the weights in a
    `<path>.data` side file only when they exceed 2 GiB.
    """
    check_model(model, "export_onnx")
    if exporter not in EXPORTERS:
        raise InputError(f"exporter={exporter!r} is not a torch ONNX exporter; allowed: {', '.join(EXPORTERS)}")
    if not atol >= 0:
        raise InputError(f"atol={atol!r} must be a non-negative number (the largest tolerated absolute difference)")
    if not rtol >= 0:
        raise InputError(f"rtol={rtol!r} must be a non-negative number (the tolerated difference per unit of the "
                         "largest output magnitude)")
    target = Path(path)
    args, kwargs, input_names = _arrange_inputs(model, example_inputs)
    check_model_input(model, example_inputs, where="export_onnx")
    if external_data is None:
        weight_bytes = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
        external_data = weight_bytes > EXTERNAL_DATA_BYTES

    start = time.perf_counter()
    was_training = model.training
    model.eval()
    with staging_dir(target) as stage:
        try:
            out = _call(model, args, kwargs)
            reference = _flat_outputs(out, type(model).__name__)
            if _has_logits(out):
                model = _Logits(model)  # an HF ModelOutput: the graph returns its logits
            output_names = ["logits"] if len(reference) == 1 else [f"output_{i}" for i in range(len(reference))]
            axes = _dynamic_axes(args, kwargs, input_names, reference, output_names, dynamic_batch, dynamic_sequence)
            probes = None
            if check_parity:
                probes = [(args, kwargs, reference, "the example inputs"), *_grown_probes(model, args, kwargs,
                                                                                          input_names, axes)]
            staged = stage / target.name
            used, data_name, max_diff = _export_checked(model, args, kwargs, staged, input_names, output_names, axes,
                                                        opset, external_data, exporter, fallback, probes, (atol, rtol))
            graph_inputs, opset_used = _graph_info(staged)
            if data_name is not None:
                os.replace(stage / data_name, target.parent / data_name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target.parent / f"{target.name}.data")  # left by an earlier export to the same path
            os.replace(staged, target)
        finally:
            model.train(was_training)
    return ExportResult(
        path=target, input_names=graph_inputs, output_names=output_names, max_abs_diff=max_diff,
        seconds=time.perf_counter() - start, exporter=used, opset=opset_used,
        data_path=target.parent / data_name if data_name is not None else None,
    )


# --- inputs and outputs --------------------------------------------------------------------------------


def _arrange_inputs(model: nn.Module, example: Any) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], list[str]]:
    """(args, kwargs, graph input names) for the example inputs; dict keys are ordered like `forward`'s parameters."""
    params = inspect.signature(model.forward).parameters
    if isinstance(example, torch.Tensor):
        return (example,), {}, ["input"]
    if isinstance(example, Mapping):
        _check_tensors(example.values(), "example_inputs values")
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in example if k not in params]
        if unknown and not takes_any:
            raise InputError(f"example_inputs keys {unknown} are not parameters of {type(model).__name__}.forward; "
                             f"it takes: {', '.join(params)}")
        order = [k for k in params if k in example] + unknown
        return (), {k: example[k] for k in order}, order
    if isinstance(example, (tuple, list)) and example:
        _check_tensors(example, "example_inputs")
        positional = [n for n, p in params.items()
                      if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        names = positional[: len(example)] if len(positional) >= len(example) else []
        return tuple(example), {}, names or [f"input_{i}" for i in range(len(example))]
    raise InputError(f"example_inputs must be a Tensor, a non-empty tuple of Tensors or a dict of Tensors, "
                    f"got {type(example).__name__}")


def _check_tensors(values: Any, what: str) -> None:
    bad = [type(v).__name__ for v in values if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{what} must all be Tensors; got {', '.join(bad)}")


def _call(model: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor]) -> Any:
    with torch.inference_mode():
        return model(*args, **kwargs)


def _has_logits(out: Any) -> bool:
    """True for a model output object that carries a `.logits` Tensor (a Hugging Face ModelOutput)."""
    return not isinstance(out, (torch.Tensor, tuple, list)) and isinstance(getattr(out, "logits", None), torch.Tensor)


class _Logits(nn.Module):
    """A model whose output carries `.logits` (any Hugging Face `...For...Classification`), returning the logits.

    `forward` presents the wrapped model's signature, which both exporters read to place the inputs.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        signature = inspect.signature(model.forward)

        def forward(*args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
            return self.model(*args, **kwargs).logits

        forward.__signature__ = signature  # type: ignore[attr-defined]
        self.forward = forward  # type: ignore[method-assign]


def _flat_outputs(out: Any, model_name: str) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if _has_logits(out):
        return [out.logits]
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise ExportError(f"{model_name} returns a {type(out).__name__}; ONNX export needs a Tensor, a tuple of Tensors "
                      "or an object with a .logits Tensor: export a module whose forward returns those")


def _dynamic_axes(args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor], input_names: list[str],
                  outputs: list[torch.Tensor], output_names: list[str], batch: bool,
                  sequence: bool | None) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name, tensor in zip(input_names, [*args, *kwargs.values()]):
        dims = {0: "batch"} if batch and tensor.dim() >= 1 else {}
        if (1 in dynamic_dims(tensor) if sequence is None else sequence and tensor.dim() >= 2):
            dims[1] = "sequence"
        if dims:
            axes[name] = dims
    for name, tensor in zip(output_names, outputs):
        if batch and tensor.dim() >= 1:
            axes[name] = {0: "batch"}
    return axes


def _grown_probes(model: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor],
                  input_names: list[str], axes: dict[str, dict[int, str]]) -> list[tuple[Any, Any, list[torch.Tensor], str]]:
    """The example inputs with the first row repeated (dynamic batch) and the last position repeated (sequence)."""

    def grow(name: str, t: torch.Tensor) -> torch.Tensor:
        dims = axes.get(name, {})
        if 0 in dims:
            t = torch.cat([t, t[:1]])
        if 1 in dims:
            t = torch.cat([t, t[:, -1:]], dim=1)
        return t

    if not any(n in axes for n in input_names):
        return []
    grown_args = tuple(grow(n, t) for n, t in zip(input_names, args))
    grown_kwargs = {k: grow(k, t) for k, t in kwargs.items()}
    shapes = ", ".join(str(tuple(t.shape)) for t in [*grown_args, *grown_kwargs.values()])
    try:
        outputs = _flat_outputs(_call(model, grown_args, grown_kwargs), type(model).__name__)
    except Exception:  # noqa: BLE001 - torch itself cannot run them (say, past the longest sequence): nothing to compare
        return []
    return [(grown_args, grown_kwargs, outputs, f"inputs grown along the dynamic axes to {shapes}")]


# --- exporting -----------------------------------------------------------------------------------------


def _export_checked(model: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor], file: Path,
                    input_names: list[str], output_names: list[str], axes: dict[str, dict[int, str]],
                    opset: int | None, external_data: bool, exporter: str, fallback: bool,
                    probes: list[tuple[Any, Any, list[torch.Tensor], str]] | None,
                    tolerance: tuple[float, float]) -> tuple[str, str | None, float | None]:
    """Export and check parity with `exporter`, then (if allowed) with the other one when that fails.

    Returns the exporter that worked, the side file's name (or None) and the largest difference (None if
    not checked). A tracer that silently bakes a Python value into the graph fails the parity check, and
    then the dynamo exporter, which keeps such values symbolic or refuses them, gets its turn.
    """
    order = [exporter] + ([e for e in EXPORTERS if e != exporter] if fallback else [])
    failures: list[ExportError] = []
    for name in order:
        for leftover in file.parent.iterdir():
            leftover.unlink()  # the previous attempt's files
        try:
            _run_exporter(name, model, args, kwargs, file, input_names, output_names, axes, opset, external_data)
        except Exception as exc:  # noqa: BLE001 - exporters raise many types (UserError, OnnxExporterError, ...)
            what, operator, module = diagnose(exc, model, args, kwargs, opset)
            failures.append(ExportError(f"the {name} exporter cannot export {type(model).__name__}: {what}",
                                        operator=operator, module=module))
        else:
            data_name = _finalize(file, clear_value_info=name == "dynamo", external_data=external_data)
            try:
                diff = _check_parity(file, probes, input_names, output_names, tolerance, name) if probes else None
                return name, data_name, diff
            except ExportError as exc:
                failures.append(exc)
        if name != order[-1]:
            warnings.warn(f"{failures[-1]}; falling back to the {order[order.index(name) + 1]} exporter", stacklevel=3)
    if len(failures) == 1:
        raise failures[0]
    raise ExportError("; and ".join(str(f) for f in failures), operator=failures[0].operator or failures[1].operator,
                      module=failures[0].module or failures[1].module)


def _run_exporter(name: str, model: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, torch.Tensor],
                  file: Path, input_names: list[str], output_names: list[str], axes: dict[str, dict[int, str]],
                  opset: int | None, external_data: bool) -> None:
    dynamo = name == "dynamo"
    shapes: Any = None
    if dynamo and axes:  # dynamo takes per-parameter axes; a string names the axis in the graph
        per_input = [axes.get(n) for n in input_names]
        shapes = dict(zip(input_names, per_input)) if kwargs else tuple(per_input)
    with warnings.catch_warnings():
        # Chosen on purpose (see the module docstring): torch's notice about the TorchScript exporter is not news,
        # nor that two inputs share one named axis (input_ids and attention_mask share "batch").
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\._internal\.torchscript")
        warnings.filterwarnings("ignore", message=".*The axis name: .* will not be used")
        torch.onnx.export(model, args, str(file), kwargs=kwargs or None, input_names=input_names,
                          output_names=output_names, opset_version=opset, dynamo=dynamo, external_data=external_data,
                          dynamic_axes=None if dynamo else axes or None, dynamic_shapes=shapes, verbose=False)


# --- after export --------------------------------------------------------------------------------------


def _finalize(file: Path, *, clear_value_info: bool, external_data: bool) -> str | None:
    """Rewrite the file if needed: weights in one `<name>.data` side file or inline; drop dynamo's value_info.

    Dynamo's `value_info` shape annotations disagree with ONNX shape inference on some graphs (BERT),
    which makes `onnxruntime.quantization` fail; ONNX Runtime infers shapes itself, so nothing is lost.
    Returns the side file's name, or None when the weights are inline.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    data_name = f"{file.name}.data"
    header = onnx.load(str(file), load_external_data=False)
    if not (clear_value_info or external_data or any(uses_external_data(t) for t in header.graph.initializer)):
        return None
    model = onnx.load(str(file))
    if clear_value_info:
        del model.graph.value_info[:]
    for extra in file.parent.iterdir():
        if extra != file:
            extra.unlink()  # the exporter's own weight files; rewritten below when kept
    onnx.save_model(model, str(file), save_as_external_data=external_data, all_tensors_to_one_file=True,
                    location=data_name)
    return data_name if external_data else None


def _graph_info(file: Path) -> tuple[list[str], int]:
    """The graph's input names (initializers excluded) and its default-domain opset."""
    import onnx

    model = onnx.load(str(file), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return [i.name for i in model.graph.input if i.name not in weights], opset


def _check_parity(file: Path, probes: list[tuple[Any, Any, list[torch.Tensor], str]], input_names: list[str],
                  output_names: list[str], tolerance: tuple[float, float], exporter: str) -> float:
    """Largest absolute difference between ONNX Runtime and torch over `probes`; ExportError above
    `atol + rtol * max|torch output|` (`tolerance` = (atol, rtol))."""
    atol, rtol = tolerance
    try:
        session = create_session(file, graph_optimization="all")
    except Exception as exc:  # noqa: BLE001 - onnxruntime's pybind errors share no base class but Exception
        raise ExportError(f"the {exporter} exporter wrote a graph ONNX Runtime cannot load: "
                          f"{str(exc).splitlines()[0]}") from None
    graph_inputs = [i.name for i in session.get_inputs()]
    worst = 0.0
    for args, kwargs, reference, label in probes:
        values = dict(zip(input_names, [*args, *kwargs.values()]))
        if unknown := [n for n in graph_inputs if n not in values]:
            raise ExportError(f"the exported graph ({exporter} exporter) takes inputs {unknown} that are not among the "
                              f"example inputs {input_names}")
        feed = {n: values[n].detach().cpu().numpy() for n in graph_inputs}
        try:
            outputs = session.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - as above
            raise ExportError(f"the exported graph ({exporter} exporter) fails in ONNX Runtime on {label}: "
                              f"{str(exc).splitlines()[0]}") from None
        for name, got, want in zip(output_names, outputs, reference):
            want_np = want.detach().float().cpu().numpy() if want.is_floating_point() else want.cpu().numpy()
            if got.shape != want_np.shape:
                raise ExportError(f"output {name!r} of the exported graph ({exporter} exporter) has shape {got.shape} "
                                  f"on {label}; torch gives {tuple(want_np.shape)}")
            diff = float(np.max(np.abs(got.astype(np.float64) - want_np.astype(np.float64)))) if got.size else 0.0
            scale = float(np.max(np.abs(want_np))) if want_np.size else 0.0
            if not diff <= atol + rtol * scale:
                raise ExportError(f"parity check failed: output {name!r} of the exported graph ({exporter} exporter) "
                                  f"differs from torch by max abs diff {diff:.3g} > atol {atol:g} + rtol {rtol:g} x "
                                  f"max |output| {scale:.3g} on {label}")
            worst = max(worst, diff)
    return worst

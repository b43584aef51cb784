"""OpenVINO runner: an ONNX file (fp32, or a QDQ int8 graph), an OpenVINO IR or a torch module, compiled for the CPU.

    runner = OpenVinoRunner("model.onnx", threads=2, hint="throughput")     # fp32, or int8 from a QDQ graph
    runner = OpenVinoRunner.from_model(module, example)                      # openvino.convert_model
    runner.save("out/")                                                      # out/<name>.xml + out/<name>.bin
    OpenVinoRunner("out/<name>.xml").precision                               # what the compiled model executes

`precision` is what the compiled model runs, read back from the precisions of its convolutions and
matrix products: `int8` when they run on u8/i8 kernels (a QDQ graph), else `bf16` or `f32`.
bf16 is refused on a CPU without AVX512-BF16 or AMX-BF16, where OpenVINO would quietly run f32.
The `openvino` package is imported only when a runner is built: without it, building one raises
`OpenVinoUnavailableError` naming the package, and everything else in CleanAI works.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cleanai._platform import cpu_flags, cpu_name
from cleanai.errors import CleanAIError, InputError
from cleanai.io import atomic_path
from cleanai.runtime.flops import count_onnx_macs
from cleanai.runtime.runners import Inputs, _as_logits, _file_stem, as_numpy, graph_feed

PACKAGE = "openvino"  # the PyPI package (and module) this runner needs
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU flags (Linux names) of native bf16 arithmetic
Precision = Literal["f32", "bf16"]
Hint = Literal["latency", "throughput"]
# Operations whose runtime precision says whether the model computes in int8.
_COMPUTE_OPS = ("Convolution", "GroupConvolution", "MatMul", "FullyConnected", "Deconvolution")


class OpenVinoUnavailableError(CleanAIError, ImportError):
    """The `openvino` package cannot be imported here, so no OpenVINO runner can be built."""


class OpenVinoError(CleanAIError, RuntimeError):
    """OpenVINO cannot read or compile a model (an operator it lacks, a precision the CPU cannot run)."""


def load_openvino() -> Any:
    """The `openvino` module, or an `OpenVinoUnavailableError` naming the package and how to install it."""
    try:
        return importlib.import_module(PACKAGE)
    except ImportError as exc:
        raise OpenVinoUnavailableError(
            f"the OpenVINO runtime needs the {PACKAGE!r} package, which cannot be imported here ({exc}); install it "
            f"with `pip install {PACKAGE}` (the pin is in constraints.txt), or use the ONNX Runtime or torch runners"
        ) from None


def openvino_available() -> bool:
    """True when the `openvino` package imports, so OpenVINO runners can be built."""
    try:
        load_openvino()
    except OpenVinoUnavailableError:
        return False
    return True


@functools.cache
def openvino_core() -> Any:
    """The one `openvino.Core` of the process, kept alive to its end. Its CPU plugin replaces the main thread's
    signal stack while it lives; a plugin torn down (every Core and model of it gone) leaves a freed signal
    stack behind, and the next signal Python handles (a DataLoader worker's SIGCHLD) crashes the process."""
    return load_openvino().Core()


def openvino_version() -> str:
    """The version of the installed OpenVINO runtime (e.g. `2026.4.1-22982-...`)."""
    return str(load_openvino().get_version())


def check_precision(precision: str) -> None:
    """Refuse a precision this CPU cannot execute natively, naming the CPU flags it lacks."""
    if precision == "f32":
        return
    if precision != "bf16":
        raise InputError(f"precision must be 'f32' or 'bf16' (int8 comes from a quantized graph), got {precision!r}")
    if not any(f in cpu_flags() for f in BF16_FLAGS):
        raise InputError(
            f"precision='bf16' needs a CPU with {' or '.join(BF16_FLAGS)}; this CPU ({cpu_name()}) has neither, so "
            "OpenVINO would run f32 under a bf16 label. Use precision='f32', or int8 (QuantConfig(backend='openvino'))"
        )


def _read_error(exc: Exception, what: str) -> OpenVinoError:
    """An OpenVINO read/convert failure as one readable error, naming the operators it lacks when it says so."""
    text = str(exc)
    missing = re.findall(r"No conversion rule found for operations?: ([^\n]+)", text)
    if missing:
        return OpenVinoError(f"OpenVINO cannot run {what}: it has no conversion for the operator(s) "
                             f"{missing[0].strip()}. Run this model with ONNX Runtime (OrtRunner) or torch (TorchRunner)")
    text = re.sub(r"Exception from \S+:\n|Check '.*?' failed at \S+:\n", "", text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return OpenVinoError(f"OpenVINO cannot read {what}: {first}")


class OpenVinoRunner:
    """Runs a model compiled by OpenVINO for the CPU; deploys as OpenVINO IR (`<name>.xml` + `<name>.bin`).

    `source` is a path to an `.onnx` file or an IR `.xml`, the bytes of an ONNX model, or an
    `openvino.Model`. `threads` (None: OpenVINO's default), `streams` (parallel inference streams)
    and `hint` (`latency` or `throughput`) go to the CPU plugin; `precision` is the inference
    precision of float layers (`f32`, or `bf16` where the CPU has it). The attribute `precision`
    then holds what the compiled model executes, `version` the OpenVINO version.
    """

    backend = "openvino"

    def __init__(self, source: str | os.PathLike[str] | bytes | Any, name: str = "openvino",
                 threads: int | None = None, streams: int = 1, hint: Hint = "latency",
                 precision: Precision = "f32") -> None:
        ov = load_openvino()
        check_precision(precision)
        if hint not in ("latency", "throughput"):
            raise InputError(f"hint must be 'latency' or 'throughput', got {hint!r}")
        if streams < 1:
            raise InputError(f"streams must be an integer >= 1, got {streams}")
        self.name = name
        self.threads = threads
        self.streams = streams
        self.hint = hint
        self.requested_precision = precision
        self.version = openvino_version()
        self._onnx: bytes | None = None  # kept for counting MACs of the graph itself
        self.model = self._read(ov, source)
        self.input_names = tuple(i.get_any_name() for i in self.model.inputs)
        self._dtypes = {i.get_any_name(): i.get_element_type().to_dtype() for i in self.model.inputs}
        self._compile()

    @classmethod
    def from_model(cls, model: nn.Module, example_inputs: Inputs, name: str = "openvino", **options: Any,
                   ) -> OpenVinoRunner:
        """Convert a torch module with `openvino.convert_model` (traced on `example_inputs`, batch size left dynamic)."""
        ov = load_openvino()
        model = model.eval()
        example = tuple(example_inputs) if isinstance(example_inputs, list) else example_inputs
        try:
            with torch.no_grad():
                converted = ov.convert_model(model, example_input=example)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's conversion errors have many types; one readable error
            raise _read_error(exc, f"{type(model).__name__}") from exc
        if isinstance(example_inputs, Mapping):  # keyword inputs keep their names
            for port, key in zip(converted.inputs, example_inputs):
                port.get_tensor().set_names({key})
        return cls(converted, name=name, **options)

    def _read(self, ov: Any, source: Any) -> Any:
        if isinstance(source, ov.Model):
            return source
        core = openvino_core()
        try:
            if isinstance(source, (bytes, bytearray)):
                self._onnx = bytes(source)
                with tempfile.TemporaryDirectory(prefix="cleanai-ov-") as tmp:  # the ONNX frontend reads files
                    path = Path(tmp) / "model.onnx"
                    path.write_bytes(self._onnx)
                    return core.read_model(str(path))
            path = Path(source)
            if not path.is_file():
                raise InputError(f"OpenVinoRunner: {str(path)!r} is not a file; give an .onnx file, an OpenVINO IR "
                                 ".xml (with its .bin beside it), ONNX bytes or an openvino.Model")
            if path.suffix == ".onnx":
                self._onnx = path.read_bytes()
            return core.read_model(str(path))
        except CleanAIError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise _read_error(exc, str(source) if not isinstance(source, bytes) else "the ONNX model") from exc

    def _compile(self) -> None:
        ov = load_openvino()
        import openvino.properties as props
        import openvino.properties.hint as hints

        config: dict[Any, Any] = {
            hints.performance_mode: (hints.PerformanceMode.LATENCY if self.hint == "latency"
                                     else hints.PerformanceMode.THROUGHPUT),
            hints.inference_precision: ov.Type.bf16 if self.requested_precision == "bf16" else ov.Type.f32,
            props.num_streams: self.streams,
        }
        if self.threads is not None:
            config[props.inference_num_threads] = self.threads
        try:
            self._compiled = openvino_core().compile_model(self.model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise _read_error(exc, f"runner {self.name!r}") from exc
        self._request = self._compiled.create_infer_request()
        self.precision = self._executed_precision()

    def _executed_precision(self) -> str:
        """What the compiled model's compute operations run on: `int8` (u8/i8 kernels), `bf16` or `f32`."""
        kinds = {str(info["runtimePrecision"].astype(str)).lower()
                 for info in (op.get_rt_info() for op in self._compiled.get_runtime_model().get_ordered_ops())
                 if str(info["layerType"].astype(str)) in _COMPUTE_OPS}
        return "int8" if kinds & {"u8", "i8"} else "bf16" if "bf16" in kinds else "f32"

    @property
    def provider(self) -> str:
        """The device and what it executes, e.g. `CPU int8`."""
        return f"CPU {self.precision}"

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        feed = graph_feed(self.name, "OpenVINO", self.input_names, inputs)
        arrays = {n: as_numpy(v, self._dtypes[n]) for n, v in feed.items()}
        out = self._request.infer(arrays)
        return _as_logits(torch.from_numpy(np.array(out[0], copy=True)), self.name)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model as OpenVINO IR: `<name>.xml` (the graph) and `<name>.bin` (the weights); returns the .xml."""
        ov = load_openvino()
        stem = _file_stem(self.name)
        xml, binary = Path(directory) / f"{stem}.xml", Path(directory) / f"{stem}.bin"
        with tempfile.TemporaryDirectory(prefix="cleanai-ir-") as tmp:
            ov.save_model(self.model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
            for name, target in (("model.bin", binary), ("model.xml", xml)):  # .xml last: it names the .bin
                with atomic_path(target) as staged:
                    shutil.copyfile(Path(tmp) / name, staged)
        return xml

    def set_threads(self, n: int) -> None:
        """Compile again with `n` inference threads."""
        if n != self.threads:
            self.threads = n
            self._compile()

    def num_params(self) -> int:
        """Elements of the model's constants, except int32/int64 ones (shapes and indices) and scalars (operator
        attributes such as Gemm's alpha): the weights."""
        ov = load_openvino()
        skip = {ov.Type.i64, ov.Type.i32}
        shapes = [list(op.get_output_shape(0)) for op in self.model.get_ordered_ops()
                  if op.get_type_name() == "Constant" and op.get_output_element_type(0) not in skip]
        return int(sum(np.prod(shape) for shape in shapes if shape))

    def macs(self, example_inputs: Inputs) -> int | None:
        """MACs of the ONNX graph it was read from (None for a converted module or an IR: no ONNX graph to count)."""
        if self._onnx is None:
            return None
        import onnx

        return count_onnx_macs(onnx.load_from_string(self._onnx), example_inputs)


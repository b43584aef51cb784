"""ONNX Runtime backend: export once, then build static QDQ or dynamic int8 variants of the exported graph.

Static: `quantize_static` in QDQ format (the format ONNX Runtime's CPU kernels are fast on) with
ranges calibrated on the `calib` batches; the ranges of each calibration method are cached in the
work directory, so trying other granularities or keeping layers in fp32 does not calibrate again.
A tensor whose calibrated range is not finite (an attention mask's -inf, or float32's minimum standing in for
it) has no 8-bit scale: the nodes that read or write it stay in fp32 (logged), or a transformer's int8 graph
would compute NaN scores.
Dynamic: `quantize_dynamic` (int8 weights, activations quantized per batch at run time), after
Gemm nodes are rewritten as MatMul + Add, since ONNX Runtime's dynamic quantizer skips Gemm.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cleanai.runtime import OrtRunner
from cleanai.export import export_onnx, optimize_onnx
from cleanai._batches import is_tensor_tuple
from cleanai.quantization._common import Inputs
from cleanai.quantization.check import Probe
from cleanai.quantization.config import QuantConfig, QuantizationError

# Operators that carry weights and are worth keeping in fp32 one by one (the accuracy search's candidates).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "Attention", "Gather")
_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_MASK_LIMIT = 1e30  # a calibrated bound beyond this is a mask constant (-inf, float32's minimum), not data
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_ort_quantization() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger ("consider pre-processing", which is done here)
    and prints its histogram calibrators' progress to stdout.

    While it runs, root-logger warnings are raised to ERROR level (errors still show) and stdout is
    captured.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _unbounded_nodes(graph_path: Path, cache: Path) -> list[str]:
    """Nodes of the graph that read or write a tensor whose range in the calibration `cache` is not finite."""
    import onnx
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(cache)
    unbounded = {name for name in ranges
                 if not (np.abs(np.asarray(ranges[name].range_value, dtype=np.float64)) < _MASK_LIMIT).all()}
    if not unbounded:  # the usual case (no masks): no need to read the graph
        return []
    return [n.name for n in onnx.load(str(graph_path)).graph.node if unbounded & {*n.input, *n.output}]


def _reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    """A `CalibrationDataReader` handing out `feeds` once."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return Reader()


class OrtQuantizer:
    """Exports `model` to ONNX once (into `workdir`), then builds any number of quantized `OrtRunner`s from it."""

    def __init__(self, model: nn.Module, example: Inputs, calib_inputs: list[Inputs],
                 workdir: str | Path | None = None, opset: int | None = None, name: str | None = None,
                 probe: Probe | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cleanai-quant-") if workdir is None else None
        self.workdir = Path(self._tmp.name if self._tmp is not None else workdir)  # type: ignore[arg-type]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.name = name or type(model).__name__
        self.probe = probe  # what each result is checked on against fp32
        result = export_onnx(model, example, self.workdir / "fp32.onnx", dynamic_batch=True, opset=opset)
        self.fp32_path = result.path
        self.input_names = list(result.input_names)
        self.prepared_path = self._preprocess(result.path)
        self.calib_inputs = calib_inputs
        self.feeds = [self._feed(x, i) for i, x in enumerate(calib_inputs)]
        for stale in self.workdir.glob("calibration-*.json"):  # ranges cached from other calibration data
            stale.unlink()
        self._built = 0

    def _preprocess(self, path: Path) -> Path:
        """ONNX Runtime's recommended pre-processing: graph optimisation (Conv+BN folding...) and shape inference."""
        from onnxruntime.quantization.shape_inference import quant_pre_process

        out = self.workdir / "fp32-prepared.onnx"
        # Symbolic shape inference is for graphs with dynamic dimensions it cannot resolve on exported
        # transformers ("Incomplete symbolic shape inference"); ONNX shape inference is enough here.
        with _quiet_ort_quantization():
            quant_pre_process(str(path), str(out), skip_symbolic_shape=True)
        return out

    def _feed(self, x: Inputs, index: int) -> dict[str, np.ndarray]:
        if isinstance(x, torch.Tensor):
            values = {self.input_names[0]: x}
        else:
            values = dict(zip(self.input_names, x)) if is_tensor_tuple(x) else dict(x)
        missing = [n for n in self.input_names if n not in values]
        if missing:
            raise QuantizationError(f"calibration batch {index} lacks {missing}; the exported graph takes "
                                    f"{self.input_names}, the batch holds {sorted(values)}")
        return {n: values[n].detach().cpu().numpy() for n in self.input_names}

    def fp32_runner(self) -> OrtRunner:
        """The exported fp32 graph in ONNX Runtime: the baseline quantized variants are compared with."""
        return OrtRunner(self.fp32_path.read_bytes(), name=f"{self.name} onnxruntime fp32")

    def candidates(self, config: QuantConfig) -> list[str]:
        """Names of the weighted nodes `config` quantizes, in graph order: the layers that may be kept in fp32."""
        import onnx

        graph = onnx.load(str(self.prepared_path)).graph
        weights = {t.name for t in graph.initializer if len(t.dims) >= 2}
        kinds = set(config.op_types) if config.op_types is not None else set(WEIGHTED_OPS)
        return [n.name for n in graph.node
                if n.op_type in WEIGHTED_OPS and n.op_type in kinds and any(i in weights for i in n.input)]

    def build(self, config: QuantConfig) -> OrtRunner:
        """Quantize the exported graph as `config` says (static QDQ or dynamic) and load it in an `OrtRunner`."""
        return ort_artifact(self.quantized_graph(config), config, f"{self.name} {config.describe()}")

    def quantized_graph(self, config: QuantConfig) -> Path:
        """Quantize the exported graph as `config` says (static QDQ or dynamic); the path of the int8 ONNX file."""
        self._built += 1
        out = self.workdir / f"int8-{self._built}.onnx"
        if config.mode == "dynamic":
            self._dynamic(config, out)
        elif config.mode == "static":
            self._static(config, out)
        else:
            raise QuantizationError(f"OrtQuantizer builds static and dynamic graphs, not mode={config.mode!r}")
        self._check_quantized(out, config)
        return out

    def _static(self, config: QuantConfig, out: Path) -> None:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            quantize_static,
        )

        if not self.feeds:
            raise QuantizationError("static quantization needs calibration batches: pass calib=<batches>")
        method = config.calibration or "minmax"
        extra: dict[str, Any] = {"ActivationSymmetric": config.activations_symmetric(),
                                 "WeightSymmetric": config.weight_symmetric}
        if method == "percentile":
            extra["CalibPercentile"] = config.percentile
        ops = sorted(config.op_types) if config.op_types is not None else None
        key = f"{method}{config.percentile:g}" if method == "percentile" else method
        # ONNX Runtime calibrates every tensor of the op types, excluded nodes or not: one cache serves all fallbacks
        cache = self.workdir / f"calibration-{key}-{'-'.join(ops) if ops else 'all'}.json"

        def run(exclude: list[str]) -> None:  # with the cache present, no calibration
            # ONNX Runtime computes a scale for every calibrated tensor, also those of unbounded ranges
            with _quiet_ort_quantization(), np.errstate(invalid="ignore", divide="ignore"):
                quantize_static(
                    str(self.prepared_path), str(out), _reader(self.feeds), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=ops, per_channel=config.per_channel,
                    reduce_range=config.reduce_range, activation_type=_qtype(config.activation_dtype),
                    weight_type=_qtype(config.weight_dtype), nodes_to_exclude=exclude,
                    calibrate_method=getattr(CalibrationMethod, _CALIBRATION[method]), extra_options=extra,
                    calibration_cache_path=str(cache),
                )

        calibrating = not cache.is_file()  # a later build reads the cached ranges: its masked nodes are known
        if calibrating:
            run(list(config.nodes_to_exclude))
        masked = [n for n in _unbounded_nodes(self.prepared_path, cache) if n not in config.nodes_to_exclude]
        if masked:
            log.info("%s: %d node(s) kept in fp32, their tensors' calibrated range is not finite (masks): %s",
                     self.name, len(masked), ", ".join(masked))
        if masked or not calibrating:
            run([*config.nodes_to_exclude, *masked])

    def _dynamic(self, config: QuantConfig, out: Path) -> None:
        import onnx
        from onnxruntime.quantization import quantize_dynamic

        model = onnx.load(str(self.prepared_path))
        del model.graph.value_info[:]  # stale shape annotations make quantize_dynamic fail on exported BERTs
        _gemm_to_matmul(model.graph)
        source = self.workdir / "fp32-dynamic-input.onnx"
        onnx.save(model, str(source))
        with _quiet_ort_quantization():
            quantize_dynamic(
                str(source), str(out), op_types_to_quantize=list(config.op_types) if config.op_types else None,
                per_channel=config.per_channel, reduce_range=config.reduce_range,
                weight_type=_qtype(config.weight_dtype), nodes_to_exclude=list(config.nodes_to_exclude),
                extra_options={"WeightSymmetric": config.weight_symmetric,
                               "ActivationSymmetric": config.activations_symmetric()},
            )

    def _check_quantized(self, path: Path, config: QuantConfig) -> None:
        """Refuse a graph in which no weight ended up in int8 (every candidate excluded, or none present)."""
        import onnx

        graph = onnx.load(str(path)).graph
        int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        if any(t.data_type in int8 and len(t.dims) >= 2 for t in graph.initializer):
            return
        source = onnx.load(str(self.prepared_path)).graph
        present = sorted({n.op_type for n in source.node})
        raise QuantizationError(
            f"{self.name} has no quantizable layers left for {config.describe()}: no weight was quantized. "
            f"The graph holds {', '.join(present)}; weighted operators ONNX Runtime quantizes: "
            f"{', '.join(WEIGHTED_OPS)}"
            + (f" (nodes_to_exclude keeps {len(config.nodes_to_exclude)} of them in fp32)"
               if config.nodes_to_exclude else "")
        )

    def close(self) -> None:
        """Delete the temporary work directory (if `workdir` was not given); built runners stay usable."""
        if self._tmp is not None:
            self._tmp.cleanup()


def ort_artifact(path: Path, config: QuantConfig, name: str) -> OrtRunner:
    """The runner of the quantized graph at `path`, optimised offline as `config.ort_optimization` says."""
    if config.ort_optimization != "disable":
        path = optimize_onnx(path, path.with_name(f"{path.stem}-{config.ort_optimization}.onnx"),
                             level=config.ort_optimization)
    return OrtRunner(path.read_bytes(), name=name)


def _qtype(dtype: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if dtype == "int8" else QuantType.QUInt8


def _gemm_to_matmul(graph: Any) -> None:
    """Rewrite `Gemm(A, B, C)` with a constant B as `MatMul(A, B') + C` in place; the MatMul keeps the Gemm's name.

    Only plain Gemms (alpha = beta = 1, A not transposed) are rewritten; with `transB=1` the MatMul
    reads a transposed copy of B, so the graph computes the same values.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    nodes: list[Any] = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            weight = f"{node.input[1]}_transposed"
            if weight not in inits:
                inits[weight] = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]]).T.copy(), weight)
                graph.initializer.append(inits[weight])
        has_bias = len(node.input) > 2 and bool(node.input[2])
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
    del graph.node[:]
    graph.node.extend(nodes)

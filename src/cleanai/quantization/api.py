"""`quantize(model, config, calib)`: one verb for every mode and backend, returning a runnable artifact (a Runner)."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cleanai.runtime import OrtRunner, Runner
from cleanai.export import export_onnx
from cleanai.io import atomic_path
from cleanai._finite import check_finite
from cleanai._validate import check_model_input
from cleanai.errors import DataError
from cleanai.quantization import _torch
from cleanai.quantization._common import (
    Inputs,
    calibration_inputs,
    check_quantizable,
    example_from,
)
from cleanai.quantization.check import Probe, hold_back, make_probe, verify
from cleanai.quantization._openvino import OpenVinoQuantizer
from cleanai.quantization._ort import OrtQuantizer, ort_artifact
from cleanai.quantization.config import QuantConfig, has_int8_dot


def quantize(model: nn.Module, config: QuantConfig | None = None, calib: Iterable[Any] | None = None,
             example_inputs: Inputs | None = None, workdir: str | os.PathLike[str] | None = None, *,
             train_data: Iterable[Any] | None = None, name: str | None = None) -> Runner:
    """Quantize `model` as `config` says and return the artifact to measure and deploy.

    Returns an `OrtRunner` (backend "onnxruntime": the model exported to ONNX, then quantized), an
    `OpenVinoRunner` (backend "openvino": int8 executed by OpenVINO) or a `TorchRunner` (backend "torch"). `calib` yields `(inputs, targets)` batches (or bare inputs):
    required for static calibration, optional otherwise (it also supplies the example inputs for
    export). Inputs are a Tensor, a tuple of Tensors (a model with several inputs) or a dict of
    Tensors (keyword inputs). `train_data` feeds quantization-aware training (default: `calib`).
    `workdir` keeps the ONNX files (fp32, pre-processed, quantized, calibration ranges); by default
    they live in a temporary folder deleted on return. The caller's model is not modified.

    The result is checked against fp32 before it is returned (see `cleanai.quantization.check`): the
    last `config.check_batches` calibration batches are held back from calibration for that, the
    numbers are kept as `runner.quant_check`, and a result far from fp32 warns (refused with
    `config.strict`). A result that fails to run on those inputs is refused.
    """
    check_model_input(model, example_inputs, where="quantize", example_optional=True)
    config = config or QuantConfig()
    check_quantizable(model, config)
    quantizer = make_quantizer(model, config, calib, example_inputs, workdir, train_data=train_data, name=name)
    try:
        if config.mode == "qat" and config.backend == "onnxruntime":
            runner: Runner = _qat_to_onnx(model, config, quantizer, workdir)
        else:
            runner = quantizer.build(config)
        verify(runner, quantizer.probe, config, f"quantize ({config.describe()})")
        return runner
    finally:
        quantizer.close()


def make_quantizer(model: nn.Module, config: QuantConfig, calib: Iterable[Any] | None, example_inputs: Inputs | None,
                   workdir: str | os.PathLike[str] | None, *, train_data: Iterable[Any] | None = None,
                   name: str | None = None) -> OrtQuantizer | OpenVinoQuantizer | _torch.TorchQuantizer:
    """The backend object that builds variants of `model`: export and calibration data are prepared once, and
    the fp32 logits the result is checked against are computed first (a model without logits is refused here)."""
    who = f"quantize ({config.describe()})"
    needed = config.mode == "static" or (config.mode == "qat" and train_data is None)
    limit = (config.calibration_batches + config.check_batches if config.calibration_batches is not None
             else None) if config.is_static else config.check_batches
    inputs = calibration_inputs(calib, limit, who) if calib is not None or needed else []
    check_finite(inputs, f"{who}: the calibration batches", DataError, "activation ranges need finite inputs")
    inputs, check_inputs, held_out = hold_back(inputs, config) if inputs else ([], [], False)
    held_out = held_out and not (config.mode == "qat" and train_data is None)  # QAT then trains on all of calib
    traced = config.backend in ("onnxruntime", "openvino") or config.mode in ("static", "qat")  # exported or torch.export-ed
    if traced and not inputs and example_inputs is None and train_data is not None:
        example_inputs = calibration_inputs(train_data, 1, who)[0]  # QAT given training data only
    example = example_from(model, inputs, example_inputs, who) if traced else None
    probe = _probe(model, config, check_inputs, held_out, example_inputs, who)
    if config.backend == "onnxruntime":
        warn_if_int8_saturates(config)
    if config.backend == "openvino":
        return OpenVinoQuantizer(model, example, inputs, workdir=workdir, opset=config.opset, name=name, probe=probe)
    if config.backend == "onnxruntime" and config.mode != "qat":
        return OrtQuantizer(model, example, inputs, workdir=workdir, opset=config.opset, name=name, probe=probe)
    return _torch.TorchQuantizer(model, example, inputs, name=name, probe=probe,
                                 train_data=train_data if train_data is not None else calib)


def _probe(model: nn.Module, config: QuantConfig, check_inputs: list[Inputs], held_out: bool,
           example_inputs: Inputs | None, who: str) -> Probe | None:
    """The inputs the result is checked on, with fp32's logits: held-back calibration batches, else the example
    inputs, else a random batch shaped like `model.input_size`; None when there is nothing to check on."""
    if check_inputs:
        n = len(check_inputs)
        source = (f"{n} calibration batch(es) held back from calibration" if config.is_static and held_out
                  else f"{n} calib batch(es), which QAT also trains on (pass train_data to hold them out)"
                  if config.mode == "qat" else "the only calibration batch (none could be held back)"
                  if config.is_static else f"{n} calib batch(es)")
    elif example_inputs is not None:
        check_inputs, held_out, source = [example_inputs], not config.is_static, "the example inputs"
    elif getattr(model, "input_size", None) is not None:
        check_inputs = [example_from(model, [], None, who)]
        held_out, source = True, "a random batch shaped like the model's input_size"
    else:
        return None
    return make_probe(model, check_inputs, held_out, source, who)


class Int8SaturationWarning(UserWarning):
    """uint8 x int8 ONNX Runtime kernels on an x86 CPU without VNNI/AMX may saturate and lose accuracy."""


def warn_if_int8_saturates(config: QuantConfig) -> None:
    """Warn when `config` asks ONNX Runtime for u8 x s8 with full-range weights on an x86 CPU without VNNI/AMX."""
    if (config.activation_dtype, config.weight_dtype) != ("uint8", "int8") or config.reduce_range or has_int8_dot():
        return
    warnings.warn(
        f"{config.describe()}: this CPU has no VNNI/AMX int8 dot-product instructions, so ONNX Runtime's uint8 x int8 "
        "kernels add pairs of products in int16, which saturates with full-range 8-bit weights and can cost "
        "accuracy. Use QuantConfig.avx2() (reduce_range=True: 7-bit weights) or weight_dtype='uint8' on this "
        "machine; QuantConfig.auto() picks the preset for the CPU it runs on.", Int8SaturationWarning, stacklevel=4)


def _qat_to_onnx(model: nn.Module, config: QuantConfig, quantizer: _torch.TorchQuantizer,
                 workdir: str | os.PathLike[str] | None) -> OrtRunner:
    """QAT with PT2E in torch, then the converted model exported as an ONNX QDQ graph for ONNX Runtime."""
    import onnx

    module = _torch.pt2e(model, config, quantizer.example, quantizer.calib_inputs, quantizer.train_data,
                         compile_model=False)
    with tempfile.TemporaryDirectory(prefix="cleanai-qat-") as tmp:
        path = Path(workdir if workdir is not None else tmp) / "qat-int8.onnx"
        # Torch runs the reference q/dq ops in float, ONNX Runtime real int8 kernels: outputs differ by rounding
        # steps that no fixed tolerance separates from a broken export. quantize() checks the ONNX Runtime
        # artifact against fp32 instead, on held-back inputs, which a broken export fails.
        result = export_onnx(module.graph_module, quantizer.example, path, dynamic_batch=True, opset=config.opset,
                             exporter="dynamo", check_parity=False)
        graph = onnx.load(str(result.path))
        for node in graph.graph.node:  # the dynamo exporter's per-node stack traces: half the file of a small model
            del node.metadata_props[:]
        with atomic_path(result.path) as staged:
            onnx.save(graph, str(staged))
        return ort_artifact(result.path, config, f"{quantizer.name} {config.describe()}")

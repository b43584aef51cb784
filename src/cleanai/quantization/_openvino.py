"""OpenVINO backend: static int8 run by OpenVINO, from CleanAI's QDQ graph or from NNCF's post-training quantizer.

Export, pre-processing and calibration batches are the ONNX Runtime backend's (`OrtQuantizer`):
`openvino_method="qdq"` quantizes the graph exactly as the onnxruntime backend does, kept in the
portable QDQ form, and OpenVINO compiles it to int8 kernels; `openvino_method="nncf"` hands the
fp32 graph and the same calibration batches to `nncf.quantize`. Either way the result is an
`OpenVinoRunner` whose compiled model is checked to execute in int8. `openvino_method="auto"` takes NNCF
for a transformer graph (one with a Softmax) unless the config sets what NNCF fixes, else the QDQ graph.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from cleanai.quantization._ort import OrtQuantizer, _quiet_ort_quantization
from cleanai.quantization.config import QuantConfig, QuantizationError
from cleanai.runtime.openvino_runner import OpenVinoRunner, openvino_core


class OpenVinoQuantizer(OrtQuantizer):
    """Exports `model` to ONNX once, then builds int8 `OpenVinoRunner`s from it (QDQ graph or NNCF)."""

    def fp32_runner(self) -> OpenVinoRunner:
        """The exported fp32 graph in OpenVINO: the baseline its int8 variants are compared with."""
        return OpenVinoRunner(self.fp32_path.read_bytes(), name=f"{self.name} openvino fp32")

    def build(self, config: QuantConfig) -> OpenVinoRunner:
        config = self.resolve(config)
        name = f"{self.name} {config.describe()}"
        if config.openvino_method == "qdq":
            runner = OpenVinoRunner(self.quantized_graph(config).read_bytes(), name=name)
        else:
            runner = OpenVinoRunner(self._nncf(config), name=name)
        if runner.precision != "int8":
            raise QuantizationError(f"{name}: OpenVINO compiled the quantized model to {runner.precision}, not int8 "
                                    "(no convolution or matrix product runs on int8 kernels); keep fewer layers in "
                                    "fp32 (nodes_to_exclude) or use backend='onnxruntime'")
        return runner

    def resolve(self, config: QuantConfig) -> QuantConfig:
        """`config` with `openvino_method="auto"` made concrete: nncf for a transformer graph, else qdq."""
        if config.openvino_method != "auto":
            return config
        nncf = self.is_transformer and not config.nncf_conflicts()
        return config.model_copy(update={"openvino_method": "nncf" if nncf else "qdq"})

    @cached_property
    def is_transformer(self) -> bool:
        """The exported graph has a Softmax: attention, which NNCF quantizes with its transformer scheme. Read
        once: the accuracy-budget search builds many configs from the same graph."""
        model = openvino_core().read_model(str(self.prepared_path))
        return any(op.get_type_name() == "Softmax" for op in model.get_ordered_ops())

    def _nncf(self, config: QuantConfig) -> Any:
        """`nncf.quantize` on the pre-processed fp32 graph, calibrated on the same batches as the QDQ path."""
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        if not self.feeds:
            raise QuantizationError("static quantization needs calibration batches: pass calib=<batches>")
        model = openvino_core().read_model(str(self.prepared_path))
        ops = [op.get_friendly_name() for op in model.get_ordered_ops()]
        # OpenVINO names a Conv/Gemm with a bias "<onnx name>/WithoutBiases" (and its Add "<onnx name>").
        ignored = [op for op in ops for node in config.nodes_to_exclude if op == node or op.startswith(f"{node}/")]
        nncf_logger = logging.getLogger("nncf")
        level = nncf_logger.level
        nncf_logger.setLevel(logging.ERROR)  # its per-step INFO lines and progress bars
        try:
            with _quiet_ort_quantization():
                return nncf.quantize(
                    model, nncf.Dataset(self.feeds), subset_size=len(self.feeds),
                    model_type=nncf.ModelType.TRANSFORMER if self.is_transformer else None,
                    # the config's activations, not NNCF's default (MIXED for a transformer, PERFORMANCE otherwise)
                    preset=nncf.QuantizationPreset.PERFORMANCE if config.activations_symmetric()
                    else nncf.QuantizationPreset.MIXED,
                    ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
                    advanced_parameters=AdvancedQuantizationParameters(
                        overflow_fix=OverflowFix.ENABLE if config.reduce_range else OverflowFix.DISABLE))
        finally:
            nncf_logger.setLevel(level)

"""Quantization: one verb, `quantize(model, QuantConfig(...), calib)`, returning a runnable artifact (a Runner).

    from cleanai.quantization import QuantConfig, quantize
    runner = quantize(model, QuantConfig.avx512_vnni(is_static=True), calib=train_loader)   # ONNX Runtime QDQ int8
    runner = quantize(model, QuantConfig(mode="dynamic", backend="torch"))                  # torch dynamic int8

The maths are in `cleanai.quantization.affine` (scale / zero point, quantize / dequantize, error
statistics, per-layer error tables); `quantize_with_accuracy_budget` searches calibration,
granularity and fp32 fallbacks until an accuracy budget holds. Every result is checked against fp32
on calibration batches held back from calibration (`runner.quant_check`: output SQNR and top-1
agreement); a result far from fp32 warns (`QuantizationAccuracyWarning`), or is refused with
`QuantConfig(strict=True)`.
"""

from cleanai.quantization import affine
from cleanai.quantization._torch import (
    CastModel,
    ExportedModule,
    LegacyQuantizationWarning,
)
from cleanai.quantization.affine import LayerError, QuantError, layer_errors
from cleanai.quantization.api import Int8SaturationWarning, quantize
from cleanai.quantization.check import QuantCheck, QuantizationAccuracyWarning
from cleanai.quantization.config import (
    PRESETS,
    QuantConfig,
    QuantizationError,
    list_presets,
)
from cleanai.quantization.search import (
    Attempt,
    BudgetResult,
    quantize_with_accuracy_budget,
)

__all__ = [
    "PRESETS",
    "Attempt",
    "BudgetResult",
    "CastModel",
    "ExportedModule",
    "Int8SaturationWarning",
    "LayerError",
    "LegacyQuantizationWarning",
    "QuantCheck",
    "QuantConfig",
    "QuantError",
    "QuantizationAccuracyWarning",
    "QuantizationError",
    "affine",
    "layer_errors",
    "list_presets",
    "quantize",
    "quantize_with_accuracy_budget",
]

"""`QuantConfig`: one validated object describing a quantization, with hardware presets as constructors.

    QuantConfig(mode="static", backend="onnxruntime", calibration="percentile", percentile=99.99)
    QuantConfig.avx512_vnni(is_static=False)          # Optimum-style preset
    QuantConfig.preset("arm64", per_channel=False)    # the same, by name (list_presets())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai._platform import cpu_flags, is_arm
from cleanai.errors import CleanAIError, ConfigError
from cleanai.registry import Registry
from cleanai.training import TrainConfig

CALIBRATIONS = ("minmax", "entropy", "percentile")
# Which backend runs which mode (anything else is refused when the config is built).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("dynamic", "static", "qat"),
    "torch": ("dynamic", "static", "qat", "weight_only", "fp16", "bf16"),
    "openvino": ("static",),
}
# How backend="openvino" makes its int8 model: CleanAI's ONNX Runtime QDQ graph read by OpenVINO ("qdq"), or
# OpenVINO's own post-training quantizer NNCF on the fp32 graph ("nncf"). BENCHMARKS.md compares them.
OPENVINO_METHODS = ("qdq", "nncf")
# torch.nn layer types the torch backend's dynamic modes can quantize (LSTM/GRU only with torch_api="legacy").
TORCH_DYNAMIC_TYPES = ("Linear", "LSTM", "GRU")
# torch.nn layer types X86InductorQuantizer annotates (torch static and qat).
PT2E_TYPES = ("Conv2d", "Linear")


# CPU flags (Linux /proc/cpuinfo names) of x86 instructions that multiply int8 in 32-bit accumulators.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class QuantizationError(CleanAIError, RuntimeError):
    """A model cannot be quantized as asked (no quantizable layer, no calibration data, a missing feature)."""


def has_int8_dot() -> bool:
    """True on ARM and on x86 CPUs with VNNI or AMX: their u8 x s8 kernels accumulate without int16 saturation."""
    return is_arm() or any(f in cpu_flags() for f in INT8_DOT_FLAGS)


def _default_qat_training() -> TrainConfig:
    return TrainConfig(epochs=1, lr=1e-4, optimizer="sgd", optimizer_kwargs={"momentum": 0.9}, progress=False,
                       monitor="train_loss")


class QuantConfig(BaseModel):
    """Settings of one quantization.

    - `mode`: `dynamic` (int8 weights, activations quantized on the fly), `static` (int8 weights and
      activations with ranges calibrated on `calib`), `qat` (BatchNorm folded, then PT2E fake-quant
      fine-tuning with the Trainer as `qat_training` says, then convert; the onnxruntime backend
      exports the result as a QDQ graph), `weight_only` (int8 weights, float compute; torch),
      `fp16` / `bf16` (weight casting; torch).
    - `backend`: `onnxruntime` (export to ONNX, then QDQ static or dynamic int8), `torch`
      (torchao `quantize_`, PT2E with X86InductorQuantizer, dtype casting) or `openvino` (static int8
      run by OpenVINO; an `OpenVinoRunner` saved as IR).
    - `openvino_method` (backend openvino): `qdq` quantizes the exported graph as the onnxruntime
      backend does (same calibration, granularity and fp32 fallback options) and OpenVINO runs the QDQ
      graph in int8; `nncf` quantizes the fp32 graph with OpenVINO's NNCF (`nncf.quantize`, its own
      calibration; `nodes_to_exclude`, `reduce_range` as NNCF's overflow fix, and `activation_symmetric` as its
      preset apply: False is `MIXED`, asymmetric activations; True, and unset (None), is `PERFORMANCE`,
      symmetric: faster and as accurate on the MiniLM in BENCHMARKS.md, and NNCF's own choice for CNNs; unset
      means asymmetric on the other backends). `auto` (the
      default) takes what won in BENCHMARKS.md: `nncf` for a transformer graph (one with a Softmax: NNCF's
      transformer scheme), `qdq` otherwise or when the config sets what NNCF fixes.
    - `torch_api` (torch dynamic): `legacy` is `torch.ao.quantization.quantize_dynamic` (fbgemm
      kernels, fast on CPU, deprecated by torch), `torchao` is
      `quantize_(Int8DynamicActivationInt8WeightConfig())`, which needs int8 matmul hardware (VNNI,
      AMX) to be fast; `auto` takes legacy while this torch ships it, else torchao.
    - `calibration` (static, onnxruntime): `minmax` (the default), `entropy` or `percentile`
      (keeping `percentile` % of the values), over at most `calibration_batches` batches (None: all
      of `calib`). The torch backend's static/qat modes use X86InductorQuantizer's own observers
      (histogram for activations, per-channel min/max for weights) and take no calibration choice.
    - `per_channel`: one scale per output channel of each weight; `reduce_range`: 7-bit weights
      (7-bit activations for torch static/qat), which avoids int16 saturation in the u8 x s8
      kernels of x86 CPUs without VNNI (`QuantConfig.auto()` picks the preset for this CPU).
    - `op_types`: which operators to quantize (ONNX op types such as `Conv`, `MatMul`, `Gemm` for
      onnxruntime; torch.nn layer names for torch: `Linear`, `LSTM`, `GRU` (dynamic), `Conv2d`,
      `Linear` (static, qat)); None: the backend's default.
    - `nodes_to_exclude`: layers kept in float (ONNX node names, or torch module names).
    - `compile`: torch static / qat: run the converted model through `torch.compile` (inductor;
      compiled at the first call, again when the batch size changes), without which PT2E int8
      models run the reference kernels, slower than fp32.
    - `ort_optimization` (onnxruntime): the graph optimisations ONNX Runtime applies offline to the
      artifact it ships. `extended` (default) fuses each QuantizeLinear/DequantizeLinear pair with its
      operator (QLinearConv, QLinearAdd, MatMulIntegerToFloat...): a smaller file that loads faster,
      runnable by ONNX Runtime's CPU provider only. `disable` keeps the portable QDQ graph, for other
      execution providers (TensorRT, OpenVINO, QNN) or tools that read QDQ.
    - `qat_training`: the Trainer settings of quantization-aware fine-tuning.
    - The check every result passes (`cleanai.quantization.check`): the logits of the quantized model
      against fp32's on the last `check_batches` calibration batches, held back from calibration
      (without calib: the example inputs). Below `min_sqnr_db` (output SQNR, dB) or
      `min_top1_agreement` (share of samples keeping their top-1 class) it warns
      (`QuantizationAccuracyWarning`); with `strict=True` it refuses (`QuantizationError`).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["dynamic", "static", "qat", "weight_only", "fp16", "bf16"] = "static"
    backend: Literal["onnxruntime", "torch", "openvino"] = "onnxruntime"
    openvino_method: Literal["auto", "qdq", "nncf"] = "auto"
    calibration: Literal["minmax", "entropy", "percentile"] | None = None
    percentile: float = 99.999
    calibration_batches: int | None = None
    per_channel: bool = True
    activation_dtype: Literal["uint8", "int8"] = "uint8"
    weight_dtype: Literal["int8", "uint8"] = "int8"
    activation_symmetric: bool | None = None  # None: the backend's best (`activations_symmetric`)
    weight_symmetric: bool = True
    reduce_range: bool = False
    op_types: list[str] | None = None
    nodes_to_exclude: list[str] = Field(default_factory=list)
    torch_api: Literal["auto", "torchao", "legacy"] = "auto"
    compile: bool = True
    opset: int | None = None
    ort_optimization: Literal["disable", "basic", "extended"] = "extended"
    qat_training: TrainConfig = Field(default_factory=_default_qat_training)
    check_batches: int = 2
    min_sqnr_db: float = 15.0
    min_top1_agreement: float = 0.8
    strict: bool = False

    @field_validator("percentile")
    @classmethod
    def _percentile_in_range(cls, value: float) -> float:
        if not 50 < value <= 100:
            raise ConfigError(f"percentile must be in (50, 100] (the share of values the range keeps), got {value}")
        return value

    @field_validator("calibration_batches")
    @classmethod
    def _positive_batches(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ConfigError(f"calibration_batches must be None (all batches) or an integer >= 1, got {value}")
        return value

    @field_validator("check_batches")
    @classmethod
    def _positive_check_batches(cls, value: int) -> int:
        if value < 1:
            raise ConfigError(f"check_batches must be an integer >= 1 (batches the result is checked on), got {value}")
        return value

    @field_validator("min_top1_agreement")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ConfigError(f"min_top1_agreement must be a fraction in [0, 1], got {value}")
        return value

    @field_validator("op_types")
    @classmethod
    def _non_empty_op_types(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ConfigError("op_types must be None (the backend's default) or name at least one operator type, "
                             "got an empty list")
        return value

    @model_validator(mode="after")
    def _mode_runs_on_backend(self) -> QuantConfig:
        if self.mode not in SUPPORTED[self.backend]:
            where = [b for b, modes in SUPPORTED.items() if self.mode in modes]
            raise ConfigError(
                f"mode={self.mode!r} does not run on backend={self.backend!r} (it supports "
                f"{', '.join(SUPPORTED[self.backend])}); use backend={where[0]!r}"
                + (" (ONNX Runtime's CPU provider has no fp16/bf16 kernels for Conv and most ops)"
                   if self.mode in ("fp16", "bf16") else "")
            )
        if self.backend == "torch" and self.mode in ("dynamic", "weight_only") and self.op_types is not None:
            allowed = TORCH_DYNAMIC_TYPES if self.torch_api != "torchao" and self.mode == "dynamic" else ("Linear",)
            bad = [t for t in self.op_types if t not in allowed]
            if bad:
                raise ConfigError(
                    f"op_types={self.op_types!r}: {bad} cannot be quantized by backend='torch' mode={self.mode!r} "
                    f"with torch_api={self.torch_api!r}; allowed: {', '.join(allowed)}"
                    + (" (LSTM/GRU need torch_api='legacy')" if set(bad) & {"LSTM", "GRU"} else "")
                )
        if self.mode == "qat" or (self.backend == "torch" and self.mode == "static"):
            fixed = {"calibration": None, "per_channel": True, "activation_dtype": "uint8", "weight_dtype": "int8",
                     "activation_symmetric": False, "weight_symmetric": True}
            actual = {**{k: getattr(self, k) for k in fixed}, "activation_symmetric": self.activations_symmetric()}
            bad = {k: value for k, value in actual.items() if value != fixed[k]}
            if bad:
                raise ConfigError(
                    f"mode={self.mode!r} on backend={self.backend!r} quantizes with torch's X86InductorQuantizer, "
                    f"which fixes {', '.join(f'{k}={v!r}' for k, v in fixed.items())}; got {bad}. "
                    "Use backend='onnxruntime' mode='static' to choose calibration, granularity and dtypes"
                )
            if self.op_types is not None and not set(self.op_types) <= set(PT2E_TYPES):
                raise ConfigError(f"op_types={self.op_types!r}: mode={self.mode!r} on backend={self.backend!r} "
                                 f"quantizes torch.nn layer types {', '.join(PT2E_TYPES)} (None: both)")
        if self.openvino_method != "auto" and self.backend != "openvino":
            raise ConfigError(f"openvino_method={self.openvino_method!r} chooses how backend='openvino' quantizes; "
                              f"got backend={self.backend!r}")
        conflicts = self.nncf_conflicts() if self.backend == "openvino" and self.openvino_method == "nncf" else {}
        if conflicts:
            raise ConfigError(f"openvino_method='nncf' calibrates with NNCF's own settings, so {conflicts} cannot "
                              "apply; use openvino_method='qdq' to choose calibration, granularity and dtypes")
        if self.torch_api != "auto" and not (self.backend == "torch" and self.mode == "dynamic"):
            raise ConfigError(f"torch_api={self.torch_api!r} chooses the torch dynamic-quantization API, so it needs "
                             f"backend='torch' and mode='dynamic', got backend={self.backend!r} mode={self.mode!r}")
        return self

    def activations_symmetric(self) -> bool:
        """`activation_symmetric`, or when unset: symmetric for NNCF (its PERFORMANCE preset), asymmetric otherwise."""
        if self.activation_symmetric is not None:
            return self.activation_symmetric
        return self.backend == "openvino" and self.openvino_method == "nncf"

    def nncf_conflicts(self) -> dict[str, Any]:
        """The fields set away from what NNCF's quantizer fixes (its own calibration, per-channel u8/i8)."""
        fixed = {"calibration": None, "per_channel": True, "activation_dtype": "uint8", "weight_dtype": "int8",
                 "weight_symmetric": True, "op_types": None}
        return {k: getattr(self, k) for k, v in fixed.items() if getattr(self, k) != v}

    @property
    def is_static(self) -> bool:
        """True when activation ranges are fixed ahead of time (static or qat), as Optimum's flag."""
        return self.mode in ("static", "qat")

    @property
    def needs_calibration(self) -> bool:
        """True when `quantize` needs `calib` batches (static calibration, or QAT training data)."""
        return self.mode in ("static", "qat")

    def describe(self) -> str:
        """A short human label, e.g. `onnxruntime static uint8/int8 per-channel minmax`."""
        if self.mode in ("fp16", "bf16"):
            return f"{self.backend} {self.mode}"
        parts = [self.backend, self.mode]
        if self.mode in ("static", "qat"):
            parts.append(f"{self.activation_dtype}/{self.weight_dtype}")
        parts.append("per-channel" if self.per_channel else "per-tensor")
        if self.backend == "openvino" and self.openvino_method == "nncf":
            return " ".join(["openvino static nncf", *(["symmetric"] if self.activations_symmetric() else []),
                             *([f"{len(self.nodes_to_exclude)} fp32"] if self.nodes_to_exclude else [])])
        if self.mode == "static" and self.backend in ("onnxruntime", "openvino"):
            method = self.calibration or "minmax"
            parts.append(method + (f"@{self.percentile:g}" if method == "percentile" else ""))
        if self.reduce_range:
            parts.append("reduce-range")
        if self.nodes_to_exclude:
            parts.append(f"{len(self.nodes_to_exclude)} fp32")
        return " ".join(parts)

    # ------------------------------------------------------------------ presets (Optimum style)

    @classmethod
    def preset(cls, name: str, **kwargs: Any) -> QuantConfig:
        """Build the preset `name` (see `list_presets()`); keyword arguments as the preset's constructor."""
        return PRESETS.get(name)(cls, **kwargs)

    @classmethod
    def auto(cls, is_static: bool = True, *, per_channel: bool = True, backend: str = "onnxruntime",
             **overrides: Any) -> QuantConfig:
        """The preset for this CPU: arm64 on ARM, avx512_vnni on x86 with VNNI or AMX, else avx2."""
        preset = cls.arm64 if is_arm() else cls.avx512_vnni if has_int8_dot() else cls.avx2
        return preset(is_static, per_channel=per_channel, backend=backend, **overrides)

    @classmethod
    def avx512_vnni(cls, is_static: bool = True, *, per_channel: bool = True, backend: str = "onnxruntime",
                    **overrides: Any) -> QuantConfig:
        """x86 with AVX-512 VNNI (Cascade Lake and later, Zen 4): u8 activations x s8 weights, full 8-bit range."""
        return cls._preset(is_static, per_channel, backend, overrides, activation_dtype="uint8",
                           weight_dtype="int8", reduce_range=False)

    @classmethod
    def avx2(cls, is_static: bool = True, *, per_channel: bool = True, backend: str = "onnxruntime",
             **overrides: Any) -> QuantConfig:
        """x86 with AVX2 and no VNNI: u8 x s8 with 7-bit weights (`reduce_range`), so u8 x s8 pair sums cannot
        saturate int16, as ONNX Runtime recommends for such CPUs."""
        return cls._preset(is_static, per_channel, backend, overrides, activation_dtype="uint8",
                           weight_dtype="int8", reduce_range=True)

    @classmethod
    def arm64(cls, is_static: bool = True, *, per_channel: bool = True, backend: str = "onnxruntime",
              **overrides: Any) -> QuantConfig:
        """ARM64 (Neoverse, Apple silicon, Cortex-A): u8 activations x s8 weights, the fastest pair on
        lower-end cores and as fast as u8 x u8 on the others (Optimum's choice)."""
        return cls._preset(is_static, per_channel, backend, overrides, activation_dtype="uint8",
                           weight_dtype="int8", reduce_range=False)

    @classmethod
    def _preset(cls, is_static: bool, per_channel: bool, backend: str, overrides: dict[str, Any],
                **defaults: Any) -> QuantConfig:
        return cls.model_validate({"mode": "static" if is_static else "dynamic", "backend": backend,
                                   "per_channel": per_channel, **defaults, **overrides})


PRESETS: Registry[Callable[..., QuantConfig]] = Registry("quantization preset")
PRESETS.register("auto", lambda cls, **kw: cls.auto(**kw))
PRESETS.register("avx512_vnni", lambda cls, **kw: cls.avx512_vnni(**kw))
PRESETS.register("avx2", lambda cls, **kw: cls.avx2(**kw))
PRESETS.register("arm64", lambda cls, **kw: cls.arm64(**kw))


def list_presets() -> list[str]:
    """Names accepted by `QuantConfig.preset`."""
    return PRESETS.names()

"""Affine (uniform) quantization maths, in plain torch so every step can be read and checked.

    q = clamp(round(x / scale) + zero_point, qmin, qmax)        x_hat = (q - zero_point) * scale

`qparams` turns an observed range into `(scale, zero_point)` exactly as torch's MinMax observers
do (per tensor, or per channel when the range is a vector); `quantize` / `dequantize` reproduce
`torch.quantize_per_tensor` / `torch.quantize_per_channel` bit for bit (round half to even,
multiply by the float32 reciprocal of the scale). `quantization_error` measures what rounding and
clipping cost (max |error|, MSE, SQNR in dB), and `layer_errors` tabulates that cost for every
Linear / Conv layer of a model: its weights and, given calibration batches, its input activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from cleanai._batches import (
    call_model,
    model_device,
    split_batch,
    take_batches,
    to_device,
)
from cleanai.errors import ConfigError

QDtype = Literal["int8", "uint8"]
QDTYPES: tuple[str, ...] = ("int8", "uint8")
_TORCH_INT = {"int8": torch.int8, "uint8": torch.uint8}
_EPS = torch.finfo(torch.float32).eps
# Layers whose weights quantization touches; channels (output features) lie on dim 0 of their weight.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


def qrange(dtype: QDtype = "int8", reduce_range: bool = False) -> tuple[int, int]:
    """Integer range `(qmin, qmax)` of `dtype`; `reduce_range` drops one bit (7-bit values, as torch's x86
    observers and ONNX Runtime's `reduce_range` do)."""
    if dtype not in _TORCH_INT:
        raise ConfigError(f"dtype must be one of {', '.join(QDTYPES)}, got {dtype!r}")
    info = torch.iinfo(_TORCH_INT[dtype])
    qmin, qmax = info.min, info.max
    return (qmin // 2, qmax // 2) if reduce_range else (qmin, qmax)


def tensor_range(x: torch.Tensor, axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(min, max)` of `x`: scalars, or one value per slice along `axis` (per-channel)."""
    x = x.detach().float()
    if axis is None:
        return x.min(), x.max()
    dims = [d for d in range(x.dim()) if d != axis % x.dim()]
    return x.amin(dim=dims), x.amax(dim=dims)


def qparams(min_val: torch.Tensor | float, max_val: torch.Tensor | float, dtype: QDtype = "int8",
            symmetric: bool = False, reduce_range: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int64) mapping `[min_val, max_val]` onto the integer range of `dtype`.

    The range is widened to include 0 (so 0 is exact). Symmetric: scale = max|range| / ((qmax - qmin) / 2)
    and zero point 0 (the middle of the range for uint8). Asymmetric: scale = (max - min) / (qmax - qmin)
    and zero_point = qmin - round(min / scale). Vectors of minima/maxima give per-channel parameters.
    """
    qmin, qmax = qrange(dtype, reduce_range)
    lo = torch.as_tensor(min_val, dtype=torch.float32)
    hi = torch.as_tensor(max_val, dtype=torch.float32)
    if lo.shape != hi.shape:
        raise ConfigError(f"min_val and max_val must have the same shape, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if bool((lo > hi).any()):
        raise ConfigError(f"min_val must be <= max_val, got min {lo.tolist()} > max {hi.tolist()}")
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / (float(qmax - qmin) / 2), min=_EPS)
        zero_point = torch.full_like(lo, 0 if dtype == "int8" else (qmin + qmax + 1) // 2, dtype=torch.int64)
    else:
        scale = torch.clamp((hi - lo) / float(qmax - qmin), min=_EPS)
        zero_point = torch.clamp(qmin - torch.round(lo / scale).to(torch.int64), qmin, qmax)
    return scale, zero_point


def _params(scale: torch.Tensor | float, zero_point: torch.Tensor | int,
            axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale as float32 and zero point as int64; one-element tensors count as per-tensor parameters."""
    scale_t = torch.as_tensor(scale, dtype=torch.float32)
    zp_t = torch.as_tensor(zero_point, dtype=torch.int64)
    if axis is None:
        if scale_t.numel() != 1 or zp_t.numel() != 1:
            raise ConfigError(f"{scale_t.numel()} scales given without axis: pass the dimension of x they index "
                             "(per-channel), or one scale and zero point (per-tensor)")
        return scale_t.reshape(()), zp_t.reshape(())
    return scale_t, zp_t


def _broadcast(v: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return v.reshape(shape)


def quantize(x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | int,
             dtype: QDtype = "int8", axis: int | None = None) -> torch.Tensor:
    """Integers (torch.int8 / torch.uint8) for `x`: clamp(round(x * (1 / scale)) + zero_point), ties to even,
    with the float32 rounding steps of torch's kernels, so the integers equal torch's bit for bit.

    With vector `scale` / `zero_point`, `axis` says which dimension of `x` they index (per-channel).
    Values are clamped to the full range of `dtype`, as torch does: `reduce_range` only narrows the
    range `qparams` maps onto (its symmetric scale can still round the extreme value one step beyond).
    """
    qmin, qmax = qrange(dtype)
    scale_t, zp_t = _params(scale, zero_point, axis)
    inv = _broadcast(torch.reciprocal(scale_t), x, axis)
    zp = _broadcast(zp_t, x, axis)
    x = x.detach().float()
    if axis is None:
        # torch's per-tensor CPU kernel computes x * inv + zero_point as one fused multiply-add (rounded
        # once to float32; the float32 product is exact in float64), then rounds half to even.
        q = torch.round((x.double() * inv.double() + zp).float())
    else:
        # its per-channel kernel rounds the product to float32, adds the zero point in float32, then rounds.
        q = torch.round(x * inv + zp.float())
    return torch.clamp(q, qmin, qmax).to(_TORCH_INT[dtype])


def dequantize(q: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | int,
               axis: int | None = None) -> torch.Tensor:
    """Real values (float32) of integers `q`: (q - zero_point) * scale."""
    scale_t, zp_t = _params(scale, zero_point, axis)
    return (q.to(torch.int64) - _broadcast(zp_t, q, axis)).float() * _broadcast(scale_t, q, axis)


def fake_quantize(x: torch.Tensor, dtype: QDtype = "int8", symmetric: bool = False, axis: int | None = None,
                  reduce_range: bool = False, range_: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """`x` after a quantize -> dequantize round trip, with parameters from `range_` (default: x's own min/max)."""
    lo, hi = range_ if range_ is not None else tensor_range(x, axis)
    scale, zp = qparams(lo, hi, dtype, symmetric, reduce_range)
    return dequantize(quantize(x, scale, zp, dtype, axis), scale, zp, axis)


@dataclass(frozen=True)
class QuantError:
    """How far a reconstruction is from the original: max |error|, mean squared error and SQNR (dB).

    SQNR = 10 log10(sum x^2 / sum (x - x_hat)^2); infinite when the reconstruction is exact.
    """

    max_abs: float
    mse: float
    sqnr_db: float


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def quantization_error(x: torch.Tensor, x_hat: torch.Tensor) -> QuantError:
    """Error statistics of `x_hat` as an approximation of `x` (same shape)."""
    if x.shape != x_hat.shape:
        raise ConfigError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    x64, err = x.detach().double(), (x.detach().double() - x_hat.detach().double())
    noise = float(err.square().sum())
    return QuantError(max_abs=float(err.abs().max()) if err.numel() else 0.0,
                      mse=noise / max(err.numel(), 1), sqnr_db=_sqnr(float(x64.square().sum()), noise))


@dataclass(frozen=True)
class LayerError:
    """Quantization error of one layer: its weights, and its input activations when calibration data was given."""

    layer: str
    type: str
    params: int
    weight: QuantError
    activation: QuantError | None = None

    def to_dict(self) -> dict[str, Any]:
        """A flat row for tables and JSON: `weight_max_abs`, `weight_sqnr_db`, `activation_mse`, ..."""
        row: dict[str, Any] = {"layer": self.layer, "type": self.type, "params": self.params}
        for prefix, err in (("weight", self.weight), ("activation", self.activation)):
            values = asdict(err) if err is not None else dict.fromkeys(("max_abs", "mse", "sqnr_db"))
            row.update({f"{prefix}_{key}": value for key, value in values.items()})
        return row


class _InputErrorAccumulator:
    """Running sums of the error an activation quantizer with a fixed range makes on a layer's inputs."""

    def __init__(self) -> None:
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.signal = self.noise = self.max_abs = 0.0
        self.count = 0

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = tensor_range(x)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def measure(self, x: torch.Tensor, dtype: QDtype, symmetric: bool) -> None:
        assert self.lo is not None and self.hi is not None
        x = x.detach().float()
        err = x.double() - fake_quantize(x, dtype, symmetric, None, False, (self.lo, self.hi)).double()
        self.signal += float(x.double().square().sum())
        self.noise += float(err.square().sum())
        self.max_abs = max(self.max_abs, float(err.abs().max()) if err.numel() else 0.0)
        self.count += err.numel()

    def result(self) -> QuantError:
        return QuantError(self.max_abs, self.noise / max(self.count, 1), _sqnr(self.signal, self.noise))


def layer_errors(model: nn.Module, calib: Iterable[Any] | None = None, *, weight_dtype: QDtype = "int8",
                 per_channel: bool = True, weight_symmetric: bool = True, activation_dtype: QDtype = "uint8",
                 activation_symmetric: bool = False, reduce_range: bool = False, max_batches: int = 8,
                 layer_types: Sequence[type[nn.Module]] = WEIGHT_LAYERS) -> list[LayerError]:
    """Per-layer quantization error table: weights (per output channel, or per tensor) for every layer of
    `layer_types`, plus input activations when `calib` batches are given.

    Activations follow static min/max calibration: the range is observed over the first
    `max_batches` batches, then the error of quantizing those same inputs with that range is measured.
    `reduce_range` applies to weights (as in ONNX Runtime). The model is only read (eval mode during
    the passes, its training flag restored after).
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, tuple(layer_types))}
    if not layers:
        kinds = ", ".join(t.__name__ for t in layer_types)
        raise ConfigError(f"{type(model).__name__} has no layer of the types quantization touches ({kinds})")
    weights = {}
    for name, m in layers.items():
        w = m.weight.detach()
        axis = channel_axis(m) if per_channel else None
        weights[name] = quantization_error(w, fake_quantize(w, weight_dtype, weight_symmetric, axis, reduce_range))
    acts: dict[str, _InputErrorAccumulator] = {}
    if calib is not None:
        batches = take_batches(calib, max_batches, "layer_errors")
        acts = {name: _InputErrorAccumulator() for name in layers}
        _run_with_input_hooks(model, layers, batches, lambda name, x: acts[name].observe(x))
        _run_with_input_hooks(model, {n: m for n, m in layers.items() if acts[n].lo is not None}, batches,
                              lambda name, x: acts[name].measure(x, activation_dtype, activation_symmetric))
    return [LayerError(name, type(m).__name__, sum(p.numel() for p in m.parameters(recurse=False)), weights[name],
                       acts[name].result() if name in acts and acts[name].count else None)
            for name, m in layers.items()]


def channel_axis(layer: nn.Module) -> int:
    """Dimension of the layer's weight that indexes output channels (1 for transposed convolutions, else 0)."""
    return 1 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 0


def _run_with_input_hooks(model: nn.Module, layers: dict[str, nn.Module], batches: list[Any],
                          fn: Callable[[str, torch.Tensor], None]) -> None:
    """Run `batches` through `model` in eval mode, calling `fn(name, input)` on each listed layer's float input."""
    def hook(name: str) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                fn(name, args[0])
        return record

    was_training = model.training
    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers.items()]
    device = model_device(model)
    try:
        model.eval()
        with torch.inference_mode():
            for batch in batches:
                call_model(model, to_device(split_batch(batch)[0], device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

"""The check every `quantize()` result passes before it is returned: it runs, and its outputs stay close to fp32's.

The fp32 logits are computed first, on calibration batches held back from calibration (or, without
calibration data, on the example inputs), before any export or training: a model whose output is
not logits is refused before work is spent on it. The artifact then runs on the same inputs; the
SQNR of its logits against fp32's (dB) and the share of samples whose top-1 class it keeps are
stored on it (`runner.quant_check`, shown in its benchmark row). Below `QuantConfig.min_sqnr_db` or
`min_top1_agreement` a `QuantizationAccuracyWarning` is issued, or, with `strict=True`, a
`QuantizationError` refuses the artifact.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from cleanai._batches import call_model, logits_of
from cleanai.quantization._common import Inputs
from cleanai.quantization.affine import quantization_error
from cleanai.quantization.config import QuantConfig, QuantizationError

WHAT_TO_TRY = ("try backend='onnxruntime' mode='static' (QuantConfig.auto()), keeping the most sensitive layers in "
               "fp32 (nodes_to_exclude), or quantize_with_accuracy_budget, which searches calibrations, granularities "
               "and fp32 fallbacks against an accuracy budget")


class QuantizationAccuracyWarning(UserWarning):
    """A quantized artifact's outputs are farther from fp32's than the QuantConfig thresholds allow, or unchecked."""


@dataclass(frozen=True)
class QuantCheck:
    """How close a quantized artifact's logits are to fp32's on `samples` inputs (unseen by calibration if `held_out`)."""

    sqnr_db: float
    top1_agreement: float | None  # None when the output is not one row of class scores per sample
    samples: int
    held_out: bool

    def failures(self, config: QuantConfig) -> list[str]:
        """The thresholds of `config` this check misses, as readable phrases (empty: it passes)."""
        out = []
        if not self.sqnr_db >= config.min_sqnr_db:  # NaN fails too
            out.append(f"output SQNR {self.sqnr_db:.1f} dB < min_sqnr_db {config.min_sqnr_db:g}")
        if self.top1_agreement is not None and not self.top1_agreement >= config.min_top1_agreement:
            out.append(f"top-1 agreement {self.top1_agreement:.1%} < min_top1_agreement "
                       f"{config.min_top1_agreement:.1%}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    """The inputs an artifact is checked on and the fp32 logits for them."""

    inputs: list[Inputs]
    reference: list[torch.Tensor]
    held_out: bool  # calibration did not see these inputs
    source: str  # what they are, for messages


def hold_back(inputs: list[Inputs], config: QuantConfig) -> tuple[list[Inputs], list[Inputs], bool]:
    """Split calibration inputs into (calibration, check, held out?): static modes keep the last
    `config.check_batches` batches (at most half of them) away from calibration; other modes calibrate
    on nothing, so every batch is unseen."""
    if not config.is_static:
        return inputs, inputs[-config.check_batches:], True
    held = min(config.check_batches, len(inputs) // 2)
    if held < 1:
        return inputs, inputs, False
    return inputs[:-held], inputs[-held:], True


def make_probe(model: nn.Module, inputs: list[Inputs], held_out: bool, source: str, who: str) -> Probe:
    """Run fp32 `model` on `inputs` and keep its logits; refuse a model whose output is not logits, up front."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = [call_model(model, x) for x in inputs]
    except Exception as exc:
        raise QuantizationError(f"{who}: the fp32 {type(model).__name__} fails on its example/calibration inputs "
                                f"({type(exc).__name__}: {exc}); quantization was not attempted") from exc
    finally:
        model.train(was_training)
    try:
        reference = [logits_of(out).detach().float() for out in outputs]
    except TypeError:
        raise QuantizationError(
            f"{who}: {type(model).__name__} returns a {type(outputs[0]).__name__}; quantize needs a model that "
            "returns a logits Tensor or an object with a .logits Tensor (as Hugging Face models do): wrap it in a "
            "module whose forward returns its logits") from None
    return Probe(list(inputs), reference, held_out, source)


def measure(runner: Any, probe: Probe, who: str, artifact: str = "the quantized model") -> QuantCheck:
    """Run `runner` on the probe's inputs and compare with fp32; store the result as `runner.quant_check`.

    A runner that fails on those inputs is refused (a QuantizationError): it would fail its user the same way.
    `artifact` names what is checked in that message (an fp32 runtime candidate is not "the quantized model"); the
    advice on quantization settings is given only for the quantized model.
    """
    try:
        outputs = [runner(x).detach().float() for x in probe.inputs]
    except Exception as exc:
        advice = f" {WHAT_TO_TRY[0].upper()}{WHAT_TO_TRY[1:]}" if artifact == "the quantized model" else ""
        raise QuantizationError(f"{who}: {artifact} fails on {probe.source}, which fp32 runs on "
                                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                                f"; it is not returned.{advice}") from exc
    shapes = [(tuple(r.shape), tuple(o.shape)) for r, o in zip(probe.reference, outputs) if r.shape != o.shape]
    if shapes:
        raise QuantizationError(f"{who}: {artifact} returns shape {shapes[0][1]} where fp32 returns "
                                f"{shapes[0][0]}; it is not returned")
    reference, output = torch.cat([r.reshape(len(r), -1) for r in probe.reference]), torch.cat(
        [o.reshape(len(o), -1) for o in outputs])
    sqnr = quantization_error(reference, output).sqnr_db if bool(torch.isfinite(output).all()) else -math.inf
    agreement = (float((reference.argmax(1) == output.argmax(1)).float().mean())
                 if all(r.dim() == 2 and r.shape[1] > 1 for r in probe.reference) else None)
    check = QuantCheck(sqnr_db=sqnr, top1_agreement=agreement, samples=len(reference), held_out=probe.held_out)
    runner.quant_check = check
    return check


def verify(runner: Any, probe: Probe | None, config: QuantConfig, who: str) -> None:
    """Measure `runner` against fp32 and warn (or, with `config.strict`, refuse) when it misses the thresholds."""
    if probe is None:
        message = (f"{who}: the quantized model was not checked against fp32: no calib batches, no example_inputs "
                   "and no input_size attribute to build inputs from; pass calib or example_inputs")
        if config.strict:
            raise QuantizationError(message)
        runner.quant_check = None
        warnings.warn(message, QuantizationAccuracyWarning, stacklevel=3)
        return
    check = measure(runner, probe, who)
    missed = check.failures(config)
    if not missed:
        return
    message = (f"{who}: outputs far from fp32 on {check.samples} samples of {probe.source}: "
               f"{'; '.join(missed)}. {WHAT_TO_TRY[0].upper()}{WHAT_TO_TRY[1:]}")
    if config.strict:
        raise QuantizationError(message + " (strict=True refuses the result; strict=False returns it with a warning)")
    warnings.warn(message, QuantizationAccuracyWarning, stacklevel=3)

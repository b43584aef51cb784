"""Accuracy-aware quantization: search for a quantized model whose accuracy stays within a budget of fp32's.

The search, in order, stopping at the first variant that meets the budget:

1. the configuration given;
2. the other calibration methods and granularities (per-channel / per-tensor) the backend offers;
3. from the most accurate variant so far, layers kept in fp32 one more at a time, most sensitive
   first. A layer's sensitivity is how much closer to fp32 the model's outputs get (SQNR of the
   logits, in dB, on calibration batches) when that layer alone stays in fp32.

Every variant is evaluated by `cleanai.runtime.evaluate` on the validation data, the code path the
benchmark measures accuracy with; the result keeps every attempt (configuration, accuracy, drop,
artifact size, layers kept in fp32) and, when nothing meets the budget, says what was tried and what
is left to try. Latency is the benchmark's job: measure the chosen runner with `cleanai.benchmark`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cleanai.quantization._common import Inputs, check_quantizable
from cleanai.quantization.affine import quantization_error
from cleanai.quantization.api import make_quantizer
from cleanai.quantization.check import measure
from cleanai.quantization.config import CALIBRATIONS, QuantConfig, QuantizationError
from cleanai.runtime import Evaluation, Runner, artifact_bytes, evaluate
from cleanai.errors import ConfigError

SEARCHABLE_MODES = ("static", "dynamic", "weight_only")


@dataclass
class Attempt:
    """One quantized variant the search built and measured (or failed to build: `error`)."""

    step: str  # "given", "calibration/granularity" or "fp32 fallback"
    config: QuantConfig
    accuracy: float | None = None
    drop: float | None = None
    size_mb: float | None = None
    meets_budget: bool = False
    error: str | None = None

    @property
    def fp32_layers(self) -> list[str]:
        return list(self.config.nodes_to_exclude)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "variant": self.config.describe(), "accuracy": self.accuracy, "drop": self.drop,
                "size_mb": self.size_mb, "fp32_layers": self.fp32_layers,
                "meets_budget": self.meets_budget, "error": self.error, "config": self.config.model_dump(mode="json")}


@dataclass
class BudgetResult:
    """What `quantize_with_accuracy_budget` found: every attempt, and the chosen runner (None if nothing met
    the budget)."""

    baseline: Evaluation  # the fp32 model's metrics on the validation data
    baseline_backend: str
    metric: str
    max_drop: float
    attempts: list[Attempt]
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (layer, logits SQNR dB with it in fp32)
    runner: Runner | None = None
    chosen: Attempt | None = None

    @property
    def met(self) -> bool:
        return self.chosen is not None

    @property
    def baseline_accuracy(self) -> float:
        return float(self.baseline.metrics[self.metric])

    @property
    def best(self) -> Attempt | None:
        """The most accurate attempt (the smallest among equals), met or not."""
        done = [a for a in self.attempts if a.accuracy is not None]
        return max(done, key=lambda a: (a.accuracy, -(a.size_mb or 0.0))) if done else None

    def summary(self) -> str:
        """Plain-text account of the search: the budget, each attempt, and the outcome or what is left to try."""
        floor = self.baseline_accuracy - self.max_drop
        header = (f"fp32 {self.metric} {self.baseline_accuracy:.4f} ({self.baseline_backend}, "
                  f"{self.baseline.samples} samples); budget: drop <= {self.max_drop:.4f}, "
                  f"so {self.metric} >= {floor:.4f}")
        lines = [header]
        for i, a in enumerate(self.attempts, 1):
            if a.error is not None:
                lines.append(f"{i:2d}. [{a.step}] {a.config.describe()}: failed: {a.error}")
                continue
            kept = f"; fp32: {', '.join(a.fp32_layers)}" if a.fp32_layers else ""
            lines.append(f"{i:2d}. [{a.step}] {a.config.describe()}: {self.metric} {a.accuracy:.4f} "
                         f"(drop {a.drop:+.4f}), {a.size_mb:.3f} MB"
                         f"{' - meets the budget' if a.meets_budget else ''}{kept}")
        if self.chosen is not None:
            lines.append(f"chosen: {self.chosen.config.describe()} ({self.metric} {self.chosen.accuracy:.4f}, "
                         f"{len(self.chosen.fp32_layers)} layer(s) in fp32)")
            return "\n".join(lines)
        best = self.best
        lines.append(f"no variant met the budget after {len(self.attempts)} attempt(s)"
                     + (f"; the most accurate was {best.config.describe()} with {self.metric} {best.accuracy:.4f} "
                        f"(drop {best.drop:.4f}) keeping {len(best.fp32_layers)} layer(s) in fp32" if best else ""))
        if self.sensitivity:
            ranked = ", ".join(f"{name} ({sqnr:.1f} dB)" for name, sqnr in self.sensitivity[:5])
            lines.append(f"most sensitive layers (logits SQNR with the layer alone in fp32): {ranked}")
        lines.append("left to try: a larger max_drop, more or more representative calibration batches, "
                     "max_fp32_layers above the number tried, or quantization-aware training (mode='qat')")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "max_drop": self.max_drop, "baseline": self.baseline.metrics,
                "baseline_backend": self.baseline_backend, "baseline_samples": self.baseline.samples,
                "met": self.met, "chosen": self.attempts.index(self.chosen) if self.chosen is not None else None,
                "attempts": [a.to_dict() for a in self.attempts], "sensitivity": self.sensitivity}


def quantize_with_accuracy_budget(
    model: nn.Module,
    config: QuantConfig,
    calib: Iterable[Any],
    val_loader: Iterable[Any],
    max_drop: float = 0.01,
    *,
    metric: str = "accuracy",
    example_inputs: Inputs | None = None,
    workdir: str | os.PathLike[str] | None = None,
    calibrations: Sequence[str] = CALIBRATIONS,
    granularities: Sequence[bool] = (True, False),
    max_fp32_layers: int | None = None,
    sensitivity_batches: int = 4,
) -> BudgetResult:
    """Quantize `model` so that `metric` on `val_loader` drops by at most `max_drop` (a fraction: 0.01 = 1 point).

    `config` is the starting point (modes static, dynamic or weight_only). `calib` supplies the
    calibration batches and the data the layer sensitivities are measured on. `max_fp32_layers`
    caps how many layers may be kept in fp32 (default: all but one). Each attempt records its accuracy
    on the whole of `val_loader` and the size of its artifact.
    """
    if config.mode not in SEARCHABLE_MODES:
        raise QuantizationError(f"the accuracy-aware search tries post-training modes ({', '.join(SEARCHABLE_MODES)}); "
                                f"got mode={config.mode!r}")
    if not max_drop >= 0:
        raise ConfigError(f"max_drop must be a non-negative fraction of {metric} (0.01 = 1 point), got {max_drop!r}")
    bad = [c for c in calibrations if c not in CALIBRATIONS]
    if bad or not calibrations or not granularities:
        raise ConfigError(f"calibrations must name some of minmax, entropy, percentile (got {list(calibrations)}) and "
                         f"granularities some of True (per-channel), False (per-tensor) (got {list(granularities)})")
    check_quantizable(model, config)
    quantizer = make_quantizer(model, config, calib, example_inputs, workdir)
    if not quantizer.calib_inputs:
        raise QuantizationError("the accuracy-aware search needs calib batches (for calibration and layer sensitivity)")
    try:
        fp32 = quantizer.fp32_runner()
        baseline = evaluate(fp32, val_loader, (metric,))
        result = BudgetResult(baseline=baseline, baseline_backend=fp32.backend, metric=metric, max_drop=max_drop,
                              attempts=[])
        _Search(quantizer, result, val_loader).run(config, calibrations, granularities, max_fp32_layers,
                                                          sensitivity_batches)
    finally:
        quantizer.close()
    return result


class _Search:
    def __init__(self, quantizer: Any, result: BudgetResult, val_loader: Iterable[Any]) -> None:
        self.quantizer = quantizer
        self.result = result
        self.val_loader = val_loader

    def run(self, config: QuantConfig, calibrations: Sequence[str], granularities: Sequence[bool],
            max_fp32_layers: int | None, sensitivity_batches: int) -> None:
        if self._try(config, "given"):
            return
        for variant in _variants(config, calibrations, granularities):
            if self._try(variant, "calibration/granularity"):
                return
        best = self.result.best
        if best is None:
            return
        candidates = [c for c in self.quantizer.candidates(best.config) if c not in best.config.nodes_to_exclude]
        limit = len(candidates) - 1 if max_fp32_layers is None else min(max_fp32_layers, len(candidates) - 1)
        if limit < 1:
            return
        ranking = self._sensitivity(best.config, candidates, sensitivity_batches)
        self.result.sensitivity = ranking
        for k in range(1, limit + 1):
            kept = [name for name, _ in ranking[:k]]
            variant = best.config.model_copy(update={"nodes_to_exclude": [*best.config.nodes_to_exclude, *kept]})
            if self._try(variant, "fp32 fallback"):
                return

    def _try(self, config: QuantConfig, step: str) -> bool:
        """Build and measure one variant; record it; True when it meets the budget (and becomes the result)."""
        attempt = Attempt(step=step, config=config)
        self.result.attempts.append(attempt)
        try:
            runner = self.quantizer.build(config)
            if self.quantizer.probe is not None:  # kept on the runner: its SQNR against fp32 shows in its rows
                measure(runner, self.quantizer.probe, f"quantize ({config.describe()})")
        except QuantizationError as exc:
            attempt.error = str(exc)
            return False
        attempt.accuracy = float(evaluate(runner, self.val_loader, (self.result.metric,)).metrics[self.result.metric])
        attempt.drop = self.result.baseline_accuracy - attempt.accuracy
        attempt.size_mb = artifact_bytes(runner) / 1e6
        attempt.meets_budget = attempt.drop <= self.result.max_drop + 1e-12
        if attempt.meets_budget:
            self.result.chosen, self.result.runner = attempt, runner
        return attempt.meets_budget

    def _sensitivity(self, config: QuantConfig, candidates: list[str], batches: int) -> list[tuple[str, float]]:
        """Candidates ranked by the logits SQNR (dB, vs fp32) of the model with that layer alone in fp32, best first."""
        inputs = self.quantizer.calib_inputs[:max(1, batches)]
        reference = _outputs(self.quantizer.fp32_runner(), inputs)
        scores = []
        for name in candidates:
            variant = config.model_copy(update={"nodes_to_exclude": [*config.nodes_to_exclude, name]})
            try:
                runner = self.quantizer.build(variant)
            except QuantizationError:
                continue  # keeping this layer leaves nothing quantized: not a useful fallback
            scores.append((name, quantization_error(reference, _outputs(runner, inputs)).sqnr_db))
        return sorted(scores, key=lambda item: -item[1])


def _outputs(runner: Runner, inputs: list[Inputs]) -> torch.Tensor:
    return torch.cat([runner(x).float().reshape(-1) for x in inputs])


def _variants(config: QuantConfig, calibrations: Sequence[str], granularities: Sequence[bool]) -> list[QuantConfig]:
    """The other calibration x granularity settings the backend lets `config` change, the given one left out."""
    if config.mode == "static" and (config.backend == "onnxruntime" or config.backend == "openvino"
                                    and config.openvino_method != "nncf"):
        grid = [{"calibration": c, "per_channel": g} for g in granularities for c in calibrations]
    elif config.mode in ("dynamic", "weight_only"):
        grid = [{"per_channel": g} for g in granularities]
    else:  # torch static: X86InductorQuantizer fixes both
        grid = []
    given = config.model_dump()
    given["calibration"] = given["calibration"] or "minmax"
    out = []
    for update in grid:
        variant = config.model_copy(update=update)
        if any(given[k] != v for k, v in update.items()):
            out.append(variant)
    return out

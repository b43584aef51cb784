"""Accuracy-aware search on a CNN trained on real digits: it meets the budget or explains what it tried."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from cleanai.benchmark import BenchmarkConfig, benchmark
from cleanai.quantization import (
    LegacyQuantizationWarning,
    QuantConfig,
    QuantizationError,
    quantize_with_accuracy_budget,
)

# percentile=60 keeps only the middle 60% of each activation's range: a calibration that ruins accuracy.
CLIPPED = QuantConfig.avx2(calibration="percentile", percentile=60.0)


def calib_batches(loaders: object, n: int = 4) -> list:
    return list(itertools.islice(loaders.train, n))  # type: ignore[attr-defined]


def test_other_calibrations_are_tried_before_keeping_layers_in_fp32(digits: tuple) -> None:
    model, loaders = digits
    result = quantize_with_accuracy_budget(model, CLIPPED, calib_batches(loaders), loaders.val, max_drop=0.03,
                                           calibrations=("percentile", "minmax"), granularities=(True,))
    assert result.met and result.baseline_backend == "onnxruntime"
    first, chosen = result.attempts
    assert first.step == "given" and first.drop > 0.03 and not first.meets_budget
    assert chosen is result.chosen and chosen.step == "calibration/granularity"
    assert chosen.config.calibration == "minmax" and chosen.drop <= 0.03 and chosen.fp32_layers == []
    assert result.baseline_accuracy > 0.9
    check = result.runner.quant_check  # measured against fp32 on calibration batches held back from calibration
    assert check.held_out and check.samples == 64 and check.sqnr_db > 10


def test_sensitive_layers_fall_back_to_fp32_until_the_budget_holds(digits: tuple) -> None:
    model, loaders = digits
    calib, search = calib_batches(loaders), dict(calibrations=("percentile",), granularities=(True,))
    # The drops depend on the CPU's kernels (the trained weights differ in the last bits), so the budget is
    # the best fallback's drop, read from a search on the same batches that cannot meet a budget of 0.
    probe = quantize_with_accuracy_budget(model, CLIPPED, calib, loaders.val, max_drop=0.0, **search)
    budget = min(a.drop for a in probe.attempts if a.step == "fp32 fallback")
    assert budget < probe.attempts[0].drop  # keeping layers in fp32 helps, else this test shows nothing
    result = quantize_with_accuracy_budget(model, CLIPPED, calib, loaders.val, max_drop=budget, **search)
    assert result.met
    chosen = result.chosen
    assert chosen is result.attempts[-1] and chosen.step == "fp32 fallback" and chosen.drop <= budget
    assert all(not a.meets_budget and a.drop > budget for a in result.attempts[:-1])
    ranked = [name for name, _ in result.sensitivity]
    assert len(ranked) == 4 and all(name.endswith(("Conv", "Gemm")) for name in ranked)
    assert chosen.fp32_layers == ranked[:len(chosen.fp32_layers)]  # most sensitive first, one more per attempt
    assert [len(a.fp32_layers) for a in result.attempts] == list(range(len(result.attempts)))
    again = benchmark(result.runner, loaders.val, config=BenchmarkConfig(runs=2, warmup=0, throughput_runs=0,
                                                                         progress=False))
    assert again.accuracy == chosen.accuracy  # the returned runner is the measured one
    assert "chosen:" in result.summary() and f"{len(chosen.fp32_layers)} layer(s) in fp32" in result.summary()


def test_an_unreachable_budget_is_reported_with_every_attempt(digits: tuple) -> None:
    model, loaders = digits
    config = QuantConfig.avx2(calibration="percentile", percentile=51.0)
    result = quantize_with_accuracy_budget(model, config, calib_batches(loaders), loaders.val, max_drop=0.0,
                                           calibrations=("percentile",), granularities=(True,), max_fp32_layers=1)
    assert not result.met and result.runner is None and result.chosen is None
    assert [a.step for a in result.attempts] == ["given", "fp32 fallback"]
    text = result.summary()
    assert "no variant met the budget after 2 attempt(s)" in text and "most sensitive layers" in text
    assert "left to try" in text and text.count("percentile@51") >= 2
    row = json.loads(json.dumps(result.to_dict()))
    assert row["met"] is False and len(row["attempts"]) == 2 and row["attempts"][1]["fp32_layers"]


def test_torch_backend_is_searched_the_same_way(digits: tuple) -> None:
    model, loaders = digits
    with pytest.warns(LegacyQuantizationWarning):
        result = quantize_with_accuracy_budget(model, QuantConfig(backend="torch", mode="dynamic"),
                                               calib_batches(loaders, 2), loaders.val, max_drop=0.02)
    assert result.baseline_backend == "torch" and result.met
    assert result.attempts[0].config.backend == "torch" and result.attempts[0].size_mb is not None


def test_bad_search_requests_are_refused(digits: tuple) -> None:
    model, loaders = digits
    with pytest.raises(QuantizationError, match="tries post-training modes"):
        quantize_with_accuracy_budget(model, QuantConfig(mode="qat"), calib_batches(loaders), loaders.val)
    with pytest.raises(ValueError, match="max_drop must be a non-negative fraction"):
        quantize_with_accuracy_budget(model, QuantConfig.avx2(), calib_batches(loaders), loaders.val, max_drop=-0.1)
    with pytest.raises(ValueError, match="calibrations must name some of minmax, entropy, percentile"):
        quantize_with_accuracy_budget(model, QuantConfig.avx2(), calib_batches(loaders), loaders.val,
                                      calibrations=("kl",))
    with pytest.raises(QuantizationError, match="no quantizable layers"):
        quantize_with_accuracy_budget(nn.Sequential(nn.Flatten()), QuantConfig.avx2(), [torch.zeros(2, 4)],
                                      loaders.val)

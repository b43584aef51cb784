"""Benchmark: one Runner protocol and one PerformanceBenchmark, so every variant is measured the same way."""

from cleanai.benchmark.compare import compare, load_rows, plot_metrics, save_rows
from cleanai.benchmark.flops import count_macs
from cleanai.benchmark.intent import intent_scores, intent_variants, measure_intent
from cleanai.benchmark.performance import (
    BenchmarkConfig,
    Measurement,
    PerformanceBenchmark,
    benchmark,
    environment,
)
from cleanai.benchmark.runners import (
    BenchmarkError,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    as_runner,
)

__all__ = [
    "BenchmarkConfig",
    "BenchmarkError",
    "Measurement",
    "OrtRunner",
    "PerformanceBenchmark",
    "Runner",
    "TextClassifierRunner",
    "TorchRunner",
    "as_runner",
    "benchmark",
    "compare",
    "count_macs",
    "environment",
    "intent_scores",
    "intent_variants",
    "load_rows",
    "measure_intent",
    "plot_metrics",
    "save_rows",
]

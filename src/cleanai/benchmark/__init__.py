"""Benchmark: one PerformanceBenchmark, so every variant is measured the same way.

The runners it measures live in `cleanai.runtime`; their names are re-exported here for convenience.
"""

from cleanai.benchmark.compare import compare, compare_runners, load_rows, plot_metrics, save_rows
from cleanai.benchmark.intent import intent_scores, intent_variants, measure_intent
from cleanai.benchmark.performance import (
    BenchmarkConfig,
    Measurement,
    PerformanceBenchmark,
    benchmark,
    environment,
)
from cleanai.runtime import (
    BenchmarkError,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    as_runner,
    count_macs,
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
    "compare_runners",
    "count_macs",
    "environment",
    "intent_scores",
    "intent_variants",
    "load_rows",
    "measure_intent",
    "plot_metrics",
    "save_rows",
]

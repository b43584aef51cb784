"""Benchmark: one Runner protocol and one PerformanceBenchmark, so every variant is measured the same way."""

from cleanai.benchmark.compare import compare, compare_runners, load_rows, plot_metrics, save_rows
from cleanai.benchmark.flops import count_macs
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
    "compare_runners",
    "count_macs",
    "environment",
    "load_rows",
    "plot_metrics",
    "save_rows",
]

"""Benchmark: one PerformanceBenchmark, so every variant is measured the same way.

The runners it measures live in `cleanai.runtime`; their names are re-exported here for convenience.
"""

from cleanai.benchmark.compare import compare, compare_runners, load_rows, plot_metrics, save_rows
from cleanai.benchmark.intent import BOOK_QUERY, intent_scores, intent_variants, measure_intents
from cleanai.benchmark.performance import (
    BenchmarkConfig,
    Measurement,
    PerformanceBenchmark,
    benchmark,
    environment,
)
from cleanai.benchmark.runtime_choice import (
    RuntimeChoice,
    RuntimeChoiceError,
    choose_among,
    choose_runtime,
    runtime_candidates,
)
from cleanai.runtime import (
    BenchmarkError,
    OpenVinoRunner,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    as_runner,
    count_macs,
)

__all__ = [
    "BOOK_QUERY",
    "BenchmarkConfig",
    "BenchmarkError",
    "Measurement",
    "OpenVinoRunner",
    "OrtRunner",
    "PerformanceBenchmark",
    "Runner",
    "RuntimeChoice",
    "RuntimeChoiceError",
    "TextClassifierRunner",
    "TorchRunner",
    "as_runner",
    "benchmark",
    "choose_among",
    "choose_runtime",
    "compare",
    "compare_runners",
    "count_macs",
    "environment",
    "intent_scores",
    "intent_variants",
    "load_rows",
    "measure_intents",
    "plot_metrics",
    "runtime_candidates",
    "save_rows",
]

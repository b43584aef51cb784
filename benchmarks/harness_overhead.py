"""How much does the benchmark harness itself cost, and how repeatable is it?

(a) Overhead: the p50 latency PerformanceBenchmark reports for a ~1 ms torch model, against a bare
    `time.perf_counter_ns` loop around the same model under `torch.inference_mode` (goal: < 1 %).
    The two are interleaved `--repeats` times and the median of the per-pair ratios is quoted. The
    same is done on a near-empty model (Linear(16, 10)), where the difference is the harness's own
    cost per call in microseconds: a number that CPU contention from other processes blurs less.
(b) Repeatability: two back-to-back runs of the same benchmark, ratio of their p50s (goal: within 5 %),
    by wall time and by process CPU time.
(c) Steadiness under contention: the same benchmark while `--hogs` busy processes compete for the
    cores, against the quiet run of (b): how much wall time and CPU time per call stretch.

Writes its raw numbers to benchmarks/results/harness_overhead/<--run>/rows.json and prints the table of
BENCHMARKS.md, with the machine, threads and load average (other processes on a shared machine are the main
source of noise). The bare loop is not a Runner, so its pairs are interleaved here, not by `compare_runners`.
Usage: python benchmarks/harness_overhead.py [--threads 1] [--runs 300] [--repeats 11] [--hogs 2] [--run NAME]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.benchmark import BenchmarkConfig, Measurement, PerformanceBenchmark, TorchRunner

import _report  # benchmarks/_report.py: scripts run from this folder


def make_model(width: int, depth: int) -> nn.Module:
    """`depth` Linear(width, width)+ReLU blocks and a 10-way head (depth 0: just the head)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10)).eval()


def bare_p50_ms(model: nn.Module, x: torch.Tensor, warmup: int, runs: int) -> float:
    """What one would write by hand: warm up, then time each call with perf_counter_ns."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            start = time.perf_counter_ns()
            model(x)
            times.append(time.perf_counter_ns() - start)
    return float(np.percentile(times, 50)) / 1e6


def harness_row(model: nn.Module, data: DataLoader, config: BenchmarkConfig) -> Measurement:
    """One measurement by the CleanAI harness (wall and CPU time per call)."""
    return PerformanceBenchmark(TorchRunner(model, name="mlp"), data, config=config).run()


def spin(stop: Any) -> None:
    """A competing process: busy until `stop` is set."""
    while not stop.is_set():
        pass


def contended_row(model: nn.Module, data: DataLoader, config: BenchmarkConfig, hogs: int) -> Measurement:
    """The benchmark while `hogs` busy processes compete for the cores."""
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(hogs)]
    for proc in procs:
        proc.start()
    try:
        time.sleep(0.5)  # let them get going
        return harness_row(model, data, config)
    finally:
        stop.set()
        for proc in procs:
            proc.join()


def calibrate(target_ms: float) -> tuple[nn.Module, int]:
    """Deepen a 1024-wide MLP until one batch-1 call takes about `target_ms`."""
    per_layer = bare_p50_ms(make_model(1024, 4), torch.randn(1, 1024), 20, 200) / 4
    depth = max(1, round(target_ms / per_layer))
    return make_model(1024, depth), depth


def interleaved(model: nn.Module, width: int, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """`repeats` pairs of (bare p50, harness p50) in ms, alternating which goes first."""
    x = torch.randn(64, width)
    data = DataLoader(TensorDataset(x, torch.zeros(64, dtype=torch.long)), batch_size=64)
    config = BenchmarkConfig(warmup=args.warmup, runs=args.runs, throughput_runs=0, threads=args.threads,
                             progress=False)
    bare, harness = [], []
    for i in range(args.repeats):
        for side in ("bare", "harness") if i % 2 == 0 else ("harness", "bare"):
            if side == "bare":
                bare.append(bare_p50_ms(model, x[:1], args.warmup, args.runs))
            else:
                harness.append(harness_row(model, data, config).latency_ms_p50)
    return bare, harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved harness/bare pairs")
    parser.add_argument("--hogs", type=int, default=len(os.sched_getaffinity(0)),
                        help="competing busy processes in (c) (default: one per usable core)")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    record = _report.provenance(args)

    model, depth = calibrate(1.0)
    bare, harness = interleaved(model, 1024, args)
    tiny_bare, tiny_harness = interleaved(make_model(16, 0), 16, args)
    data = DataLoader(TensorDataset(torch.randn(64, 1024), torch.zeros(64, dtype=torch.long)), batch_size=64)
    config = BenchmarkConfig(warmup=args.warmup, runs=args.runs, throughput_runs=0, threads=args.threads,
                             progress=False)
    first, second = harness_row(model, data, config), harness_row(model, data, config)
    loaded = contended_row(model, data, config, args.hogs)
    record.update(depth=depth, bare_ms=bare, harness_ms=harness, tiny_bare_ms=tiny_bare, tiny_harness_ms=tiny_harness,
                  **{name: row.model_dump(mode="json") for name, row in
                     (("first", first), ("second", second), ("contended", loaded))})
    _report.finish(record, args.run, _report.machine(f"{args.threads} thread(s)", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args, bare, harness = record["args"], record["bare_ms"], record["harness_ms"]
    first, second, loaded = record["first"], record["second"], record["contended"]
    ratios = [h / b for b, h in zip(bare, harness)]
    overhead = statistics.median(ratios) - 1
    per_call_us = statistics.median(1000 * (h - b) for b, h in zip(record["tiny_bare_ms"], record["tiny_harness_ms"]))
    repeat_ratio = second["latency_ms_p50"] / first["latency_ms_p50"]
    repeat_cpu = second["latency_cpu_ms_p50"] / first["latency_cpu_ms_p50"]
    stretch = loaded["latency_ms_p50"] / second["latency_ms_p50"]
    stretch_cpu = loaded["latency_cpu_ms_p50"] / second["latency_cpu_ms_p50"]
    pairs = ", ".join(f"{100 * (r - 1):+.1f}" for r in ratios)
    rows = [
        (f"bare perf_counter_ns loop, p50 (median of {args['repeats']})", f"{statistics.median(bare):.4f} ms",
         "~1 ms", "-"),
        (f"PerformanceBenchmark, p50 (median of {args['repeats']})", f"{statistics.median(harness):.4f} ms", "-", "-"),
        ("(a) harness overhead: median per-pair p50 ratio - 1", f"{100 * overhead:+.2f} % (pairs: {pairs})",
         "< 1 %", abs(overhead) < 0.01),
        ("(a) harness overhead: best harness p50 / best bare p50 - 1 (least disturbed by other processes)",
         f"{100 * (min(harness) / min(bare) - 1):+.2f} %", "< 1 %", abs(min(harness) / min(bare) - 1) < 0.01),
        ("(a) harness cost per call on Linear(16, 10): median p50 difference",
         f"{per_call_us:+.2f} us (bare p50 {1000 * statistics.median(record['tiny_bare_ms']):.2f} us), "
         f"{per_call_us / 10:+.2f} % of 1 ms", "< 10 us", per_call_us < 10),
        ("(b) back-to-back runs: p50 ratio 2nd / 1st",
         f"{repeat_ratio:.4f} ({first['latency_ms_p50']:.4f} / {second['latency_ms_p50']:.4f} ms)",
         "within 5 %", abs(repeat_ratio - 1) <= 0.05),
        ("(b) back-to-back runs: CPU-time p50 ratio 2nd / 1st",
         f"{repeat_cpu:.4f} ({first['latency_cpu_ms_p50']:.4f} / {second['latency_cpu_ms_p50']:.4f} ms)",
         "within 5 %", abs(repeat_cpu - 1) <= 0.05),
        (f"(c) with {args['hogs']} busy processes competing: wall p50 / quiet wall p50",
         f"{stretch:.3f} ({loaded['latency_ms_p50']:.4f} ms)", "-", "-"),
        (f"(c) with {args['hogs']} busy processes competing: CPU p50 / quiet CPU p50",
         f"{stretch_cpu:.3f} ({loaded['latency_cpu_ms_p50']:.4f} ms)", "-", "-"),
    ]
    flagged = [f"- {name} run: {row['timing_warning']}" for name, row in
               (("1st (b)", first), ("2nd (b)", second), ("contended (c)", loaded)) if row["timing_warning"]]
    return "\n".join([
        _report.heading(record), "",
        f"Model: {record['depth']}x Linear(1024, 1024)+ReLU + Linear(1024, 10), batch 1; {args['runs']} timed calls "
        f"after {args['warmup']} warm-up per measurement, {args['repeats']} interleaved pairs.", "",
        _report.table(["measurement", "result", "goal", "met"],
                      [[("yes" if c else "no") if isinstance(c, bool) else c for c in row] for row in rows]),
        *(["", "Timing flagged by the harness:", "", *flagged] if flagged else [])])


if __name__ == "__main__":
    main()

"""The demo's numbers: `cleanai demo` (the recipe digits_demo.yaml: small CNN on digits -> pruned 30 % by every
criterion, and an unpruned control -> distilled from the unpruned model -> ONNX -> int8 in ONNX Runtime, every
variant timed by `compare_runners`), with its rows and its wall time kept for BENCHMARKS.md.

Runs `cleanai.demo.run_demo` (what `cleanai demo` runs) into a new temporary folder (no step cached) and
writes the benchmark rows and the run's wall time (the recipe run and its reports; not the interpreter's
start) to benchmarks/results/demo/<--run>/rows.json with the command, commit and machine.
Usage: python benchmarks/demo.py [--epochs 20] [--threads N] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cleanai.demo import run_demo

import _report  # benchmarks/_report.py: scripts run from this folder
from scenarios import variants_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (the demo's default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of every step and of the timing (default: the recipe's, 1 for the timing)")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    record = _report.provenance(args)
    with tempfile.TemporaryDirectory(prefix="cleanai-demo-") as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        rows = run_demo(Path(tmp) / "demo", epochs=args.epochs, threads=args.threads, progress=False)
        record["seconds"], record["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    record["rows"] = [row.model_dump(mode="json") for row in rows]
    threads = f"{args.threads} thread(s)" if args.threads else f"{torch.get_num_threads()} thread(s) training"
    _report.finish(record, args.run, _report.machine(threads, load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    rows = record["rows"]
    wall = ("" if "seconds" not in record else
            f"The whole run (training, pruning, distillation, export, quantization, benchmark, both reports) took "
            f"{record['seconds']:.0f} s wall time, {record['cpu_seconds']:.0f} s of process CPU time. ")
    return "\n".join([
        _report.heading(record), "",
        wall +
        f"{rows[0]['threads']} thread(s), whole {rows[0]['eval_samples']}-image digits test split; latency at batch "
        f"{rows[0]['batch_size']}, throughput at batch {rows[0]['throughput_batch_size']}; medians of "
        f"{rows[0]['rounds']} interleaved rounds, speed-up = median of per-round p50 ratios against the first row; "
        "\"!\" = timing flagged by the harness (reasons below).", "", *variants_table(rows)])


if __name__ == "__main__":
    main()

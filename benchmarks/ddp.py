"""Data-parallel training on CPU: `cleanai train --nproc 2` against one process, same final accuracy, time per epoch.

Each variant is the `cleanai train` command a user would run (small_cnn on the embedded digits data by default:
1,078 training images, global batch 64, Adam lr 3e-3, seed 0), run as its own process tree `--repeats` times,
interleaved: 1 process x 1 thread, 1 process x 2 threads (what two cores give one process), 2 processes x 1
thread (`--nproc 2`: torchrun + DistributedDataParallel over gloo, 32 images per process per step). Time per
epoch is the Trainer's own epoch time (training + validation), median over every epoch but each run's first;
accuracy is on the whole digits test split (359 images, one image = 0.28 points). The 2-process run is the
1-process run split in two, except that BatchNorm statistics come from 32-image halves, so accuracies may differ
by a little; the tolerance is `--tolerance` points. On a 2-core machine shared with other jobs, 2 processes can
at best halve the compute time, and gloo's gradient exchange over loopback per step eats into that, most on a
model as small as this one.
Raw rows: benchmarks/results/ddp/<--run>/rows.json.
Usage: python benchmarks/ddp.py [--epochs 10] [--repeats 2] [--model small_cnn --data digits]
       [--train-samples N] [--val-samples M] [--run NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _report  # benchmarks/_report.py: scripts run from this folder

VARIANTS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]


def run(args: argparse.Namespace, nproc: int, threads: int, out: Path) -> dict[str, Any]:
    """One `cleanai train` run; its epoch times, test accuracy and wall time (start-up included)."""
    command = [sys.executable, "-m", "cleanai.cli", "train", "--model", args.model, "--data", args.data,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--optimizer", "adam",
               "--lr", str(args.lr), "--seed", "0", "--quiet", "--out", str(out), "--nproc", str(nproc),
               *subset_options(vars(args))]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    records = json.loads((out / "history.json").read_text())["records"]
    return {"epoch_s": [r["seconds"] for r in records], "val_accuracy": records[-1].get("val_accuracy"),
            "test_accuracy": json.loads((out / "test_metrics.json").read_text())["accuracy"], "wall_s": wall}


def subset_options(args: dict[str, Any]) -> list[str]:
    """`--train-samples N --val-samples M` as asked (absent from the records of runs before these options)."""
    return [token for key in ("train_samples", "val_samples") if args.get(key)
            for token in (f"--{key.replace('_', '-')}", str(args[key]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch of one step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=None, help="a seeded part of the training split")
    parser.add_argument("--val-samples", type=int, default=None, help="a seeded part of the validation split")
    parser.add_argument("--tolerance", type=float, default=1.5, help="accuracy points the 2-process run may differ by")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, nproc, threads in VARIANTS if i % 2 == 0 else VARIANTS[::-1]:
                row = {"variant": name, "processes": nproc, "threads": threads, "repeat": i,
                       **run(args, nproc, threads, Path(tmp) / f"{nproc}x{threads}-{i}")}
                record["rows"].append(row)
                print(f"{name} #{i}: {statistics.median(row['epoch_s'][1:] or row['epoch_s']):.3f} s/epoch, "
                      f"test accuracy {row['test_accuracy']:.4f}", flush=True)
    _report.finish(record, args.run, _report.machine("threads per variant as named", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args, rows = record["args"], record["rows"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    base_name = VARIANTS[0][0]
    epoch = {name: statistics.median(t for r in runs for t in (r["epoch_s"][1:] or r["epoch_s"]))
             for name, runs in by_variant.items()}
    accuracy = {name: statistics.median(r["test_accuracy"] for r in runs) for name, runs in by_variant.items()}
    table = []
    for name, runs in by_variant.items():
        drop = 100 * (accuracy[name] - accuracy[base_name])
        table.append([name, f"{epoch[name]:.3f}", f"{epoch[base_name] / epoch[name]:.2f}x",
                      f"{statistics.median(r['wall_s'] for r in runs):.1f}",
                      ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs), f"{drop:+.2f}",
                      "yes" if abs(drop) <= args["tolerance"] else "no"])
    subsets = "".join(f" {t}" for t in subset_options(args))
    return "\n".join([
        _report.heading(record), "",
        f"`cleanai train --model {args['model']} --data {args['data']} --epochs {args['epochs']} --batch-size "
        f"{args['batch_size']} --optimizer adam --lr {args['lr']} --seed 0{subsets}` per variant, "
        f"{'one run' if args['repeats'] == 1 else str(args['repeats']) + ' runs, interleaved'} each; epoch time = "
        "training + validation, median over all epochs but each run's first.", "",
        _report.table(["variant", "s / epoch", "speed-up vs 1x1", "wall s per run (start-up incl.)",
                       "test accuracy % per run", "median acc. vs 1x1 (points)",
                       f"within {args['tolerance']} points"], table)])


if __name__ == "__main__":
    main()

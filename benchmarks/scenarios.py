"""A scenario recipe's table for BENCHMARKS.md: run `cleanai run RECIPE [--set ...]` and keep its benchmark rows.

Runs the recipe exactly as the CLI does into `<cache>/recipe_bench/<run>/` (content-hashed steps: a rerun
resumes where a killed one stopped), then keeps the rows of its benchmark step, the recipe's own header
(what it runs and the source study's numbers it sits beside), the `--set` overrides and the wall time in
benchmarks/results/scenarios/<run>/rows.json. The report (PDF/HTML) stays in the run folder.
Usage: python benchmarks/scenarios.py recipes/cifar10_ts1.yaml [--set KEY=VALUE ...] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from cleanai.benchmark import load_rows
from cleanai.cli import main as cleanai_main
from cleanai.data import default_cache_dir
from cleanai.recipes import read_status

import _report  # benchmarks/_report.py: scripts run from this folder

CONTROL = "control"  # the variant name of a recipe's unpruned model given the same extra training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path, help="a recipe YAML (e.g. recipes/cifar10_ts1.yaml)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="as `cleanai run --set`")
    parser.add_argument("--run", default=None, help="results folder name (default: the recipe file's name)")
    args = parser.parse_args()
    run = args.run or args.recipe.stem
    out = default_cache_dir() / "recipe_bench" / run
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    record = _report.provenance(args)
    code = cleanai_main(["run", str(args.recipe), "--out", str(out), *(["--set", *args.set] if args.set else [])])
    if code:
        raise SystemExit(code)
    bench = read_status(out)["benchmark"]
    rows = load_rows(out / bench["folder"] / "results.json")
    header = [line[1:].strip() for line in args.recipe.read_text(encoding="utf-8").splitlines()
              if line.startswith("#")]
    record.update(rows=[row.model_dump(mode="json") for row in rows], recipe_header=header,
                  run_folder=str(out), seconds=time.perf_counter() - start)
    _report.finish(record, run, _report.machine(f"{rows[0].threads} thread(s) timing", load_before))
    print(render(record))


def variants_table(rows: list[dict[str, Any]]) -> list[str]:
    """The variants as BENCHMARKS.md shows a recipe's (or the demo's) rows, then the harness's timing flags. With a
    `control` variant, each row's accuracy is also given against the control's row of the same artifact kind
    (`<variant> (torch)` against `control (torch)`, `<variant> export` against `control export`, ...)."""
    def flag(r: dict[str, Any]) -> str:
        return " !" if r["timing_warning"] else ""

    by_name = {r["name"]: r for r in rows}

    def versus_control(r: dict[str, Any]) -> str:
        variant, _, kind = r["name"].partition(" ")
        control = by_name.get(f"{CONTROL} {kind}")
        return "-" if control is None or variant == CONTROL else f"{100 * (r['accuracy'] - control['accuracy']):+.2f}"

    controlled = any(name.startswith(f"{CONTROL} ") for name in by_name)
    table = _report.table(
        ["variant", "acc %", *(["vs control pp"] if controlled else []), "size MB", "p50 ms (batch 1)",
         "CPU ms (batch 1)", "speed-up", f"samples/s (batch {rows[0]['throughput_batch_size']})", "params", "MACs"],
        [[r["name"], f"{100 * r['accuracy']:.2f}", *([versus_control(r)] if controlled else []), f"{r['size_mb']:.3f}",
          f"{r['latency_ms_p50']:.3f}{flag(r)}", f"{r['latency_cpu_ms_p50']:.3f}",
          f"{r['speedup']:.2f}x{flag(r) or flag(rows[0])}", f"{r['throughput']:,.0f}" if r["throughput"] else "-",
          f"{r['params']:,}", f"{r['macs']:,}" if r["macs"] else "-"] for r in rows])
    warnings = [f"- {r['name']}: {r['timing_warning']}" for r in rows if r["timing_warning"]]
    return [table, *(["", "Timing flagged by the harness:", "", *warnings] if warnings else [])]


def render(record: dict[str, Any]) -> str:
    """The recipe's header (what it runs, the source study's numbers), then its variants."""
    rows = record["rows"]
    first = rows[0]
    return "\n".join([
        _report.heading(record), "",
        "> " + "\n> ".join(line for line in record["recipe_header"] if line), "",
        f"Whole run {record['seconds'] / 60:.1f} min wall time (steps already done in the run folder are reused). "
        f"{first['eval_samples']:,} test samples; latency at batch {first['batch_size']}, {first['threads']} "
        f"thread(s), medians of {first['rounds']} interleaved rounds; speed-up = median of per-round p50 ratios "
        f"against the first row; \"!\" = timing flagged by the harness.", "",
        *variants_table(rows)])


if __name__ == "__main__":
    main()

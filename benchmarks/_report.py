"""Output helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`).

Every script keeps its raw rows in `benchmarks/results/<script>/<run>/rows.json` (committed), together
with the command that made them, its arguments, the git commit and the machine line; `benchmarks/tables.py`
regenerates the tables of BENCHMARKS.md from those files with each script's own `render(record)`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cleanai.benchmark import BenchmarkConfig, Runner, compare_runners, environment
from cleanai.io import write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table, as BENCHMARKS.md shows it."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a markdown table, as BENCHMARKS.md shows it."""
    print(table(headers, rows))


def machine(threads: str, load_before: float | None = None, packages: Sequence[str] = ()) -> str:
    """One line naming what a table was measured on: CPU and its instruction sets, cores, threads, versions, load."""
    env = environment()
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", *packages))
    now = os.getloadavg()[0]
    load = f"{now:.2f}" if load_before is None else f"{load_before:.2f} before, {now:.2f} after"
    return (f"Machine: {env['cpu']} ({env['cpu_features'] or 'no speed-relevant CPU flags read'}), {env['cpu_count']} "
            f"usable cores, {threads}; {versions}, Python {platform.python_version()}; 1-min load average {load}.")


def timing_cells(data: Mapping[int, Any], args: argparse.Namespace) -> Iterator[tuple[str, Any, BenchmarkConfig]]:
    """`("t<threads> b<batch>", what that batch's calls take, its BenchmarkConfig)` for each cell: `args.threads` x
    the batch sizes of `data`, `args.runs` calls at batch 1 and `args.runs_64` at larger batches."""
    for threads in args.threads:
        for batch, source in data.items():
            yield f"t{threads} b{batch}", source, BenchmarkConfig(
                batch_size=batch, warmup=args.warmup, runs=args.runs if batch == 1 else args.runs_64,
                throughput_runs=0, threads=threads, max_eval_batches=1, progress=False)


def latency_cells(runners: dict[str, Runner], data: Mapping[int, Any], args: argparse.Namespace,
                  baseline: str) -> dict[str, dict[str, Any]]:
    """`{"t<threads> b<batch>": {variant: row}}`: each cell of `timing_cells` timed by `compare_runners` against
    `baseline` in `args.repeats` rounds."""
    return {key: {row.name: row.model_dump(mode="json")
                  for row in compare_runners(runners, source, config, repeats=args.repeats, baseline=baseline,
                                             show=False)}
            for key, source, config in timing_cells(data, args)}


def git_commit() -> str:
    """The commit the code was run at; `+dirty` when tracked files (results aside) differ from it."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True, check=False).stdout.strip()
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return commit + ("+dirty" if dirty else "")


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    """Command, arguments, commit and start time of this run (the machine line is added when it ends)."""
    script = Path(sys.argv[0]).name
    return {"script": script, "command": shlex.join(["python", f"benchmarks/{script}", *sys.argv[1:]]),
            "args": json.loads(json.dumps(vars(args), default=str)), "commit": git_commit(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "environment": environment()}


def run_dir(script: str, run: str) -> Path:
    """Where the raw rows of one run of `script` (a file name such as "fusion.py") are kept."""
    return RESULTS / Path(script).stem / run


def save(record: dict[str, Any], run: str, folder: Path | None = None) -> Path:
    """Write a run's record (provenance + rows) atomically to `results/<script>/<run>/rows.json` (or `folder`)."""
    path = (folder or run_dir(record["script"], run)) / "rows.json"
    write_json(path, record)
    return path


def run_parts(args: argparse.Namespace, parts: dict[str, Callable[[argparse.Namespace], dict[str, Any]]],
              packages: Sequence[str]) -> dict[str, Any]:
    """Run the parts `args.part` names (`all`: every one) into one record and save it under `args.run` (default
    `<part>_resnet<depth>`) with the machine line; returns the record."""
    start, load = time.perf_counter(), os.getloadavg()[0]
    record = provenance(args)
    record.update({part: run(args) for part, run in parts.items() if args.part in (part, "all")})
    line = machine(f"threads {args.threads}", load, packages) + f" Wall time {(time.perf_counter() - start) / 60:.1f} min."
    finish(record, args.run or f"{args.part}_resnet{args.depth}", line)
    return record


def finish(record: dict[str, Any], run: str, machine_line: str, folder: Path | None = None) -> Path:
    """Add the machine line and end time, save (to `folder` instead of the results tree if given), print where.
    A resumed invocation of a finished run records its own beside its start, keeping the rows' original ones."""
    end = {"machine": machine_line, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (record["resumed"][-1] if record.get("resumed") and "finished" in record else record).update(end)
    path = save(record, run, folder)
    print(f"\nRaw rows: {path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path}")
    return path


def load(script: str, run: str) -> dict[str, Any]:
    """A run's record as `save` wrote it."""
    return json.loads((run_dir(script, run) / "rows.json").read_text(encoding="utf-8"))


def heading(record: dict[str, Any], machine_note: str = "") -> str:
    """The lines every regenerated table starts with: the command, the commit, the machine (followed by
    `machine_note`) and the machine of each later invocation that resumed the finished run."""
    later = "".join(f"\n\nResumed at commit `{r['commit']}`, run {r['started']}. {r['machine']}"
                    for r in record.get("resumed", []) if "machine" in r)
    return (f"`{record['command']}` (commit `{record['commit']}`, run {record['started']})\n\n"
            f"{record.get('machine', 'Machine: not recorded (the run did not finish).')}{machine_note}{later}")


def _set(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide a run: options left empty or unset are dropped, so a run recorded before such an
    option existed still resumes."""
    return {k: v for k, v in settings.items() if v != [] and v is not None}


class Resumable:
    """A run's record saved after every row; reopened with the same `settings`, the rows already measured are
    reused (a killed run resumes), with other settings it starts afresh."""

    def __init__(self, args: argparse.Namespace, run: str, settings: dict[str, Any]) -> None:
        self.run = run
        script = Path(sys.argv[0]).name
        saved = load(script, run) if (run_dir(script, run) / "rows.json").exists() else {}
        if _set(saved.get("settings") or {}) == _set(settings):
            self.record = saved
            self.record.setdefault("resumed", []).append(provenance(args))
            print(f"resuming: {len(saved['rows'])} row(s) already measured in {run_dir(script, run)}", flush=True)
        else:
            self.record = {**provenance(args), "settings": settings, "rows": {}}

    def get(self, key: str, measure: Any) -> dict[str, Any]:
        """The row `key`: measured now by `measure()` and saved at once, or the one measured before."""
        rows = self.record["rows"]
        if key not in rows:
            rows[key] = measure()
            save(self.record, self.run)
        return rows[key]

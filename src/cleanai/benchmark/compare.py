"""Rows in, comparisons out: a table with ratios against a baseline, JSON/CSV files, and a bubble plot.

`compare_runners` is the benchmark method of BENCHMARKS.md as one call: every variant measured in one
process, timed in interleaved rounds (the order reversed every other round), medians of the rounds
quoted, and speed-ups taken round by round against a baseline (the median of those ratios).
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from torch import nn
from torch.utils.data import DataLoader, Dataset

from cleanai.benchmark.performance import BenchmarkConfig, Measurement, PerformanceBenchmark
from cleanai.errors import ConfigError, MissingFileError, UnknownNameError
from cleanai.io import atomic_open, atomic_path, write_json
from cleanai.runtime import BenchmarkError, Runner

RowsLike = Iterable[Measurement | Mapping[str, Any]]
_NESTED = ("metrics", "versions")  # dict fields, stored in CSV as flat "metrics.<key>" columns


def _rows(rows: RowsLike) -> list[Measurement]:
    out = [r if isinstance(r, Measurement) else Measurement.model_validate(r) for r in rows]
    if not out:
        raise ConfigError("no rows given: pass at least one Measurement")
    return out


def _human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _baseline(rows: list[Measurement], baseline: str | int | None) -> Measurement:
    return rows[0] if baseline is None else rows[_index([r.name for r in rows], baseline, "row")]


def _speedup(base: Measurement, row: Measurement) -> str:
    if row.speedup is not None and row.speedup_baseline == base.name:
        ratio = row.speedup  # measured round by round against this baseline
    elif row.latency_ms_p50:
        ratio = base.latency_ms_p50 / row.latency_ms_p50
    else:
        return "-"
    unreliable = " (unreliable)" if row.timing_warning or base.timing_warning else ""
    return f"{ratio:.2f}x" + (" SLOWER" if ratio < 1 else "") + unreliable


COLUMNS = ("variant", "acc %", "Δacc pp", "size MB", "× smaller", "p50 ms", "± std", "CPU ms", "speed-up",
           "samples/s", "params", "MACs", "backend", "threads")


def _cells(base: Measurement, r: Measurement) -> dict[str, str]:
    return {
        "variant": r.name + ("" if r.eval_whole_split else f" (acc on {r.eval_samples} samples)"),
        "acc %": f"{100 * r.accuracy:.2f}",
        "Δacc pp": f"{100 * (r.accuracy - base.accuracy):+.2f}",
        "size MB": f"{r.size_mb:.3f}",
        "× smaller": f"{base.size_mb / r.size_mb:.2f}x" if r.size_mb else "-",
        "p50 ms": f"{r.latency_ms_p50:.3f}" + (" !" if r.timing_warning else ""),
        "± std": f"{r.latency_ms_std:.3f}",
        "CPU ms": "-" if r.latency_cpu_ms_p50 is None else f"{r.latency_cpu_ms_p50:.3f}",
        "speed-up": _speedup(base, r),
        "samples/s": "-" if r.throughput is None else f"{r.throughput:.1f}",
        "params": _human(r.params),
        "MACs": _human(r.macs),
        "backend": r.backend + (f" ({r.provider})" if r.provider else ""),
        "threads": str(r.threads),
    }


def compare(rows: RowsLike, baseline: str | int | None = None, *, show: bool = True,
            columns: Sequence[str] | None = None, width: int | None = None) -> str:
    """Render rows as a table with speed-up (baseline p50 / p50) and size ratio (baseline MB / MB); print it.

    `baseline` is a row name or index (default: the first row). A row slower than the baseline is
    flagged in its speed-up cell and the caption (a quantized model can be: say so, never hide it), and
    so is a row whose timing is unreliable (`timing_warning`: its p50 gets a "!", every speed-up computed
    from it "(unreliable)", the caption the reason). Rows from `compare_runners` carry their speed-up, the
    median of per-round ratios, which is shown instead of the ratio of medians. `CPU ms` is the process CPU
    time per call (see `cleanai.benchmark.performance`). `columns` picks some of `COLUMNS` (default: all);
    `width` bounds the table's width in characters, cells and caption wrapping inside it (default: as wide as
    the table needs). Returns the plain-text table.
    """
    rows = _rows(rows)
    base = _baseline(rows, baseline)
    headers = list(COLUMNS if columns is None else columns)
    unknown = [h for h in headers if h not in COLUMNS]
    if unknown:
        raise UnknownNameError(f"column(s) {unknown} are not compare columns; choose from: {', '.join(COLUMNS)}")
    table = Table(title=f"CleanAI benchmark (baseline: {base.name})")
    for header in headers:  # a narrow `width` wraps the other cells, never a variant's name
        table.add_column(header, justify="left" if header in ("variant", "backend") else "right",
                         no_wrap=header == "variant")
    for r in rows:
        cells = _cells(base, r)
        table.add_row(*(cells[h] for h in headers))
    notes = []
    slower = [r.name for r in rows if r.latency_ms_p50 > base.latency_ms_p50]
    if slower:
        notes.append(f"SLOWER than the baseline {base.name!r}: {', '.join(slower)}")
    if len({(r.cpu, r.threads, r.batch_size) for r in rows}) > 1:
        notes.append("rows differ in CPU, threads or batch size: their latency ratios are not like for like")
    rounds = {r.rounds for r in rows}
    if rounds != {1}:
        notes.append(f"latencies: medians of {'/'.join(map(str, sorted(rounds)))} interleaved rounds; speed-ups: "
                     "median of the per-round ratios")
    notes += [f"! timing unreliable for {r.name!r}: {r.timing_warning}" for r in rows if r.timing_warning]
    if table.rows and notes:
        table.caption = "\n".join(notes)
    buffer = io.StringIO()
    Console(file=buffer, width=width or 240, no_color=True).print(table)
    text = buffer.getvalue()
    if show:  # as wide as the table needs (or `width`), so no cell is cut on a narrow terminal
        Console(width=width or max(len(line) for line in text.splitlines())).print(table)
    return text


def compare_runners(
    runners: Sequence[Runner | nn.Module] | Mapping[str, Runner | nn.Module],
    data: DataLoader | Dataset,
    config: BenchmarkConfig | None = None,
    *,
    repeats: int = 3,
    baseline: str | int = 0,
    metrics: Sequence[str] = ("accuracy",),
    show: bool = True,
) -> list[Measurement]:
    """Benchmark every runner on `data` the same way, timing them in `repeats` interleaved rounds; one row each.

    Round 1 is a full `benchmark` of each runner (accuracy, size, MACs, timing); later rounds time them
    again, in reversed order every other round, so drifts of a shared machine fall on all variants alike.
    A row's latencies and throughput are the medians over the rounds (`rounds`), `latency_spread` their
    run-to-run noise ((max - min) / median of the rounds' p50s); its `speedup` /
    `speedup_cpu` is the median over rounds of the baseline's p50 / its p50 within the same round; its
    `timing_warning` says in how many rounds the timing was unreliable, and why. `runners` may be named by
    a mapping; `baseline` is a name or an index. Prints the `compare` table unless `show` is False.
    """
    if repeats < 1:
        raise BenchmarkError(f"repeats must be an integer >= 1, got {repeats}")
    named = list(runners.items()) if isinstance(runners, Mapping) else [(None, r) for r in runners]
    if not named:
        raise BenchmarkError("no runners given: pass at least one Runner or nn.Module")
    benches = [PerformanceBenchmark(r, data, name=n, config=config, metrics=metrics) for n, r in named]
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"runner names must differ to be compared; got {names}: name them (pass a mapping)")
    base_index = _index(names, baseline, "runner")  # checked before the measuring starts
    firsts = [b.run() for b in benches]
    rounds: list[list[dict[str, Any]]] = [[row.model_dump() for row in firsts]]
    for i in range(1, repeats):
        order = range(len(benches)) if i % 2 == 0 else reversed(range(len(benches)))
        timings: dict[int, dict[str, Any]] = {j: benches[j].time() for j in order}
        rounds.append([timings[j] for j in range(len(benches))])
    rows = [_merge(first, [rnd[j] for rnd in rounds], [rnd[base_index] for rnd in rounds], names[base_index])
            for j, first in enumerate(firsts)]
    compare(rows, baseline=base_index, show=show)
    return rows


def _index(names: list[str], baseline: str | int, what: str) -> int:
    """The baseline's position among the `what`s called `names`, given by name or (possibly negative) index."""
    if isinstance(baseline, int):
        if not -len(names) <= baseline < len(names):
            raise ConfigError(f"baseline index {baseline} is out of range for {len(names)} {what}s")
        return baseline % len(names)
    if baseline not in names:
        raise UnknownNameError(f"baseline {baseline!r} is not a {what} name; names: {', '.join(names)}")
    return names.index(baseline)


_TIMING = ("latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
           "latency_cpu_ms_p50", "throughput", "load_average")


def _merge(first: Measurement, timings: list[dict[str, Any]], base: list[dict[str, Any]],
           base_name: str) -> Measurement:
    """One row from its rounds: medians of the timing fields, per-round speed-ups against `base`, warnings counted."""
    merged: dict[str, Any] = {}
    for key in _TIMING:
        values = [t[key] for t in timings if t[key] is not None]
        merged[key] = statistics.median(values) if values else None
    p50s = [t["latency_ms_p50"] for t in timings]
    merged["latency_spread"] = (max(p50s) - min(p50s)) / statistics.median(p50s) if len(p50s) > 1 else None
    warned = [t["timing_warning"] for t in timings if t["timing_warning"]]
    warning = None
    if warned:
        warning = (warned[0] if len(timings) == 1
                   else f"in {len(warned)} of {len(timings)} rounds, e.g. {warned[0]}")
    return first.model_copy(update={
        **merged, "timing_warning": warning, "rounds": len(timings), "speedup_baseline": base_name,
        "speedup": statistics.median(b["latency_ms_p50"] / t["latency_ms_p50"] for b, t in zip(base, timings)),
        "speedup_cpu": statistics.median(b["latency_cpu_ms_p50"] / max(t["latency_cpu_ms_p50"], 1e-9)
                                         for b, t in zip(base, timings)),
    })


def save_rows(rows: RowsLike, path: str | os.PathLike[str]) -> Path:
    """Write rows atomically as JSON (a list of objects) or CSV (nested dicts as `metrics.<key>` columns)."""
    rows, path = _rows(rows), Path(path)
    if path.suffix == ".json":
        write_json(path, [r.model_dump(mode="json") for r in rows])
    elif path.suffix == ".csv":
        flat = [_flatten(r.model_dump(mode="json")) for r in rows]
        columns = list(dict.fromkeys(k for row in flat for k in row))
        with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
    else:
        raise ConfigError(f"cannot save rows to {str(path)!r}: suffix {path.suffix!r} not supported; use .json or .csv")
    return path


def load_rows(path: str | os.PathLike[str]) -> list[Measurement]:
    """Read rows written by `save_rows` (JSON or CSV, chosen by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"rows file {str(path)!r} does not exist")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return _rows(data if isinstance(data, list) else [data])
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return _rows(_unflatten(row) for row in csv.DictReader(fh))
    raise ConfigError(f"cannot load rows from {str(path)!r}: suffix {path.suffix!r} not supported; use .json or .csv")


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if k not in _NESTED}
    for key in _NESTED:
        flat.update({f"{key}.{k}": v for k, v in row[key].items()})
    return flat


def _unflatten(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {key: {} for key in _NESTED}
    for column, value in row.items():
        head, dot, tail = column.partition(".")
        if dot and head in _NESTED:
            if value != "":  # a key another row had and this one lacks
                out[head][tail] = value
        else:
            out[column] = None if value == "" else value
    return out


def plot_metrics(rows: RowsLike, path: str | os.PathLike[str], *, title: str = "Accuracy vs latency") -> Path:
    """Save a PNG of accuracy against p50 latency, bubble area proportional to size, each point labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    rows = _rows(rows)
    largest = max(r.size_mb for r in rows) or 1.0
    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in rows:
        ax.scatter(r.latency_ms_p50, 100 * r.accuracy, s=1500 * r.size_mb / largest, alpha=0.5, edgecolors="k")
        ax.annotate(f"{r.name}\n{r.size_mb:.2f} MB", (r.latency_ms_p50, 100 * r.accuracy),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    batch = {r.batch_size for r in rows}
    ax.set_xlabel(f"latency p50 (ms, batch {'/'.join(map(str, sorted(batch)))})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title} (bubble area ∝ size)")
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 100.0 + (high - low) * 0.05))  # accuracy lives in [0, 100]
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


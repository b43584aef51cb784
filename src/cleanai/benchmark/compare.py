"""Rows in, comparisons out: a table with ratios against a baseline, JSON/CSV files, and a bubble plot."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cleanai.benchmark.performance import Measurement
from cleanai.io import atomic_open, atomic_path, write_json

RowsLike = Iterable[Measurement | Mapping[str, Any]]
_NESTED = ("metrics", "versions")  # dict fields, stored in CSV as flat "metrics.<key>" columns


def _rows(rows: RowsLike) -> list[Measurement]:
    out = [r if isinstance(r, Measurement) else Measurement.model_validate(r) for r in rows]
    if not out:
        raise ValueError("no rows given: pass at least one Measurement")
    return out


def _human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _baseline(rows: list[Measurement], baseline: str | int | None) -> Measurement:
    if baseline is None:
        return rows[0]
    if isinstance(baseline, int):
        if not -len(rows) <= baseline < len(rows):
            raise IndexError(f"baseline index {baseline} is out of range for {len(rows)} rows")
        return rows[baseline]
    for row in rows:
        if row.name == baseline:
            return row
    raise ValueError(f"baseline {baseline!r} is not a row name; names: {', '.join(r.name for r in rows)}")


def _speedup(base: Measurement, row: Measurement) -> str:
    if not row.latency_ms_p50:
        return "-"
    ratio = base.latency_ms_p50 / row.latency_ms_p50
    return f"{ratio:.2f}x" + (" SLOWER" if ratio < 1 else "")


def compare(rows: RowsLike, baseline: str | int | None = None, *, show: bool = True) -> str:
    """Render rows as a table with speed-up (baseline p50 / p50) and size ratio (baseline MB / MB); print it.

    `baseline` is a row name or index (default: the first row). A row slower than the baseline is
    flagged in its speed-up cell and the caption (a quantized model can be: say so, never hide it).
    `CPU ms` is the process CPU time per call (see `cleanai.benchmark.performance`). Returns the plain-text table.
    """
    rows = _rows(rows)
    base = _baseline(rows, baseline)
    table = Table(title=f"CleanAI benchmark (baseline: {base.name})")
    for header in ("variant", "acc %", "Δacc pp", "size MB", "× smaller", "p50 ms", "± std", "CPU ms", "speed-up",
                   "samples/s", "params", "MACs", "backend", "threads"):
        table.add_column(header, justify="left" if header in ("variant", "backend") else "right")
    for r in rows:
        table.add_row(
            r.name + ("" if r.eval_whole_split else f" (acc on {r.eval_samples} samples)"),
            f"{100 * r.accuracy:.2f}",
            f"{100 * (r.accuracy - base.accuracy):+.2f}",
            f"{r.size_mb:.3f}",
            f"{base.size_mb / r.size_mb:.2f}x" if r.size_mb else "-",
            f"{r.latency_ms_p50:.3f}",
            f"{r.latency_ms_std:.3f}",
            "-" if r.latency_cpu_ms_p50 is None else f"{r.latency_cpu_ms_p50:.3f}",
            _speedup(base, r),
            "-" if r.throughput is None else f"{r.throughput:.1f}",
            _human(r.params),
            _human(r.macs),
            r.backend + (f" ({r.provider})" if r.provider else ""),
            str(r.threads),
        )
    notes = []
    slower = [r.name for r in rows if r.latency_ms_p50 > base.latency_ms_p50]
    if slower:
        notes.append(f"SLOWER than the baseline {base.name!r}: {', '.join(slower)}")
    if len({(r.cpu, r.threads, r.batch_size) for r in rows}) > 1:
        notes.append("rows differ in CPU, threads or batch size: their latency ratios are not like for like")
    if table.rows and notes:
        table.caption = "; ".join(notes)
    buffer = io.StringIO()
    Console(file=buffer, width=240, no_color=True).print(table)
    text = buffer.getvalue()
    if show:  # as wide as the table needs, so no cell is cut on a narrow terminal
        Console(width=max(len(line) for line in text.splitlines())).print(table)
    return text


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
        raise ValueError(f"cannot save rows to {str(path)!r}: suffix {path.suffix!r} not supported; use .json or .csv")
    return path


def load_rows(path: str | os.PathLike[str]) -> list[Measurement]:
    """Read rows written by `save_rows` (JSON or CSV, chosen by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rows file {str(path)!r} does not exist")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return _rows(data if isinstance(data, list) else [data])
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return _rows(_unflatten(row) for row in csv.DictReader(fh))
    raise ValueError(f"cannot load rows from {str(path)!r}: suffix {path.suffix!r} not supported; use .json or .csv")


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


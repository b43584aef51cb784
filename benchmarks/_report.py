"""Output helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib.metadata import version

from cleanai.benchmark import environment


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a markdown table, ready to paste into BENCHMARKS.md."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def machine(threads: str, load_before: float | None = None, packages: Sequence[str] = ()) -> str:
    """One line naming what a table was measured on: CPU and its instruction sets, cores, threads, versions, load."""
    env = environment()
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", *packages))
    now = os.getloadavg()[0]
    load = f"{now:.2f}" if load_before is None else f"{load_before:.2f} before, {now:.2f} after"
    return (f"Machine: {env['cpu']} ({env['cpu_features'] or 'no speed-relevant CPU flags read'}), {env['cpu_count']} "
            f"usable cores, {threads}; {versions}, Python {platform.python_version()}; 1-min load average {load}.")

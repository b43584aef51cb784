"""Output helpers shared by the benchmark scripts (run as `python benchmarks/<script>.py`)."""

from __future__ import annotations


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a markdown table, ready to paste into BENCHMARKS.md."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")

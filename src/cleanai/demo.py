"""`cleanai demo`: the recipe digits_demo.yaml, shipped inside the package, run by the recipe runner.

On the embedded digits data: train the small CNN; prune 30 % of its channels with every criterion (one
variant each, sharing the trained model); fine-tune each with knowledge distillation from the unpruned
model; export it to ONNX and quantize it to int8 for ONNX Runtime; benchmark every variant; write
report.pdf and report.html. `recipes/digits_demo.yaml` is a link to the same file, so `cleanai run
recipes/digits_demo.yaml` does the same thing; a rerun into the same folder skips the finished steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cleanai.benchmark import Measurement, compare, load_rows
from cleanai.recipes import load_recipe, read_status, run_recipe

DEMO_RECIPE = Path(__file__).resolve().parent / "recipes" / "digits_demo.yaml"
# What the closing table shows: it fits a 100-column terminal (report.pdf / report.html hold every column).
TABLE_COLUMNS = ("variant", "acc %", "Δacc pp", "size MB", "× smaller", "p50 ms", "speed-up", "MACs")
TABLE_WIDTH = 100


def run_demo(out_dir: str | os.PathLike[str] = "runs/demo", *, epochs: int | None = None, threads: int | None = None,
             seed: int = 0, progress: bool = True, overwrite: bool = False,
             sets: Mapping[str, Any] | None = None) -> list[Measurement]:
    """Run the demo recipe into `out_dir` and return its benchmark rows, after printing their table and the
    reports' paths.

    `epochs` trains the CNN that long (the recipe's 20 by default) and distils each pruned model a quarter
    as long; `threads` sets the torch threads of every step and of the benchmark (the recipe's: the machine's
    for training, 1 for timing). `out_dir` is checked before any work (`cleanai.io.check_destination`); a
    rerun into it resumes, `overwrite` starts it afresh (replacing also a folder CleanAI did not write).
    `sets` changes more fields, as `cleanai run --set` does (`{"steps.benchmark.runs": 20}`).
    """
    fields: dict[str, Any] = {"seed": seed}
    if epochs is not None:
        fields.update({"steps.train.epochs": epochs, "steps.distill.train.epochs": max(1, epochs // 4)})
    if threads is not None:
        fields.update({"threads": threads, "steps.benchmark.threads": threads})
    recipe = load_recipe(DEMO_RECIPE, {**fields, **(sets or {})})
    folder = run_recipe(recipe, out_dir, progress=progress, overwrite=overwrite)
    rows = load_rows(folder / read_status(folder)["benchmark"]["folder"] / "results.json")
    compare(rows, columns=TABLE_COLUMNS, width=TABLE_WIDTH)
    print(f"Run written to {folder.resolve()}")
    for kind in recipe.report.formats:
        print(f"Report ({kind.upper()}): {(folder / f'report.{kind}').resolve()}")
    return rows

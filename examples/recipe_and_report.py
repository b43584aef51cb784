"""Run a recipe from Python and write its report: the digits demo recipe, a few fields changed.

    python examples/recipe_and_report.py --epochs 20 --out runs/example-recipe
The same from the shell: cleanai run recipes/digits_demo.yaml --set steps.train.epochs=20; cleanai report <run>.
"""

import argparse
from pathlib import Path

from cleanai.benchmark import compare, load_rows
from cleanai.recipes import load_recipe, read_status, run_recipe, write_report

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "digits_demo.yaml"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--criteria", nargs="+", default=["magnitude", "wanda", "coverage"], help="one variant each")
parser.add_argument("--runs", type=int, default=100, help="timed calls per variant")
parser.add_argument("--out", default="runs/example-recipe", help="run folder (a rerun skips finished steps)")
args = parser.parse_args()

recipe = load_recipe(RECIPE, {  # the same keys as `cleanai run --set`; checked, with file:line on an error
    "steps.train.epochs": args.epochs,
    "steps.distill.train.epochs": max(1, args.epochs // 4),
    "steps.benchmark.runs": args.runs,
    "variants": {name: {"prune": {"criterion": name}} for name in args.criteria},
    "report": {"auto": False},
})
run = run_recipe(recipe, args.out)  # steps/<id>-<key>/ per step; run.json says which are done
rows = load_rows(run / read_status(run)["benchmark"]["folder"] / "results.json")
compare(rows, columns=["variant", "acc %", "size MB", "p50 ms", "speed-up", "MACs"])
for path in write_report(run, formats=["pdf", "html"]):
    print(f"Report: {path}")

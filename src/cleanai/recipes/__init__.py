"""Recipes: a YAML file that names a model, data, a chain of steps and its variants, run into a resumable run
folder (`cleanai run`) and read back as a PDF and HTML report (`cleanai report`).

The runner only composes the public API (training, pruning, distillation, quantization, fusion, export,
benchmark); each step's files are content-hashed so a rerun skips what is done.
"""

from cleanai.recipes.report import build_report, write_report
from cleanai.recipes.runner import RecipeRun, read_status, run_recipe
from cleanai.recipes.schema import DataSpec, ModelSpec, Recipe, RecipeError, ReportOptions, load_recipe
from cleanai.recipes.steps import STEPS, StepConfig, list_steps

__all__ = [
    "STEPS", "DataSpec", "ModelSpec", "Recipe", "RecipeError", "RecipeRun", "ReportOptions", "StepConfig",
    "build_report", "list_steps", "load_recipe", "read_status", "run_recipe", "write_report",
]

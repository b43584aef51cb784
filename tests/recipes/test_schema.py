"""Recipe validation: every problem is one message naming the file, the line and the field; nothing runs."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cleanai.cli import main
from cleanai.recipes import RecipeError, load_recipe
from cleanai.recipes.runner import RecipeRun
from cleanai.recipes.steps import PruneStep


def problems(path, sets=None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, sets)
    return info.value.problems


def test_a_valid_recipe_gives_each_variant_its_chain(recipe_file):
    recipe = load_recipe(recipe_file())
    assert recipe.name == "tiny"
    assert list(recipe.variants) == ["a"]
    assert [s.type for s in recipe.variants["a"]] == ["train", "prune", "export", "benchmark"]
    assert isinstance(recipe.variants["a"][1], PruneStep) and recipe.variants["a"][1].criterion == "magnitude"
    assert recipe.benchmark is not None and recipe.benchmark.runs == 3


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("  - type: export", "  - type: expor", ":11: steps[2].type: unknown step 'expor'; choose one of"),
    ("  name: small_cnn", "  kwargs: {}", ":2: model.name: Field required"),
    ("    epochs: 1", "    epochs: one", ":8: steps[0].epochs: Input should be a valid integer"),
    ("    ratio: 0.3", "    ratio: 1.5", ":10: steps[1].ratio: ratio must be in [0, 1)"),
    ("    epochs: 1", "    epoch: 1", ":8: steps[0].epoch: unknown field"),
    ("  name: small_cnn", "  name: small_cnn\n  weights: missing.safetensors",
     ":4: model.weights: 'missing.safetensors' is neither a file nor a weights tag of small_cnn (it has none)"),
    ("  name: digits", "  name: digits\n  root: /no/such/folder", ":6: data.root: '/no/such/folder' is not a folder"),
    ("  a: {prune: {criterion: magnitude}}", "  a: {prune: {ratio: 2}}", ":15: variants.a.prune.ratio: ratio must be"),
    ("  a: {prune: {criterion: magnitude}}", "  a: {pruning: {ratio: 0.5}}",
     ":15: variants.a.pruning: the recipe has no step 'pruning'"),
    ("  - type: export", "  - type: distill\n    teacher: export",
     ":12: steps[2].teacher: 'export' is not an earlier step that makes a model"),
    ("    runs: 3", "    runs: 3\n  - type: fuse", ":12: steps[3].type: the benchmark step measures every variant"),
    ("  name: small_cnn", "  name: no_such_model", ":3: model.name: unknown model"),
    ("steps:", "stepz: []\nsteps:", ":6: stepz: unknown field"),
    ("    ratio: 0.3", "    ratio: 0.3\n    finetune: {epochs: 1, log_dir: logs}", ":11: steps[1].finetune: log_dir"),
    ("    ratio: 0.3", "    ratio: 0.3\n    alpha: 0.2", ":9: steps[1]: alpha 0.2: settings of distillation from a "
     "teacher, but this prune step has none; add teacher: model"),
    ("    ratio: 0.3", "    ratio: 0.3\n    finetune: {epochs: 1}\n    teacher: model\n    temperature: 0",
     ":13: steps[1].temperature: temperature must be > 0"),
])
def test_each_problem_is_one_message_naming_the_file_line_and_field(recipe_file, tiny_text, old, new, expected):
    assert old in tiny_text
    path = recipe_file(tiny_text.replace(old, new, 1))
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}{expected}"), found[0]


def test_every_problem_of_a_recipe_is_reported_at_once(recipe_file, tiny_text):
    text = tiny_text.replace("    epochs: 1", "    epochs: 0").replace("    ratio: 0.3", "    ratio: -1")
    found = problems(recipe_file(text))
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in found] == ["8", "10"]


def test_a_yaml_syntax_error_names_line_and_column(recipe_file, tiny_text):
    found = problems(recipe_file(tiny_text.replace("  name: digits", "  name: [digits")))
    assert len(found) == 1 and ":6:" in found[0] and "YAML syntax error" in found[0]


def test_set_changes_a_step_by_its_id_and_names_itself_in_errors(recipe_file):
    path = recipe_file()
    recipe = load_recipe(path, {"steps.train.epochs": 3, "variants.a.prune.ratio": 0.5, "data.batch_size": 16})
    assert recipe.variants["a"][0].epochs == 3 and recipe.variants["a"][1].ratio == 0.5
    assert recipe.data.batch_size == 16
    assert problems(path, {"steps.train.epochs": 0})[0].startswith("--set steps.train.epochs: steps[0].epochs:")
    assert problems(path, {"steps.nosuch.epochs": 1}) == [
        "--set steps.nosuch.epochs: the recipe has no step 'nosuch'; its steps: train, prune, export, benchmark"]


def test_validate_and_run_refuse_a_bad_recipe_before_any_work(recipe_file, tiny_text, tmp_path, capsys):
    path = recipe_file(tiny_text.replace("    ratio: 0.3", "    ratio: 1.5"))
    assert main(["validate", str(path)]) == 2
    assert f"cleanai validate: error: {path}:10: steps[1].ratio:" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()
    assert main(["validate", str(recipe_file())]) == 0
    assert "a: train -> prune -> export -> benchmark" in capsys.readouterr().out


def test_model_names_the_recipes_own_model_as_teacher_and_baseline_and_is_no_step_id(recipe_file, tiny_text):
    text = tiny_text.replace("    ratio: 0.3", "    ratio: 0.3\n    finetune: {epochs: 1}\n    teacher: model").replace(
        "    runs: 3", "    runs: 3\n    baseline: model")
    recipe = load_recipe(recipe_file(text))
    assert recipe.steps[1].teacher == "model" and recipe.benchmark.baseline == "model"
    found = problems(recipe_file(tiny_text.replace("  - type: export", "  - type: export\n    id: model")))
    assert len(found) == 1 and "id 'model' is reserved" in found[0]


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def documented_sets(path: Path) -> list[list[str]]:
    """The `--set` arguments of each `cleanai run` command in the recipe's header comments."""
    header = "".join(line.removeprefix("#").rstrip("\\\n") + (" " if line.rstrip().endswith("\\") else "\n")
                     for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    commands = [shlex.split(line.strip(), comments=False) for line in header.splitlines()
                if line.strip().startswith("cleanai run") and "--set" in line]
    out = []
    for command in commands:
        rest = command[command.index("--set") + 1:]
        out.append([arg for i, arg in enumerate(rest) if not any(a.startswith("--") for a in rest[:i + 1])])
    return out


def test_the_scenario_recipes_are_all_here():
    assert {p.name for p in RECIPES} >= {"digits_demo.yaml", "cifar10_ts1.yaml", "cifar10_ts3_ts4.yaml",
                                         "resnet50_ts3_ts4.yaml", "clinc150_distill_quantize.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_validates_as_shipped_and_with_its_documented_small_run(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{path}: valid ({len(load_recipe(path).variants)} variant(s))")
    sets = documented_sets(path)
    assert sets, f"{path.name} documents no `cleanai run ... --set` for a small run"
    for args in sets:
        assert main(["validate", str(path), "--set", *args]) == 0, capsys.readouterr().err

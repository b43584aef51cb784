"""`cleanai optimize`: a quick search on a CNN trained by `cleanai train`, its run folder, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cleanai.cli import main
from cleanai.recipes import load_recipe

pytestmark = pytest.mark.usefixtures("private_cache")  # its searches' scans stay out of ~/.cache/cleanai


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-optimize") / "cnn"
    assert main(["train", "--model", "small_cnn", "--data", "digits", "--epochs", "3", "--optimizer", "adamw",
                 "--lr", "0.003", "--seed", "0", "--out", str(out), "--quiet"]) == 0
    return out / "model.safetensors"


def test_optimize_quick_writes_the_search_the_choice_and_a_recipe_run_reruns(weights, tmp_path, capsys):
    out = tmp_path / "opt"
    assert main(["optimize", "--model", "small_cnn", "--weights", str(weights), "--data", "digits", "--max-drop", "3",
                 "--objective", "size", "--quick", "--trials", "2", "--time-budget", "3600", "--threads", "1",
                 "--val-samples", "200",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["objective"] == "size" and result["config"]["n_trials"] == 2
    assert result["config"]["time_budget"] == 3600
    assert len(result["trials"]) == 2 and result["met"]
    assert f"chosen (size): #{result['chosen']['number']}" in printed
    assert load_recipe(out / "recipe.yaml").data.subset["val"] == 200
    assert {"report.pdf", "report.html", "artifact", "final", "study"} <= {p.name for p in out.iterdir()}
    assert main(["run", str(out / "recipe.yaml"), "--out", str(tmp_path / "rerun"), "--quiet"]) == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-drop", "-1"], "expected a number >= 0"),
    (["--objective", "speed"], "invalid choice: 'speed'"),
    (["--trials", "0"], "expected an integer >= 1"),
    (["--depths", "0"], "expected an integer >= 1"),
    (["--vocab-keep-first", "-5"], "expected an integer >= 0"),
    (["--time-budget", "0"], "--time-budget: expected a number > 0"),
    (["--near-miss-margin", "-0.5"], "--near-miss-margin: expected a number >= 0"),
    (["--max-near-misses", "-1"], "--max-near-misses: expected an integer >= 0"),
    (["--kd-augment", "-1"], "--kd-augment: expected an integer >= 0"),
    (["--vocab-fallback", "closest"], "invalid choice: 'closest'"),
    (["--vocab-fallback", "prefix"], "prunes no vocabulary; add --vocab-keep-first N"),
])
def test_bad_options_are_refused_with_what_would_work(extra, message, tmp_path, capsys):
    assert main(["optimize", "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_folder_cleanai_did_not_write_is_refused_before_any_work(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    assert main(["optimize", "--model", "small_cnn", "--data", "digits", "--out", str(mine), "--quick"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]

"""`cleanai demo`: the packaged digits recipe through the recipe runner, every criterion, both reports, a closing
table that fits 100 columns; --overwrite, --threads and --epochs do what they say."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from cleanai.benchmark import load_rows
from cleanai.cli import main
from cleanai.demo import DEMO_RECIPE
from cleanai.pruning import list_criteria
from cleanai.recipes import read_status

REPO = Path(__file__).resolve().parents[1]
# Every criterion and every step as shipped; only the timing is cut short.
SHORT_TIMING = ["steps.benchmark.runs=3", "steps.benchmark.warmup=1", "steps.benchmark.repeats=1",
                "steps.benchmark.throughput_runs=1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--out", str(out), "--epochs", "4", "--threads", "1", "--quiet",
                     "--set", *SHORT_TIMING]) == 0
    return out, printed.getvalue()


def test_the_repository_recipe_is_the_packaged_one():
    assert (REPO / "recipes" / "digits_demo.yaml").resolve() == DEMO_RECIPE
    assert DEMO_RECIPE.parent.name == "recipes" and DEMO_RECIPE.parent.parent.name == "cleanai"


def test_the_demo_runs_every_criterion_and_the_unpruned_control_through_the_whole_loop_into_both_reports(demo):
    out, _ = demo
    status = read_status(out)
    assert status["recipe_file"] == str(DEMO_RECIPE) and status["finished"] is not None
    assert sorted(status["variants"]) == sorted([*list_criteria(), "control"])
    for entries in status["variants"].values():
        assert [e["id"] for e in entries] == ["train", "prune", "distill", "export", "quantize"]
        assert {e["status"] for e in entries} <= {"done", "cached"}
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["steps"][0]["epochs"] == 4 and recipe["steps"][2]["train"]["epochs"] == 1  # --epochs, a quarter
    assert recipe["threads"] == 1 and recipe["steps"][-1]["threads"] == 1  # --threads: training and timing
    rows = load_rows(out / status["benchmark"]["folder"] / "results.json")
    assert len(rows) == 1 + 3 * (len(list_criteria()) + 1)  # the baseline; per variant torch, ONNX and int8
    assert all(r.eval_samples == 359 and r.threads == 1 for r in rows) and rows[0].accuracy > 0.8
    pruned = [r for r in rows[1:] if r.name.endswith((" (torch)", " export")) and not r.name.startswith("control")]
    assert len(pruned) == 2 * len(list_criteria())
    assert all(r.macs < 0.6 * rows[0].macs for r in pruned)  # 30 % of the channels: about half the MACs
    control = [r for r in rows if r.name.startswith("control")]
    assert len(control) == 3 and all(r.macs == rows[0].macs for r in control)  # nothing removed
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    assert "<img" in (out / "report.html").read_text()


def test_the_demo_ends_with_a_table_of_every_variant_in_100_columns_and_the_reports_paths(demo):
    out, printed = demo
    lines = printed.rstrip("\n").splitlines()
    assert lines[-3:] == [f"Run written to {out.resolve()}", f"Report (PDF): {out.resolve() / 'report.pdf'}",
                          f"Report (HTML): {out.resolve() / 'report.html'}"]
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("CleanAI benchmark (baseline: "))
    table = lines[start:-3]
    assert max(len(line) for line in table) <= 100
    for variant in [*list_criteria(), "control"]:
        assert any(line.startswith(f"│ {variant} quantize ") for line in table)


def test_a_rerun_resumes_and_overwrite_starts_afresh(demo):
    out, _ = demo
    args = ["demo", "--out", str(out), "--epochs", "4", "--threads", "1", "--quiet"]
    assert main([*args, "--set", *SHORT_TIMING]) == 0
    status = read_status(out)
    assert {e["status"] for entries in status["variants"].values() for e in entries} == {"cached"}
    (out / "stale.txt").write_text("from before")
    fresh = ["demo", "--out", str(out), "--epochs", "1", "--quiet", "--overwrite"]
    assert main([*fresh, "--set", *SHORT_TIMING, "variants={magnitude: {prune: {criterion: magnitude}}}"]) == 0
    status = read_status(out)
    assert list(status["variants"]) == ["magnitude"]
    assert {e["status"] for e in status["variants"]["magnitude"]} == {"done"}
    assert not (out / "stale.txt").exists()
    assert len(list((out / "steps").iterdir())) == 5 + 1  # only this run's steps and its benchmark

"""Running recipes: variants share steps, reruns skip finished steps by their keys, a killed or failed run resumes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch

from cleanai.benchmark import load_rows
from cleanai.cli import main
from cleanai.recipes import read_status

CHAIN = """\
name: chain
model: {name: small_cnn}
data: {name: digits}
steps:
  - type: train
    epochs: 1
  - type: finetune
    epochs: %d
  - type: export
report: {auto: false}
"""


def statuses(run: Path) -> dict[str, str]:
    entries = read_status(run)["variants"]["main"]
    return {e["id"]: e["status"] for e in entries}


def step_records(run: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (run / "steps").glob("*/step.json")}


def test_the_demo_recipe_runs_as_is_on_tiny_settings_with_shared_steps(demo_run):
    status = read_status(demo_run)
    assert list(status["variants"]) == ["magnitude", "coverage"]
    assert {e["status"] for entries in status["variants"].values() for e in entries} <= {"done", "cached"}
    assert status["benchmark"]["status"] == "done" and status["finished"] is not None
    folders = sorted(p.name.split("-")[0] for p in (demo_run / "steps").iterdir())
    assert folders.count("train") == 1  # trained once, shared by both variants
    assert folders.count("prune") == folders.count("distill") == folders.count("quantize") == 2
    trained = [e for e in status["variants"]["coverage"] if e["id"] == "train"][0]
    assert trained["status"] == "cached"
    rows = load_rows(demo_run / status["benchmark"]["folder"] / "results.json")
    assert [r.name for r in rows] == ["baseline (train)", "magnitude (torch)", "magnitude export",
                                      "magnitude quantize", "coverage (torch)", "coverage export", "coverage quantize"]
    assert rows[0].accuracy > 0.8  # three epochs on digits
    assert rows[1].macs < 0.6 * rows[0].macs  # 30 % of the channels pruned: about half the MACs
    assert rows[3].quant_sqnr_db is not None  # the int8 artifact's check, kept with its files
    assert (demo_run / "report.pdf").is_file() and (demo_run / "report.html").is_file()


def test_a_rerun_skips_every_finished_step_by_its_key(demo_run, demo_args):
    before = step_records(demo_run)
    assert main([*demo_args, "--out", str(demo_run)]) == 0
    status = read_status(demo_run)
    assert {e["status"] for entries in status["variants"].values() for e in entries} == {"cached"}
    assert status["benchmark"]["status"] == "cached"
    assert step_records(demo_run) == before


def test_a_killed_run_resumes_at_the_step_it_was_in(recipe_file, cleanai_process, tmp_path):
    recipe, run = recipe_file(CHAIN % 30), tmp_path / "run"
    process = cleanai_process("run", str(recipe), "--out", str(run), "--quiet")
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and process.poll() is None:  # until fine-tuning has begun writing its folder
        if ((run / "run.json").is_file() and statuses(run).get("finetune") == "running"
                and any(p.name.endswith(".tmp") for p in (run / "steps").iterdir())):
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert statuses(run) == {"train": "done", "finetune": "running", "export": "pending"}
    before = step_records(run)
    assert [name.split("-")[0] for name in before] == ["train"]  # the killed step left no folder of its own
    assert any(p.name.endswith(".tmp") for p in (run / "steps").iterdir())  # only its staging folder

    assert main(["run", str(recipe), "--out", str(run), "--quiet", "--set", "steps.finetune.epochs=1"]) == 0
    assert statuses(run) == {"train": "cached", "finetune": "done", "export": "done"}
    after = step_records(run)
    train = next(name for name in before)
    assert after[train] == before[train]  # not rerun: the same key, files and timestamps
    assert not any(p.name.endswith(".tmp") for p in (run / "steps").iterdir())  # the staging folder is gone


def test_a_step_whose_files_changed_runs_again_and_so_do_the_steps_after_it(recipe_file, tmp_path):
    recipe, run = recipe_file(CHAIN % 1), tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run), "--quiet"]) == 0
    assert main(["run", str(recipe), "--out", str(run), "--quiet"]) == 0
    assert statuses(run) == {"train": "cached", "finetune": "cached", "export": "cached"}
    finetune = read_status(run)["variants"]["main"][1]["folder"]
    (run / finetune / "test_metrics.json").write_text("{}")
    assert main(["run", str(recipe), "--out", str(run), "--quiet"]) == 0
    assert statuses(run)["train"] == "cached" and statuses(run)["finetune"] == "done"


def test_a_failing_step_keeps_the_finished_ones_and_the_run_resumes(recipe_file, tmp_path, capsys):
    text = (CHAIN % 1).replace("  - type: finetune\n    epochs: 1\n",
                               "  - type: prune\n    ratio_dict: {nonexistent: 0.5}\n")
    recipe, run = recipe_file(text), tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run), "--quiet"]) == 2
    assert "ratio_dict names module(s) ['nonexistent']" in capsys.readouterr().err
    assert statuses(run) == {"train": "done", "prune": "failed", "export": "pending"}
    assert "nonexistent" in read_status(run)["variants"]["main"][1]["error"]
    train = read_status(run)["variants"]["main"][0]["folder"]
    assert (run / train / "model.safetensors").is_file()

    assert main(["run", str(recipe), "--out", str(run), "--quiet", "--set", "steps.prune.ratio_dict={}"]) == 0
    assert statuses(run) == {"train": "cached", "prune": "done", "export": "done"}


def test_the_recipe_threads_are_the_steps_and_the_callers_come_back_after_a_run_or_a_failure(recipe_file, tmp_path):
    caller = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        good = recipe_file("threads: 1\n" + CHAIN % 1, "good.yaml")
        assert main(["run", str(good), "--out", str(tmp_path / "good"), "--quiet"]) == 0
        assert read_status(tmp_path / "good")["threads"] == 1
        assert torch.get_num_threads() == 2
        failing = recipe_file("threads: 1\n" + (CHAIN % 1).replace("epochs: 1\n  - type: export",
                                                                    "ratio_dict: {nonexistent: 0.5}\n  - type: export")
                              .replace("type: finetune", "type: prune"), "failing.yaml")
        assert main(["run", str(failing), "--out", str(tmp_path / "failing"), "--quiet"]) == 2
        assert statuses(tmp_path / "failing")["prune"] == "failed"
        assert torch.get_num_threads() == 2
        unset = recipe_file(CHAIN % 1, "unset.yaml")  # no `threads`: the steps run on the caller's
        assert main(["run", str(unset), "--out", str(tmp_path / "unset"), "--quiet"]) == 0
        assert read_status(tmp_path / "unset")["threads"] == 2
    finally:
        torch.set_num_threads(caller)


def test_run_refuses_an_out_folder_it_did_not_write(recipe_file, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["run", str(recipe_file(CHAIN % 1)), "--out", str(mine)]) == 2
    assert "CleanAI did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

"""`cleanai tune`: a search over a YAML space on digits, its run folder, resume, cross-validation, bad input."""

import json

import pandas as pd
import pytest

from cleanai.cli import main

SPACE = """\
lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
optimizer: {type: categorical, choices: [adam, sgd], registry: optimizers}
optimizer_kwargs.momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: sgd}}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_tune_writes_the_run_folder_and_a_rerun_resumes_it(space, tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "--model", "small_cnn", "--data", "digits", "--space", str(space), "--epochs", "1",
            "--sampler", "random", "--seed", "0", "--out", str(out), "--quiet"]
    assert main([*args, "--trials", "2"]) == 0
    assert {"study.db", "trials.csv", "best.json", "summary.txt", "plots", "models"} <= {p.name for p in out.iterdir()}
    best = json.loads((out / "best.json").read_text())
    assert best["directions"] == ["maximize"] and best["metrics"] == ["val_accuracy"]
    assert (out / "models" / f"trial-{best['best'][0]['number']}.safetensors").is_file()
    assert (out / "plots" / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    first = pd.read_csv(out / "trials.csv")
    assert "2 complete" in capsys.readouterr().out
    assert main([*args, "--trials", "3"]) == 0  # the same folder: the study resumes with one more trial
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and trials["params_lr"][:2].tolist() == first["params_lr"].tolist()
    sgd, momentum = trials["params_optimizer"] == "sgd", trials.get("params_optimizer_kwargs.momentum")
    assert (momentum.notna() == sgd).all() if momentum is not None else not sgd.any()  # momentum only with sgd
    assert main([*args, "--trials", "20", "--max-epochs", "4"]) == 0  # 3 epochs spent, 1 left in the budget
    assert len(pd.read_csv(out / "trials.csv")) == 4


def test_tune_cross_validates_with_folds(space, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["tune", "--model", "small_cnn", "--space", str(space), "--epochs", "1", "--trials", "1",
                 "--folds", "2", "--out", str(out), "--quiet"]) == 0
    best = json.loads((out / "best.json").read_text())["best"][0]
    assert len(best["cv_scores"]) == 2 and best["values"][0] == pytest.approx(sum(best["cv_scores"]) / 2)


@pytest.mark.parametrize(("space_text", "extra", "message"), [
    ("lr: {type: float, low: 0.1, high: 0.01}\n", [], "parameter 'lr': low (0.1) is greater than high (0.01)"),
    ("width: [8, 16]\n", [], "parameter 'width' in"),
    ("lr: [0.1]\n", ["--sampler", "bayes"], "unknown sampler 'bayes'"),
    ("lr: {type: float, low: 0.001, high: 0.1}\n", ["--sampler", "grid"], "the grid sampler needs a finite set"),
    ("lr: [0.1]\n", ["--heartbeat", "5", "--grace-period", "5"], "grace_period (5) must exceed heartbeat_interval (5)"),
])
def test_tune_refuses_bad_input_in_one_line(space_text, extra, message, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(space_text)
    code = main(["tune", "--space", str(path), "--trials", "1", "--epochs", "1", "--out", str(tmp_path / "o"),
                 "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_tune_refuses_a_folder_it_did_not_write(space, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["tune", "--space", str(space), "--out", str(mine), "--quiet"]) == 2
    assert "CleanAI did not write" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"


def test_list_samplers_and_pruners(capsys):
    assert main(["list", "samplers"]) == 0 and "hyperband" not in capsys.readouterr().out
    assert main(["list", "pruners"]) == 0 and "hyperband" in capsys.readouterr().out

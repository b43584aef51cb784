"""`cleanai` as a careless user meets it: outputs never destroy anything, every bad input is one line and exit 2."""

import argparse
import json
import os

import pytest
import torch

from cleanai import cli
from cleanai.cli import build_parser, main
from cleanai.export import export_onnx
from cleanai.io import RUN_MARKER
from cleanai.models import create_model

WRITERS = {  # every command that writes, with the cheapest arguments that make it run
    "demo": ["demo", "--epochs", "1", "--quiet"],
    "train": ["train", "--epochs", "1", "--quiet"],
    "benchmark": ["benchmark", "--runs", "2"],
    "quantize": ["quantize", "--preset", "auto", "--calib-batches", "1", "--no-benchmark"],
    "prune": ["prune", "--quiet"],
    "distill": ["distill", "--teacher", "no-teacher", "--quiet"],  # a missing teacher would stop it at its first step
}


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"cleanai {command}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# Commands that resume into their own run folder on a rerun; their refusal of a user's folder is tested beside
# them (tests/test_cli_tune.py, tests/recipes/test_runner.py). `run` has no --overwrite: a recipe run resumes.
RESUMING = {"tune", "run", "optimize"}  # they resume into their own --out folder


def test_every_command_that_writes_takes_overwrite():
    writers = {name for name, p in _subcommands().items() if any("--out" in a.option_strings for a in p._actions)}
    assert writers == {*WRITERS, "export", *RESUMING}
    for name in writers - {"run", "optimize"}:  # these never start afresh over their own folder
        assert any("--overwrite" in a.option_strings for a in _subcommands()[name]._actions), name


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_users_folder_is_refused_before_any_work_and_left_intact(command, tmp_path, capsys):
    user = tmp_path / "userproj"
    (user / "src").mkdir(parents=True)
    (user / "src" / "main.py").write_text("print('mine')")
    # a missing data folder would stop the run at its first step: the --out check must come before it
    argv = [*WRITERS[command], "--out", str(user)]
    if command not in ("demo", "distill"):
        argv += ["--data", "cifar10", "--data-dir", str(tmp_path / "no-data")]
    assert main(argv) == 2
    assert "is a folder CleanAI did not write and it is not empty" in _one_line_error(capsys, command)
    assert (user / "src" / "main.py").read_text() == "print('mine')"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["userproj"]


def test_a_cleanai_run_folder_is_replaced_and_overwrite_replaces_a_users_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    (run / "stale.json").write_text("{}")  # from the earlier run: must not survive the next one
    assert main(["train", "--epochs", "1", "--quiet", "--out", str(run)]) == 0
    assert not (run / "stale.json").exists() and (run / RUN_MARKER).is_file()
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("n")
    assert main(["benchmark", "--runs", "2", "--out", str(user)]) == 2
    assert main(["benchmark", "--runs", "2", "--out", str(user), "--overwrite"]) == 0
    assert sorted(p.name for p in user.iterdir()) == [RUN_MARKER, "metrics.png", "results.csv", "results.json"]


@pytest.mark.parametrize(("command", "out", "message"), [
    ("prune", ".", "'.' does not name a folder"),
    ("prune", "", "'.' does not name a folder"),
    ("prune", "notes.txt/sub", "notes.txt', which is a file, not a folder"),
    ("prune", "notes.txt", "is an existing file, and a folder never replaces a file"),
    ("prune", "/proc/cleanai-run", "cannot be written: '/proc' is not writable"),
    ("export", "folder", "is an existing folder; give a file path such as 'folder/model.onnx'"),
    ("export", "notes.txt", "'notes.txt' exists; choose a new file name, or pass --overwrite"),
])
def test_a_bad_destination_is_one_line_before_any_work(command, out, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    assert main([command, "--out", out, "--data", "cifar10", "--data-dir", "no-data"]) == 2
    assert message in _one_line_error(capsys, command)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"]
    for overwrite in ([], ["--overwrite"]):  # even --overwrite never turns a file into a folder
        assert main(["prune", "--out", "notes.txt", *overwrite]) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _numeric_options() -> list[tuple[str, str]]:
    """Every option of every subcommand that takes a number."""
    out = []
    for name, parser in _subcommands().items():
        for action in parser._actions:
            if action.option_strings and action.type not in (None, str) and action.type.__name__ in ("int", "float"):
                out.append((name, action.option_strings[0]))
    return out


@pytest.mark.parametrize(("command", "option"), _numeric_options())
def test_every_numeric_option_refuses_a_value_out_of_range_in_one_line(command, option, tmp_path, capsys):
    required = ["--teacher", str(tmp_path / "teacher")] if command == "distill" else []
    for bad in ("-1", "nan", "abc"):
        assert main([command, *required, option, bad, "--out", str(tmp_path / "out")]) == 2, (option, bad)
        err = _one_line_error(capsys, command)
        assert option.lstrip("-").replace("-", "_") in err.replace("-", "_"), err
    assert not (tmp_path / "out").exists()


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\nlr: [0.1\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert f"config file {config}:3:1: YAML syntax error: expected ',' or ']'" in _one_line_error(capsys, "train")


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("scheduler: step\nscheduler_kwargs: {step_size: 0}\n",
     "TrainConfig: scheduler 'step' with scheduler_kwargs={'step_size': 0} fails when used: ZeroDivisionError"),
    ("epochs: 0\n", "TrainConfig: epochs: Input should be greater than or equal to 1 (got 0)"),
    ("- epochs\n", "must hold a mapping of TrainConfig fields, got list"),
    ("resume: nowhere/last.pt\n", "resume: 'nowhere/last.pt' in"),
    ("loss: mse\n", "loss 'mse' does not fit this model and data (logits (64, 10) and targets"),
    ("monitor: val_f1\nearly_stopping_patience: 2\n", "monitor 'val_f1', watched by early_stopping_patience, is not"),
])
def test_a_bad_config_value_is_one_line_before_training(yaml_text, message, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in _one_line_error(capsys, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"]  # no checkpoint folder: no epoch ran


def test_resume_in_the_config_file_continues_that_checkpoint(tmp_path):
    first = tmp_path / "first"
    assert main(["train", "--epochs", "1", "--seed", "0", "--quiet", "--out", str(first)]) == 0
    config = tmp_path / "resume.yaml"
    config.write_text(f"resume: {tmp_path / 'first.checkpoints' / 'last.pt'}\nepochs: 2\n")
    second = tmp_path / "second"
    assert main(["train", "--config", str(config), "--quiet", "--out", str(second)]) == 0
    before = json.loads((first / "history.json").read_text())
    after = json.loads((second / "history.json").read_text())
    # epoch 1 is the saved record (its wall time included): resumed, not re-run
    assert len(after["records"]) == 2 and after["records"][0] == before["records"][0]


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "resnet20"], "model 'resnet20' takes 3-channel images (input size (3, 32, 32)) but dataset "
                              "'digits' has 1-channel images"),
    (["--model", "tiny_bert_classifier"], "model 'tiny_bert_classifier' takes token ids (text) but dataset "
                                          "'digits' holds images"),
    (["--data", "clinc150"], "model 'small_cnn' takes images but dataset 'clinc150' holds text"),
    (["--weights", "akamaster"], "model 'small_cnn' has no 'akamaster' weights; the models that have them: "
                                 "resnet110, resnet20, resnet32, resnet44, resnet56"),
])
@pytest.mark.parametrize("command", ["train", "prune", "benchmark", "export", "quantize"])
def test_a_model_that_does_not_fit_the_data_is_named_before_any_work(command, argv, message, tmp_path, capsys):
    out = tmp_path / ("out.onnx" if command == "export" else "out")
    assert main([command, *argv, "--out", str(out)]) == 2
    assert message in _one_line_error(capsys, command)
    assert list(tmp_path.iterdir()) == []


def test_onnx_that_is_not_onnx_or_fits_other_data_is_one_line(tmp_path, capsys):
    junk = tmp_path / "notes.onnx"
    junk.write_text("not a graph")
    assert main(["benchmark", "--onnx", str(junk), "--runs", "2"]) == 2
    assert f"--onnx '{junk}' cannot be loaded" in _one_line_error(capsys, "benchmark")
    assert main(["benchmark", "--onnx", str(tmp_path / "missing.onnx"), "--runs", "2"]) == 2
    assert "is not a file" in _one_line_error(capsys, "benchmark")
    other = export_onnx(create_model("resnet20"), torch.zeros(1, 3, 32, 32), tmp_path / "r20.onnx").path
    assert main(["benchmark", "--onnx", str(other), "--runs", "2"]) == 2
    assert f"--onnx '{other}' does not run on dataset 'digits' (a tensor of shape (1, 1, 8, 8))" in _one_line_error(
        capsys, "benchmark")
    ten_of_seven = export_onnx(create_model("small_cnn", num_classes=7), torch.zeros(1, 1, 8, 8),
                               tmp_path / "cnn7.onnx").path
    assert main(["benchmark", "--onnx", str(ten_of_seven), "--runs", "2"]) == 2
    assert "returns (1, 7) on dataset 'digits', expected logits (1, 10)" in _one_line_error(capsys, "benchmark")


def test_a_real_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise ZeroDivisionError("a bug in CleanAI")

    monkeypatch.setattr(cli, "_benchmark", broken)
    with pytest.raises(ZeroDivisionError):
        main(["benchmark"])


@pytest.mark.parametrize(("argv", "environ", "message"), [
    (["--nproc", "0"], {}, "argument --nproc: expected an integer >= 1, got '0'"),
    (["--nproc", "2"], {"WORLD_SIZE": "2"}, "already runs under torchrun (WORLD_SIZE=2); leave --nproc out"),
    (["--nproc", "2", "--batch-size", "63"], {}, "--batch-size 63 is the global batch of one step and must divide "
                                                 "evenly among --nproc 2 processes; use a multiple of 2"),
    (["--nproc", str(len(os.sched_getaffinity(0)) + 1), "--batch-size", str(len(os.sched_getaffinity(0)) + 1)],
     {"CUDA_VISIBLE_DEVICES": ""},
     f"this machine has {len(os.sched_getaffinity(0))} usable CPU core(s)"),
])
def test_a_bad_process_count_is_one_line_before_any_work(argv, environ, message, tmp_path, monkeypatch, capsys):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "out")]) == 2
    assert message in _one_line_error(capsys, "train")
    assert list(tmp_path.iterdir()) == []

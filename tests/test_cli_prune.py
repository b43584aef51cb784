"""`cleanai prune` end to end on the real digits: a trained small CNN pruned iteratively, saved, reloaded."""

import json

import pytest
import torch

from cleanai.cli import main
from cleanai.data import load_digits
from cleanai.io import save_safetensors
from cleanai.models import create_model
from cleanai.pruning import load_pruned, read_manifest
from cleanai.training import TrainConfig, Trainer


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small_cnn trained 3 epochs on digits, saved as safetensors (what `cleanai train` writes)."""
    torch.manual_seed(0)
    model = create_model("small_cnn")
    Trainer(model, config=TrainConfig(epochs=3, lr=0.01, seed=0, progress=False)).fit(
        load_digits().loaders(batch_size=64).train)
    return save_safetensors(model, tmp_path_factory.mktemp("trained") / "model.safetensors")


def test_prune_writes_a_reloadable_model_reports_and_a_before_after_table(weights, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", "small_cnn", "--data", "digits", "--weights", str(weights),
                 "--criterion", "wanda", "--ratio", "0.4", "--scope", "global", "--steps", "2",
                 "--finetune-epochs", "1", "--lr", "0.003", "--calib-batches", "2", "--round-to", "2",
                 "--max-layer-ratio", "0.6", "--ignored-layers", "features.3.0", "--out", str(out), "--quiet"]) == 0

    assert sorted(p.name for p in out.iterdir()) == [".cleanai-run", "history.json", "manifest.json",
                                                     "model.safetensors", "prune_report.json", "summary.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"]  # no staging folder left behind
    assert read_manifest(out)["base"] == {"name": "small_cnn", "kwargs": {"num_classes": 10}}
    report = json.loads((out / "prune_report.json").read_text())
    assert report["criterion"] == "wanda" and report["config"]["iterative_steps"] == 2
    assert report["macs_after"] < report["macs_before"]
    history = json.loads((out / "history.json").read_text())
    assert [s["step"] for s in history["steps"]] == [1, 2]
    assert all(s["after_finetune"] is not None for s in history["steps"])

    model = load_pruned(out)
    widths = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert widths["features.3.0"] == 64  # ignored
    assert all(w % 2 == 0 for w in widths.values())  # round_to
    assert widths["features.0.0"] >= 16 * 0.4 and widths["features.1.0"] >= 32 * 0.4  # max_layer_ratio
    assert widths["features.0.0"] < 16 or widths["features.1.0"] < 32

    unpruned, pruned = json.loads((out / "summary.json").read_text())
    test = load_digits().loaders(batch_size=256).test
    assert pruned["test"]["accuracy"] == pytest.approx(
        Trainer(model, config=TrainConfig(progress=False)).evaluate(test)["accuracy"])
    trained = create_model("small_cnn", pretrained=weights)
    assert unpruned["test"]["accuracy"] == pytest.approx(
        Trainer(trained, config=TrainConfig(progress=False)).evaluate(test)["accuracy"])
    assert unpruned["params"] > pruned["params"] == sum(p.numel() for p in model.parameters())

    printed = capsys.readouterr().out
    assert "pruned with 'wanda'" in printed and "unpruned" in printed and str(out) in printed


def test_criterion_options_and_per_module_ratios_reach_the_pruner(weights, tmp_path):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", "small_cnn", "--weights", str(weights), "--criterion", "coverage",
                 "--criterion-arg", "position=output", "metric=frequency", "--ratio", "0.5",
                 "--ratio-dict", "features.0=0", "features.3.0=0.25", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "prune_report.json").read_text())["config"]
    assert config["criterion_kwargs"] == {"position": "output", "metric": "frequency"}
    assert config["ratio_dict"] == {"features.0": 0, "features.3.0": 0.25}
    widths = {n: m.out_channels for n, m in load_pruned(out).named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert (widths["features.0.0"], widths["features.1.0"], widths["features.3.0"]) == (16, 16, 48)


@pytest.mark.parametrize(("argv", "message"), [
    (["--ratio", "1.5"], r"ratio must be in [0, 1)"),
    (["--finetune-epochs", "-1"], "argument --finetune-epochs: expected an integer >= 0, got '-1'"),
    (["--ratio-dict", "features.0"], "--ratio-dict takes KEY=VALUE, got 'features.0'"),
    (["--criterion", "coverage", "--criterion-arg", "position=middle"], "position must be one of activation, output"),
    (["--criterion", "wandaa"], "Did you mean 'wanda'"),
    (["--ignored-layers", "features.9"], "ignored_layers names module(s) ['features.9']"),
    (["--finetune-epochs", "1", "--optimizer", "sgdd"], "sgd"),
])
def test_bad_input_exits_2_with_a_reason_and_writes_nothing(argv, message, tmp_path, capsys):
    assert main(["prune", "--model", "small_cnn", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cleanai prune: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

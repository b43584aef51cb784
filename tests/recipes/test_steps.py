"""Recipe steps on tiny settings: the tune step searches and trains its best parameters; every step that trains
logs TensorBoard scalars in its folder of the run; a distilled student may be layers cut from the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cleanai.benchmark import load_rows
from cleanai.cli import main
from cleanai.recipes import build_report, read_status

TRAINING = """\
name: training
model: {name: small_cnn}
data: {name: digits}
steps:
  - type: train
    epochs: 1
  - type: tune
    sampler: random
    n_trials: 3
    space:
      lr: {type: float, low: 0.0001, high: 0.01, log: true}
      optimizer: {type: categorical, choices: [sgd, adamw]}
    train: {epochs: 2, metrics: [accuracy]}
  - type: prune
    ratio: 0.3
    finetune: {epochs: 1}
    teacher: model
    alpha: 0.25
    temperature: 4
  - type: distill
    teacher: tune
    train: {epochs: 1}
  - type: finetune
    epochs: 1
report: {auto: false}
"""
SCALARS = {"train/loss", "val/loss", "val/accuracy", "lr"}


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("training")
    recipe = folder / "training.yaml"
    recipe.write_text(TRAINING, encoding="utf-8")
    assert main(["run", str(recipe), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def step_folder(run: Path, step_id: str) -> Path:
    entry = next(e for e in read_status(run)["variants"]["main"] if e["id"] == step_id)
    assert entry["status"] == "done"
    return run / entry["folder"]


def scalar_tags(folder: Path) -> set[str]:
    events = list(folder.glob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {folder}"
    return set(EventAccumulator(str(folder)).Reload().Tags()["scalars"])


def test_the_tune_step_searches_then_trains_its_model_with_the_best_parameters(training_run):
    folder = step_folder(training_run, "tune")
    best = json.loads((folder / "best.json").read_text())
    trials = (folder / "trials.csv").read_text().strip().splitlines()
    assert len(trials) == 1 + 3 and (folder / "study" / "study.db").is_file()
    params = best["best"][0]["params"]
    assert set(params) == {"lr", "optimizer"} and best["best"][0]["weights"] is None  # the model is trained again
    history = json.loads((folder / "history.json").read_text())
    assert len(history["records"]) == 2  # the step's model: the base TrainConfig's epochs, the best lr/optimizer
    assert history["records"][0]["lr"] == pytest.approx(params["lr"])
    assert (folder / "plots" / "optimization_history.png").read_bytes().startswith(b"\x89PNG")
    search = next(s for s in build_report(training_run).sections if s.title == "Hyperparameter search")
    assert f"best trial {best['best'][0]['number']}" in search.blocks[0].text
    assert sum(type(b).__name__ == "Figure" for b in search.blocks) == len(list((folder / "plots").glob("*.png")))


def test_a_prune_step_distils_its_fine_tunes_with_its_own_alpha_and_temperature(training_run):
    record = json.loads((step_folder(training_run, "prune") / "step.json").read_text())
    assert record["summary"]["kd"] == {"alpha": 0.25, "temperature": 4.0}


@pytest.mark.parametrize(("step_id", "subfolder"), [("train", ""), ("tune", ""), ("prune", "step1"),
                                                    ("distill", ""), ("finetune", "")])
def test_every_step_that_trains_logs_scalars_under_the_run_folder(training_run, step_id, subfolder):
    tags = scalar_tags(step_folder(training_run, step_id) / "tensorboard" / subfolder)
    assert SCALARS <= tags


def line_of(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.mark.parametrize(("edit", "where", "message"), [
    (("      optimizer: {type: categorical", "      channels: {type: categorical"), ("    space:", "steps[1].space"),
     "'channels' are not TrainConfig fields"),
    (("    n_trials: 3\n", "    n_trials: 3\n    run_dir: elsewhere\n"), ("  - type: tune", "steps[1]"),
     "run_dir are set by the recipe runner"),
    (("high: 0.01, log: true", "high: 0.01, log: maybe"), ("    space:", "steps[1].space"), "'lr'"),
    (("    n_trials: 3\n", "    n_trials: 0\n"), ("    n_trials:", "steps[1].n_trials"), "greater than or equal to 1"),
])
def test_a_bad_tune_step_is_one_line_naming_file_line_and_field_and_nothing_runs(recipe_file, capsys, tmp_path,
                                                                              edit, where, message):
    text = TRAINING.replace(*edit)
    path = recipe_file(text)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cleanai run: error: {path}:{line_of(text, where[0])}: {where[1]}: ")
    assert message in line
    assert not (tmp_path / "run").exists()


STUDENT = """\
name: student
model:
  name: tiny_bert_classifier
  kwargs: {num_hidden_layers: 2}
data:
  name: clinc150
  options: {config: small, include_oos: false}
  subset: {train: 300, val: 150, test: 150}
  batch_size: 32
steps:
  - type: train
    id: teacher
    epochs: 1
    lr: 0.003
  - type: distill
    teacher: teacher
    student_layers: [1]
    train: {epochs: 1, lr: 0.003}
  - type: export
  - type: quantize
    mode: dynamic
  - type: benchmark
    baseline: teacher
    runs: 3
    warmup: 1
    repeats: 1
    throughput_runs: 1
report: {auto: false}
"""


def test_a_distill_step_with_student_layers_cuts_the_student_and_later_steps_read_it_back(recipe_file, tmp_path):
    run = tmp_path / "run"
    assert main(["run", str(recipe_file(STUDENT)), "--out", str(run), "--quiet"]) == 0
    status = read_status(run)
    assert [e["status"] for e in status["variants"]["main"]] == ["done"] * 4
    rows = load_rows(run / status["benchmark"]["folder"] / "results.json")
    assert [r.name for r in rows] == ["baseline (teacher)", "main (torch)", "main export", "main quantize"]
    assert all(r.eval_samples == 150 for r in rows)  # data.subset: the test split is 150 queries
    assert rows[1].params < rows[0].params  # one of the teacher's two layers
    assert rows[3].size_mb < rows[2].size_mb  # dynamic int8 beside the fp32 ONNX file


def test_keep_layers_and_vocabulary_steps_make_a_smaller_student_that_later_steps_read_back(recipe_file, tmp_path):
    text = STUDENT.replace("  - type: distill\n    teacher: teacher\n    student_layers: [1]\n",
                           "  - type: keep_layers\n    layers: [1]\n  - type: distill\n    teacher: teacher\n")
    text = text.replace("  - type: export\n", "  - type: vocabulary\n  - type: export\n")
    run = tmp_path / "run"
    assert main(["run", str(recipe_file(text)), "--out", str(run), "--quiet"]) == 0
    status = read_status(run)
    entries = status["variants"]["main"]
    assert [e["type"] for e in entries] == ["train", "keep_layers", "distill", "vocabulary", "export", "quantize"]
    assert all(e["status"] == "done" for e in entries)
    vocabulary = json.loads((run / entries[3]["folder"] / "vocabulary.json").read_text())
    assert vocabulary["tokens"] < vocabulary["of"]  # the training queries do not use every character piece
    assert vocabulary["fallback"] == "nearest"  # a dropped token reads the nearest kept row unless told otherwise
    rows = load_rows(run / status["benchmark"]["folder"] / "results.json")
    assert [r.name for r in rows] == ["baseline (teacher)", "main (torch)", "main export", "main quantize"]
    assert rows[1].params < rows[0].params and rows[1].accuracy is not None

"""`optimize()` end to end on the digits CNN (quick settings): search, choice, artifact, report, recipe, resume,
and the budget nobody meets."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file, save_file

from cleanai.data import load_dataset
from cleanai.errors import ConfigError, OutputError
from cleanai.optimize import OptimizeError, optimize
from cleanai.optimize import search as search_module
from cleanai.optimize.budget import TimeBudget
from cleanai.pruning import load_pruned
from cleanai.recipes import DataSpec, ModelSpec, load_recipe, read_status
from cleanai.runtime import OrtRunner, TorchRunner, evaluate

from .conftest import tiny


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path):
    out = tmp_path_factory.mktemp("optimize") / "run"
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    # mild pruning and a loose budget: the test is of the search's mechanics, not of how far a CNN trained for
    # 4 epochs can be pruned after one epoch of fine-tuning
    caller = torch.get_num_threads()
    torch.set_num_threads(2)  # the process's threads differ from the latency threads (1)
    try:
        return model, optimize(model, "digits", tiny(out, max_accuracy_drop=10.0, max_ratio=0.2, max_scale=0.5))
    finally:
        torch.set_num_threads(caller)


def test_every_trial_is_listed_and_the_front_holds_complete_trials_only(searched):
    _, result = searched
    assert len(result.trials) == 3
    assert {r["number"] for r in result.trials} == {0, 1, 2}
    assert result.front and all(r["state"] == "complete" and r["pareto"] for r in result.front)
    for row in result.trials:
        if row["state"] == "complete":
            assert 0 <= row["val_accuracy"] <= 1 and row["latency_ms"] > 0 and row["size_mb"] > 0
    saved = json.loads((result.out / "trials.json").read_text())
    assert [r["number"] for r in saved] == [r["number"] for r in result.trials]


def test_the_choice_meets_the_budget_and_is_the_fastest_within_it(searched):
    _, result = searched
    assert result.met and result.chosen is not None
    assert result.chosen["val_accuracy"] >= result.floor
    within = [r for r in result.trials if r["meets_budget"]]
    assert result.chosen["latency_ms"] == min(r["latency_ms"] for r in within)
    assert result.floor == pytest.approx(result.baseline["val_accuracy"] - 0.10)


def test_the_final_artifact_reloads_and_scores_what_the_benchmark_measured(searched):
    _, result = searched
    assert set(result.artifact) >= {"torch"}
    loaders = load_dataset("digits").loaders(batch_size=64)
    rows = {r["name"]: r for r in result.final["rows"]}
    torch_model = load_pruned(result.artifact["torch"]).eval()
    torch_acc = evaluate(TorchRunner(torch_model), loaders.test).metrics["accuracy"]
    measured = rows.get("main (torch)", rows["baseline (recipe model)"])  # unpruned: the original is the torch artifact
    assert torch_acc == pytest.approx(measured["accuracy"])
    if "onnx" in result.artifact:
        onnx = OrtRunner(result.artifact["onnx"])
        assert evaluate(onnx, loaders.test).metrics["accuracy"] == pytest.approx(result.final["test_accuracy"])
        if result.chosen["params"]["quant"] == "none" and not result.chosen["params"]["fold_bn"]:
            x = next(iter(loaders.test))[0][:8]
            assert torch.allclose(onnx(x), torch_model(x), atol=1e-4)


def test_report_front_plot_and_result_files_are_written(searched):
    _, result = searched
    for name in ("report.pdf", "report.html", "pareto_front.png", "result.json", "recipe.yaml", "study/study.db",
                 "baseline.json", "sensitivity.json"):
        assert (result.out / name).is_file(), name
    html = (result.out / "report.html").read_text()
    assert "Optimize: budget and choice" in html and "Every trial" in html and "Variants" in html
    assert (result.out / "report.pdf").read_bytes().startswith(b"%PDF")


def test_the_written_recipe_is_the_pipeline_the_final_run_ran(searched):
    _, result = searched
    recipe = load_recipe(result.recipe)  # validates (`cleanai validate`); tests/test_cli_optimize.py reruns one
    assert recipe.steps[-1].type == "benchmark" and recipe.steps[-1].baseline == "model"
    assert (result.out / "final" / "recipe.yaml").read_text() == result.recipe.read_text()
    status = read_status(result.out / "final")
    assert [e["type"] for e in status["variants"]["main"]] == [s.type for s in recipe.steps[:-1]]
    assert all(e["status"] == "done" for e in status["variants"]["main"]) and status["benchmark"]["status"] == "done"
    # the final rerun trains on the process's threads, as the trials did; the latency threads time it only
    assert status["threads"] == 2 and result.config.threads == 1 and recipe.steps[-1].threads == 1
    assert [s["type"] for s in result.final["steps"]] == [s.type for s in recipe.steps]
    assert result.final["threads"] == 2 and all(s["seconds"] > 0 for s in result.final["steps"])
    params = result.chosen["params"]
    assert ("prune" in [s.type for s in recipe.steps]) == (params["ratio"] > 0)
    assert ("quantize" in [s.type for s in recipe.steps]) == (params["quant"] != "none")


def test_a_rerun_resumes_the_study_and_runs_only_the_missing_trials(searched):
    model, result = searched
    before = optuna.load_study(study_name="optimize", storage=f"sqlite:///{result.out / 'study' / 'study.db'}")
    starts = {t.number: t.datetime_start for t in before.trials}
    again = optimize(model, "digits", tiny(result.out, max_accuracy_drop=10.0, max_ratio=0.2, max_scale=0.5,
                                           n_trials=4))
    assert len(again.trials) == 4
    after = optuna.load_study(study_name="optimize", storage=f"sqlite:///{result.out / 'study' / 'study.db'}")
    assert {t.number: t.datetime_start for t in after.trials if t.number in starts} == starts


def test_near_misses_are_rerun_with_the_final_fine_tune_best_first_and_only_the_result_is_benchmarked(digits_weights,
                                                                                                  tmp_path):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    out = tmp_path / "run"
    # floor: the original's own accuracy, so the pruned candidates that lost some are near misses (margin: 100
    # points); smallest first: pruning makes an int8 artifact smaller whatever its accuracy
    result = optimize(model, "digits", tiny(out, max_accuracy_drop=0.0, max_ratio=0.6, objective="size",
                                            final_epochs=3, near_miss_margin=100.0, max_near_misses=2))

    def objective(row):
        return row["size_mb"], row["latency_ms"]

    complete = [r for r in result.trials if r["state"] == "complete"]
    within = [r for r in complete if r["meets_budget"]]
    choice = min(within, key=objective) if within else None
    expected = sorted((r for r in complete if not r["meets_budget"]
                       and (choice is None or objective(r) < objective(choice))), key=objective)
    assert expected, "no candidate lost accuracy ahead of the choice: nothing for this test to rerun"
    ran = result.near_misses
    assert [r["number"] for r in ran] == [r["number"] for r in expected][:len(ran)]  # best objective first
    assert all(r["meets_budget"] == (r["val_accuracy"] >= result.floor) for r in ran)
    assert all(r["val_accuracy_search"] < result.floor for r in ran)
    assert not any(r["meets_budget"] for r in ran[:-1])  # the walk stops at the first that meets the floor
    assert all("benchmark" not in (out / "near_misses" / f"trial-{r['number']}.yaml").read_text() for r in ran)
    if ran[-1]["meets_budget"]:  # the final fine-tune lifted it over the floor: it is the choice
        assert result.met and result.chosen["number"] == ran[-1]["number"] and not result.chosen["meets_budget"]
        assert result.final["val_accuracy"] == pytest.approx(ran[-1]["val_accuracy"])
    else:  # none did: the search's own choice, when it has one, is rerun as without near misses
        assert len(ran) == min(len(expected), 2)
        assert result.met == (choice is not None)
        assert result.chosen["number"] == (choice or result.chosen)["number"]
    assert len(benchmark_steps(out)) == (1 if result.met else 0)  # the result's benchmark only
    saved = json.loads((out / "result.json").read_text())
    assert saved["near_misses"] == ran and "Near misses" in (out / "report.html").read_text()

    # the floor at the first near miss's final accuracy: its rerun (resumed from its steps) now meets it
    first = ran[0]
    assert first["val_accuracy"] > first["val_accuracy_search"]  # three epochs lifted it above its search accuracy
    drop = 100 * (result.baseline["val_accuracy"] - first["val_accuracy"])
    again = optimize(model, "digits", tiny(out, max_accuracy_drop=drop, max_ratio=0.6, objective="size",
                                           final_epochs=3, near_miss_margin=100.0, max_near_misses=2))
    assert [r["number"] for r in again.near_misses] == [first["number"]] and again.near_misses[0]["meets_budget"]
    assert again.met and again.chosen["number"] == first["number"] and not again.chosen["meets_budget"]
    assert again.final["val_accuracy"] == pytest.approx(first["val_accuracy"])
    assert "near miss" in again.recipe.read_text() and "a near miss in the search" in (out / "report.html").read_text()
    assert len(benchmark_steps(out)) == 1 + result.met  # one more result, one more benchmark


def benchmark_steps(out: Path) -> list[Path]:
    """The benchmark steps run in the search's final folder."""
    return [p for p in (out / "final" / "steps").glob("*/step.json") if json.loads(p.read_text())["type"] == "benchmark"]


def test_a_trials_latency_is_its_ratio_to_the_original_timed_in_turns_times_the_originals(digits_weights, tmp_path,
                                                                                           monkeypatch):
    from cleanai.recipes import DataSpec, ModelSpec

    search = search_module._Search(tiny(tmp_path / "run", max_ratio=0.0, latency_rounds=3), ModelSpec(
        name="small_cnn", weights=str(digits_weights)), DataSpec(name="digits"), tmp_path / "run")
    reference, base_ms = search._reference()
    assert base_ms == search.baseline["latency_ms_onnx"] and reference.runner.backend == "onnxruntime"
    candidate = TorchRunner(search.source, name="candidate")
    load = [1.0, 3.0, 9.0]  # the machine slows down from round to round, for both alike
    timed: list[str] = []

    def fake_time(self, bench):
        timed.append("reference" if bench is reference else "candidate")
        return {"reference": 6.0, "candidate": 2.0}[timed[-1]] * load[(len(timed) - 1) // 2]

    monkeypatch.setattr(search_module._Search, "_time", fake_time)
    latency = search.latency(candidate)
    assert timed == ["reference", "candidate", "candidate", "reference", "reference", "candidate"]
    assert latency == pytest.approx(base_ms / 3)  # 3x faster than the original in every round


def test_an_interrupted_search_resumes_where_it_stopped(digits_weights, tmp_path, monkeypatch):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    calls = {"n": 0}
    original = search_module._Search.latency

    def interrupt_second_trial(self, runner):
        calls["n"] += 1
        if calls["n"] == 2:  # trial 0, then trial 1 is interrupted
            raise KeyboardInterrupt
        return original(self, runner)

    monkeypatch.setattr(search_module._Search, "latency", interrupt_second_trial)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        optimize(model, "digits", tiny(out, n_trials=2, quant_modes=["none"], max_ratio=0.0))
    storage = f"sqlite:///{out / 'study' / 'study.db'}"
    first = optuna.load_study(study_name="optimize", storage=storage).trials
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL"]
    monkeypatch.setattr(search_module._Search, "latency", original)
    result = optimize(model, "digits", tiny(out, n_trials=3, quant_modes=["none"], max_ratio=0.0))
    assert [r["state"] for r in result.trials] == ["complete", "fail", "complete"]
    after = optuna.load_study(study_name="optimize", storage=storage).trials
    assert after[0].datetime_start == first[0].datetime_start  # the finished trial was kept, not rerun
    assert result.met and (out / "recipe.yaml").is_file() and (out / "artifact" / "model.onnx").is_file()


def test_starting_points_the_trial_count_did_not_reach_are_not_listed_as_trials(digits_weights, tmp_path):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    out = tmp_path / "run"
    result = optimize(model, "digits", tiny(out, n_trials=1, target_latency_ms=1e-6))  # no final rerun
    queued = optuna.load_study(study_name="optimize", storage=f"sqlite:///{out / 'study' / 'study.db'}").trials
    assert [t.state.name for t in queued] == ["COMPLETE", "WAITING"]  # two starting points, one trial
    assert [(r["number"], r["state"]) for r in result.trials] == [(0, "complete")]
    assert [r["number"] for r in json.loads((out / "trials.json").read_text())] == [0]


def test_each_trial_fine_tunes_at_its_sampled_learning_rate_and_a_search_without_them_is_another_study(
        digits_weights, tmp_path, monkeypatch):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    used = []
    original = search_module.prune_and_finetune

    def spy(*args, **kwargs):
        used.append(args[5].lr)  # the fine-tune's TrainConfig
        return original(*args, **kwargs)

    monkeypatch.setattr(search_module, "prune_and_finetune", spy)
    config = tiny(tmp_path / "run", n_trials=3, quant_modes=["none"], max_ratio=0.2, max_accuracy_drop=10.0,
                  finetune_lrs=[1e-3, 3e-3], target_latency_ms=1e-6)  # no candidate meets it: no final rerun
    result = optimize(model, "digits", config)
    pruned = [r["params"]["lr"] for r in result.trials if r["params"]["ratio"] > 0]
    assert pruned and used == pruned and set(used) <= {1e-3, 3e-3}
    keys = {search_module._fingerprint(ModelSpec(**model), DataSpec(name="digits"),
                                       config.model_copy(update={"finetune_lrs": lrs})) for lrs in ([], [1e-3], [3e-3])}
    assert len(keys) == 3  # another set of rates measures other trials: never resumed as the same study


def test_a_vocabulary_fallback_is_another_study_only_where_the_search_cuts_a_vocabulary(digits_weights, tmp_path):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    config = tiny(tmp_path / "run", n_trials=1)
    cuts = {(keep, fallback): search_module._fingerprint(ModelSpec(**model), DataSpec(name="digits"),
                                                         config.model_copy(update={"vocab_keep_first": [keep] * bool(keep),
                                                                                   "vocab_fallback": fallback}))
            for keep in (0, 8000) for fallback in ("nearest", "prefix")}
    assert cuts[0, "nearest"] == cuts[0, "prefix"] == search_module._fingerprint(
        ModelSpec(**model), DataSpec(name="digits"), config)  # without a cut the fallback changes nothing measured
    assert len({cuts[8000, "nearest"], cuts[8000, "prefix"], cuts[0, "prefix"]}) == 3  # with one it does


def test_a_budget_nobody_meets_returns_the_best_candidates_and_the_gap(digits_weights, tmp_path):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    result = optimize(model, "digits", tiny(tmp_path / "run", n_trials=2, target_latency_ms=1e-6,
                                            quant_modes=["none"], max_ratio=0.0))
    assert not result.met and result.front
    assert "exceeds target_latency_ms" in result.gap
    assert result.artifact == {} and not (tmp_path / "run" / "final").exists()
    assert (tmp_path / "run" / "recipe.yaml").is_file() and (tmp_path / "run" / "report.html").is_file()
    assert "No candidate meets the budget" in (tmp_path / "run" / "report.html").read_text()


def test_a_time_budget_ends_the_search_when_no_further_trial_fits_and_still_reruns_the_choice(
        digits_weights, tmp_path, monkeypatch):
    model = {"name": "small_cnn", "weights": str(digits_weights)}
    ticks = iter(range(0, 10_000, 100))  # every look at the clock: 100 s later (0 at the start, then 100, 200...)
    monkeypatch.setattr(search_module, "TimeBudget", functools.partial(TimeBudget, clock=lambda: next(ticks)))
    # asked before the first trial (100 s) and after each (200, 300: room; 400 s: over 350 with any estimate)
    result = optimize(model, "digits", tiny(tmp_path / "run", n_trials=None, time_budget=350, quant_modes=["none"],
                                            max_ratio=0.0))
    assert len(result.trials) == 3 and result.met and (tmp_path / "run" / "artifact" / "model.onnx").is_file()
    assert all(r["state"] == "complete" for r in result.trials)
    assert result.baseline["seconds"] > 0  # measuring the original: what the final benchmark's estimate scales


def test_a_time_budget_spent_before_the_first_trial_is_an_error_naming_it(digits_weights, tmp_path, monkeypatch):
    ticks = iter([0.0, 1000.0, 1000.0])  # the original's measurement took 1000 s of a 60 s budget
    monkeypatch.setattr(search_module, "TimeBudget", functools.partial(TimeBudget, clock=lambda: next(ticks)))
    with pytest.raises(OptimizeError, match=r"no trial could start within the time_budget 60 s: 1000 s spent"):
        optimize({"name": "small_cnn", "weights": str(digits_weights)}, "digits",
                 tiny(tmp_path / "run", n_trials=None, time_budget=60, quant_modes=["none"], max_ratio=0.0))
    assert (tmp_path / "run" / "baseline.json").is_file()  # what was measured is kept for a rerun


def test_a_folder_cleanai_did_not_write_is_refused_before_any_work(digits_weights, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="did not write"):
        optimize({"name": "small_cnn", "weights": str(digits_weights)}, "digits", tiny(foreign))
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1


def test_another_search_of_the_same_model_reuses_the_scan_and_new_weights_are_scanned_again(searched, tmp_path,
                                                                                          monkeypatch):
    model, result = searched
    scans = {"n": 0}
    original = search_module.sensitivity_scan

    def counted(*args, **kwargs):
        scans["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(search_module, "sensitivity_scan", counted)
    settings = {"max_accuracy_drop": 10.0, "max_ratio": 0.2, "max_scale": 0.5, "n_trials": 1, "quant_modes": ["none"]}
    optimize(model, "digits", tiny(tmp_path / "pruning_only", **settings))  # other choices, the same scan
    assert scans["n"] == 0
    assert json.loads((tmp_path / "pruning_only" / "sensitivity.json").read_text()) == \
        json.loads((result.out / "sensitivity.json").read_text())
    weights = load_file(model["weights"])
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] += 0.01  # other weights in a file of the same name: the scan runs again
    save_file(weights, tmp_path / Path(model["weights"]).name)
    optimize({**model, "weights": str(tmp_path / Path(model["weights"]).name)}, "digits",
             tiny(tmp_path / "retrained", **settings))
    assert scans["n"] == 1


TEXT_MODEL = {"name": "tiny_bert_classifier", "kwargs": {"num_hidden_layers": 3}}
TEXT_DATA = {"name": "clinc150", "options": {"config": "small", "include_oos": False},
             "subset": {"train": 300, "val": 150, "test": 150}, "batch_size": 32}


def test_a_text_search_tries_a_shallower_student_and_a_smaller_vocabulary_and_the_choice_reruns_and_reloads(
        tmp_path):
    # every candidate meets this budget, so the smallest artifact is chosen: the 1-layer student with the cut
    # vocabulary (the combination, tried right after int8)
    result = optimize(TEXT_MODEL, TEXT_DATA, tiny(tmp_path / "run", objective="size", max_accuracy_drop=100.0,
                                                  n_trials=4, depths=[1], vocab_keep_first=[0], max_ratio=0.0,
                                                  quant_modes=["dynamic"], fold_bn=[False], kd=[True],
                                                  kd_augment=1))
    shallow = [r for r in result.trials if r["params"].get("depth") == 1]
    assert shallow and all(r["candidate"].startswith("1 encoder layers (KD)") for r in shallow)
    assert all(0 < r["macs_ratio"] < 0.5 for r in shallow)  # 1 of 3 blocks, against the original's MACs
    full = {r["params"].get("vocab"): r for r in result.trials if r["params"].get("depth") == 3}
    assert "vocabulary: training tokens + first 0 ids" in full[0]["candidate"]
    assert full[0]["size_mb"] < full[None]["size_mb"]  # the same model with fewer embedding rows
    assert [r["params"].get("vocab") for r in result.trials[:2]] == [None, 0]
    assert result.met and result.chosen["params"]["depth"] == 1 and result.chosen["params"]["vocab"] == 0
    recipe = load_recipe(result.recipe)
    assert [s.type for s in recipe.steps] == ["keep_layers", "distill", "distill", "vocabulary", "export", "quantize",
                                              "benchmark"]
    assert recipe.steps[0].layers == [0] and recipe.steps[3].fallback == "nearest"
    # the rerun's KD reads the trials' transfer set: the training texts and one edited variant of most of them
    assert [s.augment for s in recipe.steps if s.type == "distill"] == [1, 1]
    final = read_status(result.out / "final")["variants"]["main"]
    train = len(load_dataset("clinc150", **TEXT_DATA.get("options", {})).subsets(TEXT_DATA["subset"]).train)
    for entry in (e for e in final if e["type"] == "distill"):
        examples = json.loads((result.out / "final" / entry["folder"] / "step.json").read_text())["summary"]
        assert train < examples["train_examples"] <= 2 * train
    student = load_pruned(result.artifact["torch"])  # by the recipe model's name, cut to the manifest's depth
    assert student.config.num_hidden_layers == len(student.hf_model.bert.encoder.layer) == 1
    assert result.final["size_mb"] < result.final["size_mb_original"]


@pytest.mark.parametrize("model, fields, message", [
    ({"name": "small_cnn"}, {"depths": [2]}, r"depths \[2\] keep encoder layers of a text model \(TextClassifier\); "
                                             "small_cnn is a SmallCNN"),
    ({"name": "small_cnn"}, {"kd_augment": 1}, r"kd_augment 1 add edited variants of the training texts of a text model "
                                               r"\(TextClassifier\); small_cnn is a SmallCNN: leave kd_augment unset"),
    (TEXT_MODEL, {"depths": [2, 4]}, r"depths \[4\] exceed the 3 encoder layers of tiny_bert_classifier; choose depths "
                                     "from 1 to 3"),
])
def test_text_options_a_model_cannot_take_are_refused_naming_them(model, fields, message, tmp_path):
    data = "digits" if model["name"] == "small_cnn" else TEXT_DATA
    with pytest.raises(ConfigError, match=message):
        optimize(model, data, tiny(tmp_path / "run", **fields))
    assert not (tmp_path / "run" / "study").exists()


class _EigenFeatures(torch.nn.Module):
    """Digits features through an operator ONNX has no conversion for (aten::linalg_eigvalsh)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(64, 16)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.flatten(1)).view(-1, 4, 4)
        return self.head(torch.linalg.eigvalsh(h @ h.transpose(1, 2)))


def test_a_model_onnx_cannot_export_is_measured_as_its_torch_artifact_naming_the_operator(tmp_path, monkeypatch):
    from cleanai.models._factory import MODELS

    monkeypatch.setitem(MODELS._items, "eigen_digits", lambda **_: _EigenFeatures())
    result = optimize("eigen_digits", "digits", tiny(tmp_path / "run", n_trials=1, max_ratio=0.0,
                                                     quant_modes=["dynamic"], max_accuracy_drop=100.0))
    trial = result.trials[0]
    assert trial["backend"] == "torch" and "operator aten::linalg_eigvalsh" in trial["fallback"]
    assert result.met and "onnx" not in result.artifact and "torch" in result.artifact

"""tune(): best trial(s), failed trials that do not stop the search, Pareto fronts, grids, kept weights, resume."""

from __future__ import annotations

import io
import logging
import math
import tempfile

import pytest
import torch
from torch import nn

from cleanai.errors import ConfigError
from cleanai.tuning import TuneConfig, TuningError, mask_url, tune
from cleanai.tuning.study import STUDY_FILE

SPACE = {"x": {"type": "float", "low": -4.0, "high": 4.0}, "kind": ["ok", "raise", "nan"]}


def quadratic(trial):
    kind = trial.params["kind"]
    if kind == "raise":
        raise RuntimeError("the data loader broke")
    return math.nan if kind == "nan" else (trial.params["x"] - 1.0) ** 2


def test_failing_and_nan_trials_are_marked_failed_with_the_reason_and_the_search_goes_on(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cleanai.tuning"):
        result = tune(quadratic, SPACE, TuneConfig(sampler="random", n_trials=24, seed=0))
    states = {t.number: (t.state.name, t.params["kind"], t.user_attrs.get("fail_reason")) for t in result.trials}
    assert len(states) == 24
    for state, kind, reason in states.values():
        assert state == ("COMPLETE" if kind == "ok" else "FAIL")
        if kind == "raise":
            assert reason == "RuntimeError: the data loader broke"
        if kind == "nan":
            assert reason == "TuningError: the objective returned nan (not a finite number)"
    assert "failed: RuntimeError: the data loader broke" in caplog.text
    ok = [t for t in result.trials if t.params["kind"] == "ok"]
    assert result.best_value == min(t.value for t in ok)
    assert result.best_params["kind"] == "ok"


def test_a_search_where_every_trial_fails_says_why() -> None:
    result = tune(lambda t: 1 / 0, {"x": [1, 2]}, TuneConfig(n_trials=2))
    with pytest.raises(TuningError, match="no trial of study 'cleanai' completed .*ZeroDivisionError: division by zero"):
        result.best_params


def test_multi_objective_returns_the_pareto_front() -> None:
    def two(trial):
        x = trial.params["x"]
        return x**2, (x - 2) ** 2

    result = tune(two, {"x": {"type": "float", "low": -1.0, "high": 3.0}},
                  TuneConfig(sampler="nsga2", directions=["minimize", "minimize"], n_trials=12, seed=0))
    front = result.best_trials
    assert front and all(0.0 <= t.params["x"] <= 2.0 for t in front)  # outside [0, 2] both objectives get worse
    values = [t.values for t in result.trials if t.values]
    for t in front:  # nothing dominates a front member
        assert not any(a <= t.values[0] and b <= t.values[1] and (a, b) != tuple(t.values) for a, b in values)
    with pytest.raises(TuningError, match="no single best trial"):
        result.best_trial
    summary = result.results_summary(file=io.StringIO())
    assert "(Pareto front)" in summary and len(summary.splitlines()) == 4 + len(front)


def test_grid_tries_every_point_once_and_stops() -> None:
    result = tune(lambda t: t.params["a"] * t.params["b"], {"a": [1, 2, 3], "b": {"type": "int", "low": 0, "high": 1}},
                  TuneConfig(sampler="grid", n_trials=50, directions="maximize"))
    assert sorted((t.params["a"], t.params["b"]) for t in result.trials) == [(a, b) for a in (1, 2, 3) for b in (0, 1)]
    assert result.best_params == {"a": 3, "b": 1}


def test_the_best_trials_weights_are_kept_as_safetensors_and_the_rest_deleted(tmp_path) -> None:
    def fit(trial):
        model = nn.Linear(2, 1)
        with torch.no_grad():
            model.weight.fill_(trial.params["w"])
        trial.keep_model(model)
        return trial.params["w"]

    result = tune(fit, {"w": [0.0, 1.0, 2.0, 3.0, 4.0]},
                  TuneConfig(sampler="grid", n_trials=5, directions="maximize", keep_models=2, run_dir=tmp_path))
    kept = sorted(p.name for p in (tmp_path / "models").iterdir())
    numbers = [t.number for t in result.completed()[:2]]
    assert kept == sorted(f"trial-{n}.safetensors" for n in numbers)
    assert result.best_weights == tmp_path / "models" / f"trial-{result.best_trial.number}.safetensors"
    model = result.get_best_models(1, build=lambda hp: nn.Linear(2, 1))[0]
    assert torch.all(model.weight == 4.0)


def test_a_run_folder_study_resumes_and_keeps_its_finished_trials(tmp_path) -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
    first = tune(lambda t: t.params["x"], space, TuneConfig(n_trials=3, seed=0, run_dir=tmp_path))
    before = [(t.number, t.params, t.value) for t in first.trials]
    assert (tmp_path / STUDY_FILE).is_file()
    second = tune(lambda t: t.params["x"], space, TuneConfig(n_trials=5, seed=0, run_dir=tmp_path))
    assert [(t.number, t.params, t.value) for t in second.trials][:3] == before
    assert len(second.trials) == 5
    third = tune(lambda t: pytest.fail("a finished study runs no more trials"), space,
                 TuneConfig(n_trials=5, run_dir=tmp_path))
    assert len(third.trials) == 5


def test_a_resumed_seeded_study_draws_new_parameters_not_its_first_trials_again(tmp_path) -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
    config = TuneConfig(sampler="random", n_trials=3, seed=0, run_dir=tmp_path)
    tune(lambda t: t.params["x"], space, config)
    resumed = tune(lambda t: t.params["x"], space, config.model_copy(update={"n_trials": 6}))
    xs = [t.params["x"] for t in resumed.trials]
    assert len(set(xs)) == 6  # the seed alone would draw trials 0-2's values for trials 3-5
    again = tune(lambda t: t.params["x"], space, config.model_copy(update={"n_trials": 6, "run_dir": tmp_path / "b"}))
    tune(lambda t: t.params["x"], space, config.model_copy(update={"n_trials": 3, "run_dir": tmp_path / "c"}))
    repeat = tune(lambda t: t.params["x"], space, config.model_copy(update={"n_trials": 6, "run_dir": tmp_path / "c"}))
    assert [t.params["x"] for t in repeat.trials] == xs  # the same resume history draws the same values
    assert [t.params["x"] for t in again.trials][:3] == xs[:3]


def test_first_trials_run_before_the_sampler_once_across_resumes_and_unknown_values_are_refused(tmp_path) -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "kind": ["a", "b"]}
    starts = [{"x": 0.25, "kind": "b"}, {"x": 0.75}]  # the second leaves `kind` to the sampler
    config = TuneConfig(n_trials=3, seed=0, run_dir=tmp_path, first_trials=starts)
    first = tune(lambda t: t.params["x"], space, config)
    assert first.trials[0].params == starts[0] and first.trials[1].params["x"] == 0.75
    resumed = tune(lambda t: t.params["x"], space, config.model_copy(update={"n_trials": 5}))
    assert [t.params["x"] for t in resumed.trials].count(0.25) == 1 and len(resumed.trials) == 5
    for bad, message in (({"y": 1.0}, r"first_trials\[0\]: 'y' is not a parameter of the space \(x, kind\)"),
                         ({"x": 2.0}, r"first_trials\[0\]: x=2.0 is outside the space; it allows \[0.0, 1.0\]"),
                         ({"kind": "c"}, r"kind='c' is outside the space; it allows \['a', 'b'\]")):
        with pytest.raises(ConfigError, match=message):
            tune(lambda t: 0.0, space, TuneConfig(n_trials=1, first_trials=[bad]))


def test_another_space_or_direction_under_the_same_name_is_refused(tmp_path) -> None:
    tune(lambda t: t.params["x"], {"x": [1, 2]}, TuneConfig(n_trials=1, run_dir=tmp_path, study_name="s"))
    with pytest.raises(ConfigError, match="study 's' in sqlite:///.* was created with another search space"):
        tune(lambda t: t.params["y"], {"y": [1, 2]}, TuneConfig(n_trials=1, run_dir=tmp_path, study_name="s"))
    with pytest.raises(ConfigError, match=r"optimises \['minimize'\], not \['maximize'\]"):
        tune(lambda t: t.params["x"], {"x": [1, 2]},
             TuneConfig(n_trials=1, run_dir=tmp_path, study_name="s", directions="maximize"))


def test_an_unreachable_storage_fails_naming_the_url_without_its_password() -> None:
    url = "postgresql://tuner:s3cret@127.0.0.1:1/studies"
    with pytest.raises(TuningError) as info:
        tune(lambda t: 0.0, {"x": [1]}, TuneConfig(n_trials=1, storage=url))
    message = str(info.value)
    assert "postgresql://tuner:***@127.0.0.1:1/studies" in message and "s3cret" not in message
    assert mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_a_search_refused_before_it_starts_leaves_no_temporary_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where tune() makes its folder when given none
    with pytest.raises(TuningError):
        tune(lambda t: 0.0, {"x": [1]}, TuneConfig(n_trials=1, storage="postgresql://tuner@127.0.0.1:1/studies"))
    with pytest.raises(ConfigError):
        tune(lambda t: 0.0, {"x": [1]}, TuneConfig(n_trials=1, first_trials=[{"x": 2}]))
    assert list(tmp_path.iterdir()) == []


def test_objective_returning_the_wrong_number_of_values_fails_the_trial() -> None:
    result = tune(lambda t: (1.0, 2.0), {"x": [1]}, TuneConfig(n_trials=1))
    assert result.trials[0].user_attrs["fail_reason"] == ("TuningError: the objective returned 2 value(s) but the study "
                                                         "has 1 direction(s)")


def test_dataframe_and_summary_name_the_metric(tmp_path) -> None:
    class Objective:
        direction, metric_names = "maximize", ["val_accuracy"]

        def __call__(self, trial):
            return trial.params["x"]

    result = tune(Objective(), {"x": [0.25, 0.5]}, TuneConfig(sampler="grid", n_trials=2))
    frame = result.dataframe()
    assert sorted(frame["val_accuracy"]) == [0.25, 0.5] and "params_x" in frame
    summary = result.results_summary(file=open(tmp_path / "s.txt", "w"))
    assert "val_accuracy" in summary and "x=0.5" in summary.splitlines()[4]


def test_parallel_jobs_and_a_timeout() -> None:
    import time

    def slow(trial):
        time.sleep(0.2)
        return trial.params["x"]

    parallel = tune(slow, {"x": {"type": "float", "low": 0.0, "high": 1.0}}, TuneConfig(n_trials=6, n_jobs=2))
    assert len(parallel.completed()) >= 6  # two threads may each finish the trial they had started
    timed = tune(slow, {"x": {"type": "float", "low": 0.0, "high": 1.0}}, TuneConfig(n_trials=None, timeout=1.0))
    assert timed.trials and all(t.state.name == "COMPLETE" for t in timed.trials)  # returned: no trial limit but time


def test_a_step_budget_stops_the_trial_that_spends_it_and_starts_no_more(tmp_path) -> None:
    def three_steps(trial):
        for step in range(3):
            trial.report(trial.params["x"], step)
        return trial.params["x"]

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
    config = TuneConfig(n_trials=None, max_steps=7, run_dir=tmp_path / "run", progress=False)
    result = tune(three_steps, space, config)
    steps = [len(t.intermediate_values) for t in result.trials]
    assert steps == [3, 3, 1]  # the third trial is stopped at the 7th step of the search, and none follows
    assert result.trials[2].state.name == "PRUNED" and result.trials[2].user_attrs["stopped_by"] == "max_steps"
    assert len(result.completed()) == 2
    again = tune(three_steps, space, config)  # a resumed study has spent its budget: no trial runs
    assert len(again.trials) == 3
    more = tune(three_steps, space, config.model_copy(update={"max_steps": 10}))
    assert [len(t.intermediate_values) for t in more.trials] == [3, 3, 1, 3]


def test_a_step_budget_refuses_an_objective_that_reports_no_steps() -> None:
    with pytest.raises(TuningError, match="trial 0 reported none"):
        tune(lambda trial: trial.params["x"], {"x": [1.0, 2.0]}, TuneConfig(n_trials=None, max_steps=5, progress=False))


def test_may_start_is_asked_before_the_first_trial_and_after_each_one(tmp_path) -> None:
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
    config = TuneConfig(n_trials=10, run_dir=tmp_path / "run", progress=False)
    asked: list[int] = []

    def three_at_most(study) -> bool:
        asked.append(len(study.trials))
        return len(study.trials) < 3

    result = tune(lambda trial: trial.params["x"], space, config, may_start=three_at_most)
    assert len(result.trials) == 3 and asked == [0, 1, 2, 3]  # asked at the start and after each trial
    again = tune(lambda trial: trial.params["x"], space, config, may_start=three_at_most)
    assert len(again.trials) == 3  # a resumed study that may not start one runs none

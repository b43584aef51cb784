"""A study's plots and files: PNGs from Optuna's matplotlib visualisation, trials.csv, best.json, summary.txt."""

from __future__ import annotations

import json

import pandas as pd

from cleanai.tuning import TuneConfig, plot_study, save_result, tune

PNG = b"\x89PNG\r\n\x1a\n"


def test_single_objective_plots_and_files(tmp_path) -> None:
    space = {"x": {"type": "float", "low": -2.0, "high": 2.0}, "y": {"type": "int", "low": 0, "high": 3}}
    result = tune(lambda t: t.params["x"] ** 2 + t.params["y"], space, TuneConfig(n_trials=8, seed=0))
    files = save_result(result, tmp_path)
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert files[f"plot:{name}"].read_bytes()[:8] == PNG
    trials = pd.read_csv(files["trials"])
    assert len(trials) == 8 and {"params_x", "params_y", "value", "state"} <= set(trials.columns)
    best = json.loads(files["best"].read_text())
    assert best["best"][0]["params"] == result.best_params and best["directions"] == ["minimize"]
    assert f"{result.best_value:.6g}" in files["summary"].read_text()


def test_multi_objective_gets_a_pareto_front_plot(tmp_path) -> None:
    result = tune(lambda t: (t.params["x"], 1 - t.params["x"]), {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                  TuneConfig(sampler="random", directions=["minimize", "minimize"], n_trials=5, seed=0))
    written = plot_study(result, tmp_path)
    assert list(written) == ["pareto_front"] and written["pareto_front"].read_bytes()[:8] == PNG


def test_one_trial_gets_only_the_history(tmp_path) -> None:
    result = tune(lambda t: t.params["x"], {"x": [1.0]}, TuneConfig(n_trials=1))
    assert list(plot_study(result, tmp_path)) == ["optimization_history"]

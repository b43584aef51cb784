"""A study's plots as PNG files (Optuna's matplotlib visualisation) and its files for a report."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from cleanai.io import atomic_open, atomic_path, write_json
from cleanai.tuning.tune import TuneResult


def plot_study(result: TuneResult, directory: str | Path) -> dict[str, Path]:
    """Write optimisation history, parameter importances and parallel coordinates (single objective), or the
    Pareto front (two or three objectives); return {plot name: file}. A plot the study cannot have yet (too
    few completed trials, no parameter) is left out."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    study, names = result.study, list(result.metric_names or [])
    done = [t for t in result.trials if t.state == TrialState.COMPLETE]
    has_params = any(t.params for t in done)
    plots: dict[str, Callable[[], Any]] = {}
    if not result.multi_objective:
        name = names[0] if names else "value"
        plots["optimization_history"] = lambda: vis.plot_optimization_history(study, target_name=name)
        if len(done) >= 2 and has_params:
            plots["param_importances"] = lambda: vis.plot_param_importances(study, target_name=name)
            plots["parallel_coordinate"] = lambda: vis.plot_parallel_coordinate(study, target_name=name)
    elif len(result.directions) in (2, 3) and done:
        plots["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=names or None)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for plot, draw in plots.items():
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = draw()
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = out / f"{plot}.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=110, format="png")
        plt.close(figure)
        written[plot] = path
    return written


def _kept(weights: str | None) -> str | None:
    """A trial's weights file if it is still on disk (`keep_models` deletes all but the best few)."""
    return weights if weights and Path(weights).is_file() else None


def save_result(result: TuneResult, directory: str | Path) -> dict[str, Path]:
    """Write `trials.csv`, `best.json` (best trial(s), their parameters and weights files), `summary.txt` and the
    plots into `directory`, each atomically; return {what: file}."""
    out = Path(directory)
    files = {"trials": out / "trials.csv", "best": out / "best.json", "summary": out / "summary.txt"}
    with atomic_open(files["trials"], "w", encoding="utf-8", newline="") as fh:
        result.dataframe().to_csv(fh, index=False)
    best = [{"number": t.number, "values": t.values, "params": t.params, "weights": _kept(t.user_attrs.get("weights")),
             **{k: v for k, v in t.user_attrs.items() if k.startswith("cv_")}} for t in result.best_trials]
    write_json(files["best"], {"study": result.study.study_name, "directions": result.directions,
                               "metrics": list(result.metric_names or []), "best": best})
    with atomic_open(files["summary"], "w", encoding="utf-8") as fh:
        result.results_summary(file=fh)
    files.update({f"plot:{k}": v for k, v in plot_study(result, out / "plots").items()})
    return files


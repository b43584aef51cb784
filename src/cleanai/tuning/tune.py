"""`tune(objective, space, TuneConfig(...))`: a hyperparameter search on Optuna, returning a `TuneResult`.

The objective is called once per trial with a `TuneTrial`: `trial.params` (sampled from the space), `trial.hp`
(Keras-Tuner-like calls), `trial.report(value, step)` (lets the pruner stop the trial) and
`trial.keep_model(model)` (its weights as safetensors, kept for the best trials). It returns a number, or one
number per direction. An objective that raises or returns NaN fails its trial, the reason is logged and kept
in the trial's `fail_reason`, and the search goes on.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from cleanai.errors import ConfigError
from cleanai.io import RUN_MARKER, load_weights, save_safetensors
from cleanai.tuning.config import TuneConfig, TuningError
from cleanai.tuning.space import HyperParameters, ModelBuilder, SearchSpace, load_space
from cleanai.tuning.study import (fail_reason, finished_count, finished_trials, open_study, reported_steps,
                                  retried_numbers)

log = logging.getLogger("cleanai.tuning")
WEIGHTS_ATTR = "weights"
MODELS_DIR = "models"


class TuneTrial:
    """What an objective sees of one trial: its parameters, reporting for the pruner, and a place for its model."""

    def __init__(self, trial: optuna.Trial, space: SearchSpace | None, run_dir: Path, multi: bool,
                 max_steps: int | None = None) -> None:
        self.optuna = trial
        self.number = trial.number
        self.run_dir = run_dir
        self._multi, self._max_steps = multi, max_steps
        self.params: dict[str, Any] = space.sample(trial) if space is not None else {}
        self.hp = HyperParameters(trial, self.params)  # model builders declare more parameters through it

    def report(self, value: float, step: int) -> None:
        """Report an intermediate value (a validation metric after epoch `step`); raise `optuna.TrialPruned` when
        the pruner stops this trial or the search's step budget is spent. Multi-objective studies cannot prune:
        the value is then not reported."""
        if self._multi:
            return
        self.optuna.report(float(value), step)
        if self._max_steps is not None and \
                reported_steps(finished_trials(self.optuna.study, running=True)) >= self._max_steps:
            self.optuna.set_user_attr("stopped_by", "max_steps")
            raise optuna.TrialPruned(f"trial {self.number} stopped at step {step}: the search's budget of "
                                     f"{self._max_steps} steps is spent")
        if self.optuna.should_prune():
            raise optuna.TrialPruned(f"trial {self.number} pruned at step {step} (value {value:.6g})")

    def keep_model(self, model: nn.Module) -> Path:
        """Save the model's weights for this trial (safetensors); the best trials' stay on disk."""
        path = self.run_dir / MODELS_DIR / f"trial-{self.number}.safetensors"
        save_safetensors(model, path, metadata={"trial": str(self.number)})
        self.optuna.set_user_attr(WEIGHTS_ATTR, str(path))
        return path

    def set(self, key: str, value: Any) -> None:
        """Keep a JSON-serialisable value with the trial (shown in the trials dataframe as `user_attrs_<key>`)."""
        self.optuna.set_user_attr(key, value)


Objective = Callable[[TuneTrial], float | Sequence[float]]


@dataclass
class TuneResult:
    """The finished search: best trial(s), every trial as a dataframe, kept weights, a summary table."""

    study: optuna.Study
    run_dir: Path
    space: SearchSpace | None = None
    build: ModelBuilder | None = None
    metric_names: Sequence[str] | None = None

    @property
    def directions(self) -> list[str]:
        return [d.name.lower() for d in self.study.directions]

    @property
    def multi_objective(self) -> bool:
        return len(self.study.directions) > 1

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def fail_reason(self, trial: FrozenTrial, trials: list[FrozenTrial] | None = None) -> str | None:
        """Why `trial` failed (what its objective raised, or that its worker stopped and which trial retried it);
        None when it did not fail. Pass `trials` (the study's) when reasoning over many, to read the storage once."""
        return fail_reason(trial, self.trials if trials is None else trials)

    def completed(self) -> list[FrozenTrial]:
        """Completed trials, best first (single objective) or in trial order (multi-objective)."""
        trials = self.trials
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if not done:
            reasons = sorted({self.fail_reason(t, trials) or t.state.name for t in trials})
            raise TuningError(f"no trial of study {self.study.study_name!r} completed ({len(trials)} trials); "
                              f"why: {'; '.join(reasons[:3]) or 'no trial ran'}")
        if self.multi_objective:
            return done
        return sorted(done, key=lambda t: t.value, reverse=self.directions[0] == "maximize")  # type: ignore[arg-type,return-value]

    @property
    def best_trial(self) -> FrozenTrial:
        """The best trial (single objective)."""
        if self.multi_objective:
            raise TuningError("a multi-objective study has no single best trial; use best_trials (the Pareto front)")
        return self.completed()[0]

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The Pareto front (multi-objective), or the best trial alone."""
        self.completed()
        return self.study.best_trials if self.multi_objective else [self.best_trial]

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best_trial.params

    @property
    def best_value(self) -> float:
        return self.best_trial.value  # type: ignore[return-value]

    @property
    def best_weights(self) -> Path | None:
        """The best trial's weights file (safetensors), if its objective kept a model."""
        path = self.best_trials[0].user_attrs.get(WEIGHTS_ATTR)
        return Path(path) if path and Path(path).is_file() else None

    def dataframe(self) -> Any:
        """Every trial as a pandas DataFrame (number, values, params, state, duration, user attributes)."""
        frame = self.study.trials_dataframe()
        names = list(self.metric_names or [])
        if names and self.multi_objective:
            frame = frame.rename(columns={f"values_{i}": n for i, n in enumerate(names)})
        elif names:
            frame = frame.rename(columns={"value": names[0]})
        return frame

    def get_best_models(self, n: int = 1, build: ModelBuilder | None = None) -> list[nn.Module]:
        """The `n` best trials' models: rebuilt with their parameters by the model builder, their kept weights loaded."""
        build = build or self.build
        if build is None:
            raise ConfigError("get_best_models needs the model-building function: pass build=, or tune a "
                              "TrainingSpec / Tuner, which carry one")
        models = []
        for trial in (self.best_trials if self.multi_objective else self.completed())[:n]:
            path = trial.user_attrs.get(WEIGHTS_ATTR)
            if not path or not Path(path).is_file():
                raise TuningError(f"trial {trial.number} has no kept weights ({path or 'its objective kept no model'}); "
                                  f"raise TuneConfig.keep_models to keep more than the best few")
            models.append(load_weights(build(HyperParameters(None, trial.params)), path).eval())
        return models

    def results_summary(self, n: int = 10, file: Any = None) -> str:
        """A table of the `n` best trials (all trials' counts by state above it); printed and returned."""
        names = list(self.metric_names or []) or (["value"] if not self.multi_objective
                                                  else [f"value_{i}" for i in range(len(self.directions))])
        states: dict[str, int] = {}
        for t in self.trials:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        lines = [f"study {self.study.study_name!r}: " + ", ".join(f"{v} {k}" for k, v in sorted(states.items())),
                 f"directions: {', '.join(self.directions)}" + ("  (Pareto front)" if self.multi_objective else "")]
        rows = [[str(t.number), *(f"{v:.6g}" for v in t.values),
                 ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())] for t in self.best_trials[:n]] \
            if self.multi_objective else \
            [[str(t.number), f"{t.value:.6g}", ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())]
             for t in self.completed()[:n]]
        lines.append(_table(["trial", *names, "params"], rows))
        text = "\n".join(lines)
        print(text, file=file or sys.stdout)
        return text


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


def tune(objective: Objective, space: SearchSpace | Mapping[str, Any] | str | Path | None = None,
         config: TuneConfig | Mapping[str, Any] | None = None, *,
         may_start: Callable[[optuna.Study], bool] | None = None) -> TuneResult:
    """Search `space` for the parameters that optimise `objective`; resume the study if it exists.

    `objective` is a function of a `TuneTrial`, or a spec (`TrainingSpec`, `CrossValidation`,
    `DistillationSpec`) that trains a model per trial. Its `direction` attribute (if any) is used when
    `config.directions` is unset; its `build` lets `TuneResult.get_best_models` rebuild models.
    `may_start(study)`, asked before the first trial and after each one, ends the search when it says False
    (e.g. a caller's wall-time budget with no room for another trial).
    """
    config = config if isinstance(config, TuneConfig) else TuneConfig.model_validate(config or {})
    space = load_space(space)
    if space is not None:
        for i, params in enumerate(config.first_trials):
            space.check_values(params, f"first_trials[{i}]")
    directions = list(config.directions or [getattr(objective, "direction", "minimize")])
    run_dir = Path(config.run_dir) if config.run_dir is not None else Path(tempfile.mkdtemp(prefix="cleanai-tune-"))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = run_dir / RUN_MARKER
        if not marker.exists():
            marker.write_text("Written by CleanAI (a tuning run folder).\n", encoding="utf-8")
        study = open_study(space, config, directions)
    except BaseException:
        if config.run_dir is None:  # no result will own the temporary folder
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    for params in config.first_trials:
        study.enqueue_trial(params, skip_if_exists=True)  # a resumed study (or another worker) has queued it
    result = TuneResult(study, run_dir, space, getattr(objective, "build", None), getattr(objective, "metric_names", None))
    if config.run_dir is None:  # the temporary folder (kept weights) goes with the result
        weakref.finalize(result, shutil.rmtree, run_dir, True)

    def run(trial: optuna.Trial) -> float | Sequence[float]:
        try:
            values = objective(TuneTrial(trial, space, run_dir, multi=len(directions) > 1, max_steps=config.max_steps))
            return _check_values(values, len(directions))
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # the trial fails, the search goes on: keep and log why
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
            trial.set_user_attr("fail_reason", reason)
            log.warning("trial %d failed: %s", trial.number, reason)
            raise

    stop = _StopAt(config.n_trials, config.max_steps, may_start)
    callbacks = [_KeepBest(result, config.keep_models), stop]
    remaining = None if config.n_trials is None else config.n_trials - finished_count(study)
    if not stop.reached(study):
        with _progress(config, remaining) as bar:
            if bar is not None:
                callbacks.append(bar)
            with _quiet_optuna():
                study.optimize(run, n_trials=None, timeout=config.timeout, n_jobs=config.n_jobs,
                               catch=(Exception,), callbacks=callbacks, gc_after_trial=False)
    return result


def _check_values(values: Any, count: int) -> float | list[float]:
    """A number per direction, every one finite; else a `TuningError` that fails the trial."""
    seq = list(values) if isinstance(values, (list, tuple)) else [values]
    try:
        numbers = [float(v) for v in seq]
    except (TypeError, ValueError):
        raise TuningError(f"the objective returned {values!r}; it must return a number per direction ({count})") from None
    if len(numbers) != count:
        raise TuningError(f"the objective returned {len(numbers)} value(s) but the study has {count} direction(s)")
    bad = [v for v in numbers if not math.isfinite(v)]
    if bad:
        raise TuningError(f"the objective returned {bad[0]} (not a finite number)")
    return numbers[0] if count == 1 else numbers


class _StopAt:
    """Stop every worker once the study holds `n_trials` finished trials (a retried stale trial counted once), its
    finished trials have reported `max_steps` steps in total, or `may_start` says no further trial may start."""

    def __init__(self, n_trials: int | None, max_steps: int | None,
                 may_start: Callable[[optuna.Study], bool] | None = None) -> None:
        self.n_trials, self.max_steps, self.may_start = n_trials, max_steps, may_start

    def reached(self, study: optuna.Study) -> bool:
        finished = finished_trials(study)
        return (self.n_trials is not None and len(finished) >= self.n_trials) or \
            (self.max_steps is not None and reported_steps(finished) >= self.max_steps) or \
            (self.may_start is not None and not self.may_start(study))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.max_steps is not None and trial.state == TrialState.COMPLETE and not trial.intermediate_values:
            raise TuningError(f"max_steps ({self.max_steps}) counts the steps trials report, but trial {trial.number} "
                              "reported none: call trial.report(value, step) in the objective (a training spec does, "
                              "once per epoch), or bound the search with n_trials or timeout")
        if self.reached(study):
            study.stop()


class _KeepBest:
    """After each trial, delete the kept weights of trials no longer among the best `keep` (or off the Pareto front)."""

    def __init__(self, result: TuneResult, keep: int) -> None:
        self.result, self.keep = result, keep

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        result = self.result
        done = [t for t in result.trials if t.state == TrialState.COMPLETE]
        keep = {t.number for t in (result.best_trials if result.multi_objective else result.completed()[:self.keep])} \
            if done and self.keep else set()
        folder = result.run_dir / MODELS_DIR
        for path in folder.glob("trial-*.safetensors") if folder.is_dir() else ():
            number = path.stem.removeprefix("trial-")
            if number.isdigit() and int(number) not in keep and _is_settled(result.trials, int(number)):
                path.unlink(missing_ok=True)


def _is_settled(trials: list[FrozenTrial], number: int) -> bool:
    """A trial is settled (its weights may go) once it is no longer running or waiting."""
    return number >= len(trials) or trials[number].state not in (TrialState.RUNNING, TrialState.WAITING) \
        or number in retried_numbers(trials)


class _ProgressBar:
    """A tqdm bar over finished trials, showing the best value so far."""

    def __init__(self, total: int | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="trials", unit="trial", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.bar.update(1)
        if len(study.directions) == 1:
            done = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            if done:
                best = max(done) if study.direction.name == "MAXIMIZE" else min(done)  # type: ignore[type-var]
                self.bar.set_postfix(best=f"{best:.5g}", last=trial.state.name.lower())


class _progress:
    """Context: a progress bar when asked for and stderr is a terminal, else None."""

    def __init__(self, config: TuneConfig, total: int | None) -> None:
        self.bar = _ProgressBar(total) if config.progress and sys.stderr.isatty() else None

    def __enter__(self) -> _ProgressBar | None:
        return self.bar

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.bar.close()


class _quiet_optuna:
    """Optuna logs every trial (and a failed one's traceback); `tune` logs one line per failed trial instead."""

    def __enter__(self) -> None:
        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(max(self.level, optuna.logging.ERROR))

    def __exit__(self, *exc: Any) -> None:
        optuna.logging.set_verbosity(self.level)

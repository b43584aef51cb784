"""Where a study lives: an SQLite file in the run folder, a shared RDB URL (PostgreSQL), or memory.

A persistent study beats a heartbeat per running trial; a trial whose worker died (kill -9 included) is
failed after the grace period and queued again, so no finished trial is lost and none runs twice to
completion. The study remembers its search space and refuses another one under the same name.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from cleanai.errors import ConfigError
from cleanai.tuning.config import TuneConfig, TuningError
from cleanai.tuning.samplers import create_pruner, create_sampler
from cleanai.tuning.space import SearchSpace

SPACE_ATTR = "cleanai_space"
STUDY_FILE = "study.db"
_CONNECT_TIMEOUT = 10  # seconds: an unreachable server fails the call instead of hanging


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***` (for messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _with_driver(url: str) -> str:
    """`postgresql://` names the pinned psycopg2 driver (SQLAlchemy 2.1 would otherwise look for psycopg 3)."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def storage_url(config: TuneConfig) -> str | None:
    """`config.storage`, else an SQLite file in `config.run_dir`, else None (in memory)."""
    if config.storage is not None:
        return config.storage
    if config.run_dir is not None:
        return f"sqlite:///{(Path(config.run_dir) / STUDY_FILE).resolve()}"
    return None


def open_storage(url: str | None, config: TuneConfig) -> optuna.storages.BaseStorage | None:
    """Connect to the storage (with heartbeats and retries of dead workers' trials); fail fast naming the URL."""
    if url is None:
        return None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    connect: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT} if url.startswith("postgresql") else {}
    try:
        with warnings.catch_warnings():  # heartbeats and retries are marked experimental; they are what resumes need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(_with_driver(url), engine_kwargs={"connect_args": connect} if connect else None,
                              heartbeat_interval=config.heartbeat_interval,
                              grace_period=config.grace_period or 2 * config.heartbeat_interval,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=config.max_retry))
    except Exception as exc:  # whatever the driver raises, the URL is what the user must check
        lines = [line.strip() for line in str(getattr(exc, "orig", None) or exc).splitlines() if line.strip()]
        reason = mask_url(lines[0]) if lines else type(exc).__name__
        raise TuningError(f"cannot open the study storage {mask_url(url)!r}: {reason}. Check the host, port, "
                          f"user, password and database name, and that the server accepts connections") from None


def open_study(space: SearchSpace | None, config: TuneConfig, directions: list[str]) -> optuna.Study:
    """Create or load the study named `config.study_name`; refuse one made with another space or directions.

    A resumed study's sampler is seeded with `seed` + the trials it holds: still repeatable, and it does not
    draw the parameters of the study's first trials again (a resumed CLINC150 search repeated two that way).
    """
    url = storage_url(config)
    storage = open_storage(url, config)
    sampler = create_sampler(config.sampler, seed=config.seed, space=space, **config.sampler_kwargs)
    pruner = create_pruner(config.pruner, **config.pruner_kwargs)
    where = f"study {config.study_name!r} in {mask_url(url) if url else 'memory'}"
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=config.study_name,
                                directions=directions, load_if_exists=True)  # an existing study keeps its directions
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise ConfigError(f"{where} optimises {have}, not {directions}; use another study name or the same directions")
    fingerprint = space.fingerprint() if space is not None else "null"
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, fingerprint)
    elif stored != fingerprint:
        raise ConfigError(f"{where} was created with another search space ({stored}); this search has "
                          f"{fingerprint}. Use another study name (or run folder) for a different space")
    held = len(study.get_trials(deepcopy=False))
    if held and config.seed is not None:  # the same seed would draw the study's first parameters again
        study.sampler = create_sampler(config.sampler, seed=config.seed + held, space=space, **config.sampler_kwargs)
    return study


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were failed as stale and queued again (their retry stands in for them)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def fail_reason(trial: FrozenTrial, trials: list[FrozenTrial]) -> str | None:
    """Why a failed trial failed: what its objective raised, or that its worker stopped beating (killed or hung),
    with the trial that retried it. None for a trial that did not fail."""
    if trial.state != TrialState.FAIL:
        return None
    if "fail_reason" in trial.user_attrs:
        return str(trial.user_attrs["fail_reason"])
    retry = next((t.number for t in trials if trial.number in t.system_attrs.get("retry_history", [])), None)
    return "its worker stopped sending heartbeats (killed or hung); " + (
        f"retried as trial {retry}" if retry is not None else "not retried (max_retry reached)")


def finished_count(study: optuna.Study) -> int:
    """Finished trials, a retried stale trial counted once (by its retry)."""
    return len(finished_trials(study))


def reported_steps(trials: Iterable[FrozenTrial]) -> int:
    """Steps (intermediate values) `trials` reported in total: the resource the search spent."""
    return sum(len(t.intermediate_values) for t in trials)


def finished_trials(study: optuna.Study, running: bool = False) -> list[FrozenTrial]:
    """The finished trials - with `running` the running ones too - a retried stale trial counted once (by its
    retry), read from the storage once."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) + ((TrialState.RUNNING,) if running else ())
    return [t for t in trials if t.state in states and t.number not in retried]

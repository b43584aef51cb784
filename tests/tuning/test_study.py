"""Persistence: a study in the run folder's SQLite file survives kill -9 of its worker and resumes without losing
finished trials; the killed trial is failed after the grace period, retried once, and completed once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cleanai.tuning import TuneConfig, TuningError, tune
from cleanai.tuning.study import finished_count

WORKER = Path(__file__).with_name("study_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def start_worker(markers: Path, config: dict, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(WORKER), str(markers), json.dumps(config), str(seconds)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}) before {what}: {proc.stderr.read().decode()}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_no_trial_lost_or_run_twice(trials: list[optuna.trial.FrozenTrial], killed: int) -> None:
    """The killed trial failed and one retry of it (same parameters) completed; every other trial completed once."""
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials), [t.state for t in trials]
    origin = {t.number: t.system_attrs.get("failed_trial", t.number) for t in trials}
    completed = [origin[t.number] for t in trials if t.state == TrialState.COMPLETE]
    assert len(completed) == len(set(completed)), "a trial ran to completion twice"
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if origin[t.number] == killed and t.number != killed]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == trials[killed].params


def test_a_killed_worker_loses_no_finished_trial_and_the_study_resumes(tmp_path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    run_dir = tmp_path / "run"
    config = {"run_dir": str(run_dir), "n_trials": 5, "seed": 0, "heartbeat_interval": 1, "grace_period": 2,
              "progress": False}
    worker = start_worker(markers, config, seconds=3.0)
    try:
        wait_for(lambda: any(markers.glob("started-2-*")), 900, "the third trial to start", worker)
        # optuna fails only a trial whose heartbeat it has seen: let the first one (interval 1 s) be written
        time.sleep(1.5)
        worker.send_signal(signal.SIGKILL)  # mid-trial: trial 2 sleeps 3 s between its markers
        worker.wait(10)
    finally:
        worker.kill()
    assert not any(markers.glob("finished-2-*"))
    url = f"sqlite:///{run_dir / 'study.db'}"
    before = {t.number: (t.params, t.value) for t in optuna.load_study(study_name="cleanai", storage=url).trials
              if t.state == TrialState.COMPLETE}
    assert sorted(before) == [0, 1]
    time.sleep(3)  # past the grace period: the killed trial's heartbeat is stale

    result = tune(lambda t: t.params["x"], {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                  TuneConfig(**config))
    trials = result.trials
    assert {n: (trials[n].params, trials[n].value) for n in before} == before  # finished trials kept as they were
    check_no_trial_lost_or_run_twice(trials, killed=2)
    retry = next(t.number for t in trials if 2 in t.system_attrs.get("retry_history", []))
    assert result.fail_reason(trials[2]) == \
        f"its worker stopped sending heartbeats (killed or hung); retried as trial {retry}"
    assert result.fail_reason(trials[0]) is None  # completed
    assert finished_count(result.study) == 5
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5


def test_two_workers_share_a_postgresql_study_and_a_killed_one_loses_no_trial(postgres_url, tmp_path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {"storage": postgres_url, "study_name": "shared", "n_trials": 24, "seed": 0, "heartbeat_interval": 1,
              "grace_period": 5, "progress": False, "run_dir": str(tmp_path / "a")}
    doomed = start_worker(markers, config, seconds=2.0)
    survivor = None
    try:
        wait_for(lambda: any(markers.glob(f"started-*-{doomed.pid}")), 900, "the first worker's first trial", doomed)
        survivor = start_worker(markers, {**config, "run_dir": str(tmp_path / "b")}, seconds=0.5)
        wait_for(lambda: any(markers.glob(f"started-*-{survivor.pid}")), 900, "the second worker's first trial",
                 survivor)
        seen = len(list(markers.glob(f"started-*-{doomed.pid}")))
        wait_for(lambda: len(list(markers.glob(f"started-*-{doomed.pid}"))) > seen, 900,
                 "the first worker's next trial, while both work", doomed)
        time.sleep(1.2)  # its first heartbeat written (interval 1 s), as in the test above
        doomed.send_signal(signal.SIGKILL)  # mid-trial: it sleeps 2 s between its markers
        doomed.wait(10)
        assert survivor.wait(900) == 0, survivor.stderr.read().decode()
    finally:
        doomed.kill()
        if survivor is not None:
            survivor.kill()
    started = {p.name.split("-")[1] for p in markers.glob(f"started-*-{doomed.pid}")}
    finished = {p.name.split("-")[1] for p in markers.glob(f"finished-*-{doomed.pid}")}
    killed = [int(n) for n in started - finished]
    assert len(killed) == 1 and finished  # the first worker finished a trial, then died in the next
    assert any(markers.glob(f"finished-*-{survivor.pid}"))
    study = optuna.load_study(study_name="shared", storage=postgres_url.replace("postgresql:", "postgresql+psycopg2:"))
    check_no_trial_lost_or_run_twice(study.trials, killed=killed[0])
    assert finished_count(study) >= 24
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_the_same_url_reaches_the_server_and_a_wrong_password_is_masked(postgres_url) -> None:
    result = tune(lambda t: t.params["x"], {"x": [1, 2]},
                  TuneConfig(sampler="grid", storage=postgres_url, study_name="direct", n_trials=2))
    assert len(result.completed()) == 2
    wrong = postgres_url.replace("s3cret-pw", "not-the-password")
    with pytest.raises(TuningError) as info:
        tune(lambda t: 0.0, {"x": [1]}, TuneConfig(storage=wrong, study_name="direct", n_trials=1))
    assert "tuner:***@127.0.0.1" in str(info.value) and "not-the-password" not in str(info.value)

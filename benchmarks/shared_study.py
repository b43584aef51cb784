"""Two `cleanai tune` workers on one PostgreSQL study vs one worker: trials per hour, and no trial lost or run twice
to completion after one of two workers is killed (SIGKILL) mid-trial.

A private PostgreSQL server (`cleanai.tuning.local_postgres`: the Debian package's binaries, 127.0.0.1 only, data
in a temporary folder) holds three studies of the same search: `small_cnn` on the embedded digits data (1,078
training, 359 validation images), `--epochs` epoch(s) per trial, TPE over lr (log 1e-3..1e-1) x optimizer (sgd,
adam). Each worker is the command a user would start on another machine,
`cleanai tune ... --storage postgresql://... --study NAME --trials N`, with `--threads` torch thread(s)
(OMP_NUM_THREADS) and its own seed and run folder:
  (a) one worker runs the study's N trials; (b) two workers started together share N trials;
  (c) two workers started together; once both are mid-trial (two trials RUNNING in the study) the first is
      killed with SIGKILL; its trial's heartbeat goes stale, the survivor fails it after `--grace-period`
      seconds, queues a retry with the same parameters and runs the study to N finished trials.
Trials per hour = completed trials / (last trial's end - first trial's start), from the study's own timestamps
(process start-up and the final plots are outside it; the wall time per part includes them). Every completed
trial is traced to its worker through the run folder its kept weights went to. With two workers each one stops
when the study holds N finished trials, so the other may finish the trial it had started (N + 1 complete).
On this machine both workers share 2 cores with other jobs (the load average is recorded): two workers can at
best double the trials per hour, and only when two cores are free.
Raw rows: benchmarks/results/shared_study/<--run>/rows.json.
Usage: python benchmarks/shared_study.py [--trials 12] [--epochs 20] [--threads 1] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cleanai.tuning import TuneConfig, local_postgres
from cleanai.tuning.study import finished_count, open_storage

import _report  # benchmarks/_report.py: scripts run from this folder

SPACE = """\
lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
optimizer: {type: categorical, choices: [sgd, adam], registry: optimizers}
"""
PARTS = {"one": "1 worker", "two": "2 workers", "kill": "2 workers, one killed mid-trial"}
_WAIT = 3600  # seconds a part may take before it is given up


class Workers:
    """`cleanai tune` worker processes of one study; their output kept in files under `folder`."""

    def __init__(self, args: argparse.Namespace, url: str, study: str, folder: Path) -> None:
        self.args, self.url, self.study, self.folder = args, url, study, folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for i in range(count):
            out = self.folder / f"{self.study}-worker{i}"
            command = [sys.executable, "-m", "cleanai.cli", "tune", "--model", self.args.model, "--data",
                       self.args.data, "--space", str(self.folder / "space.yaml"), "--epochs", str(self.args.epochs),
                       "--trials", str(self.args.trials), "--sampler", "tpe", "--seed", str(i), "--storage", self.url,
                       "--study", self.study, "--heartbeat", str(self.args.heartbeat), "--grace-period",
                       str(self.args.grace_period), "--out", str(out), "--quiet"]
            with open(self.folder / f"{self.study}-worker{i}.log", "wb") as log:
                self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                   env={**os.environ, "OMP_NUM_THREADS": str(self.args.threads)}))

    def wait(self, survivors: list[int]) -> None:
        """Wait for the workers `survivors` to exit; a failed one raises with the end of its log."""
        end = time.monotonic() + _WAIT
        for i in survivors:
            code = self.procs[i].wait(max(1.0, end - time.monotonic()))
            if code != 0:
                tail = (self.folder / f"{self.study}-worker{i}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {i} of study {self.study!r} exited with {code}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def trials_of(url: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(url, TuneConfig(storage=url)))


def worker_of(trial: FrozenTrial, study: str) -> int | None:
    """The worker whose run folder holds this trial's kept weights (set when its training finished)."""
    path = trial.user_attrs.get("weights", "")
    for part in Path(path).parts:
        if part.startswith(f"{study}-worker"):
            return int(part.removeprefix(f"{study}-worker"))
    return None


def describe(study: optuna.Study, name: str) -> dict[str, Any]:
    """What the study holds: trials by state, per worker, the completed trials' span and median duration."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    states = Counter(t.state.name.lower() for t in trials)
    per_worker = Counter(str(worker_of(t, name)) for t in complete)
    first = min(t.datetime_start for t in trials if t.datetime_start)
    span = (max(t.datetime_complete for t in complete) - first).total_seconds() if complete else None
    return {"states": dict(states), "complete": len(complete), "complete_per_worker": dict(per_worker), "span_s": span,
            "trial_s": [(t.datetime_complete - t.datetime_start).total_seconds() for t in complete],
            "finished_count": finished_count(study)}


def kill_checks(study: optuna.Study) -> dict[str, Any]:
    """Every trial number once; the killed trial failed and retried once with its parameters; no trial completed
    twice (a retry counts as its original); nothing left running or waiting."""
    trials = study.get_trials(deepcopy=False)
    origin = {t.number: t.system_attrs.get("failed_trial", t.number) for t in trials}
    completed = [origin[t.number] for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retries = {f.number: [t for t in trials if t.system_attrs.get("failed_trial") == f.number] for f in failed}
    return {
        "numbers_once": sorted(t.number for t in trials) == list(range(len(trials))),
        "failed": [f.number for f in failed],
        "retries": {str(n): [{"number": r.number, "state": r.state.name.lower(), "same_params": r.params == f.params}
                             for r in retries[n]] for n, f in zip(retries, failed)},
        "killed_trial_retried_and_completed": len(failed) == 1 and [r.state for r in retries[failed[0].number]]
        == [TrialState.COMPLETE] and retries[failed[0].number][0].params == failed[0].params,
        "none_completed_twice": len(completed) == len(set(completed)),
        "none_left_running": not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
    }


def part(key: str, args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    """Run one part; its row."""
    workers = Workers(args, url, key, folder)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    killed_at, orphaned = None, 0
    try:
        workers.start(1 if key == "one" else 2)
        if key == "kill":
            end = time.monotonic() + _WAIT
            study = None
            while killed_at is None:
                if time.monotonic() > end or any(p.poll() is not None for p in workers.procs):
                    raise RuntimeError("the two workers were never both mid-trial; nothing was killed")
                try:
                    study = study or trials_of(url, key)
                    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                except KeyError:  # the study is not created yet
                    running, done = [], []
                if len(running) == 2 and done:  # each worker runs one trial at a time: both are mid-trial
                    workers.procs[0].send_signal(signal.SIGKILL)
                    killed_at = time.perf_counter() - start
                time.sleep(0.2)
            workers.procs[0].wait()
            orphaned = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) if study else 0
        workers.wait([1] if key == "kill" else list(range(len(workers.procs))))
    finally:
        workers.stop()
    wall = time.perf_counter() - start
    study = trials_of(url, key)
    row = {"part": key, "workers": 1 if key == "one" else 2, "wall_s": wall, "load_before": load,
           "load_after": os.getloadavg()[0], **describe(study, key)}
    if key == "kill":
        row.update(killed_after_s=killed_at, running_after_kill=orphaned, **kill_checks(study))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="finished trials each study should hold (N)")
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs per trial: long enough that the survivor outlasts the grace period")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--heartbeat", type=int, default=2, help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace-period", type=int, default=10,
                        help="seconds without a heartbeat before a trial is failed and retried")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": []}
    with tempfile.TemporaryDirectory(prefix="shared-study-") as tmp, local_postgres() as url:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(SPACE, encoding="utf-8")
        for key in PARTS:
            row = part(key, args, url, folder)
            record["rows"].append(row)
            _report.save(record, args.run)
            print(f"{PARTS[key]}: {row['complete']} complete in {row['span_s']:.1f} s, states {row['states']}",
                  flush=True)
    line = _report.machine(f"{args.threads} torch thread(s) per worker", load_before, ["optuna"])
    _report.finish(record, args.run, line)
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args, rows = record["args"], {r["part"]: r for r in record["rows"]}
    base = rows.get("one")

    def per_hour(row: dict[str, Any]) -> float:
        return row["complete"] / row["span_s"] * 3600

    table = []
    for key, row in rows.items():
        states = ", ".join(f"{n} {s}" for s, n in sorted(row["states"].items()))
        table.append([PARTS[key], f"{row['complete']} ({states})",
                      ", ".join(f"w{w}: {n}" for w, n in sorted(row["complete_per_worker"].items())),
                      f"{row['span_s']:.1f}", f"{per_hour(row):.0f}",
                      f"{per_hour(row) / per_hour(base):.2f}x" if base else "-",
                      f"{statistics.median(row['trial_s']):.2f}", f"{row['wall_s']:.1f}",
                      f"{row['load_before']:.1f} / {row['load_after']:.1f}"])
    lines = [_report.heading(record), "",
             f"`cleanai tune --model {args['model']} --data {args['data']} --epochs {args['epochs']} --trials "
             f"{args['trials']} --sampler tpe --seed <worker> --storage postgresql://... --study <part> --heartbeat "
             f"{args['heartbeat']} --grace-period {args['grace_period']}` per worker (OMP_NUM_THREADS="
             f"{args['threads']}), on a private local PostgreSQL server; one run of each part, in the order shown. "
             "Trials per hour from the study's timestamps (first trial's start to last trial's end).", "",
             _report.table(["part", "trials complete (by state)", "complete per worker", "span s", "trials / hour",
                            "vs 1 worker", "median s / trial", "wall s (start-up incl.)", "load before / after"],
                           table)]
    kill = rows.get("kill")
    if kill:
        failed = kill["failed"]
        retried = "; ".join(f"trial {n} -> " + ", ".join(f"retry {r['number']} {r['state']}"
                                                        f"{' (same parameters)' if r['same_params'] else ''}"
                                                        for r in rs) for n, rs in kill["retries"].items())
        ok = kill["numbers_once"] and kill["killed_trial_retried_and_completed"] and kill["none_completed_twice"] \
            and kill["none_left_running"] and kill["finished_count"] >= args["trials"]
        if not failed and not kill["none_left_running"]:  # the survivor finished before the heartbeat went stale
            lines += ["", f"Kill: worker 0 SIGKILLed {kill['killed_after_s']:.1f} s after the start, mid-trial, but the "
                          f"survivor brought the study to {kill['finished_count']} finished trials before the "
                          f"{args['grace_period']} s grace period ran out: the killed trial was left RUNNING, never "
                          "failed or retried, so this run did not test the retry (its trials are too short for the "
                          "grace period: raise --epochs). No trial lost or run twice to completion: NOT shown."]
            return "\n".join(lines)
        if not failed:  # the signal landed between two of worker 0's trials: nothing was interrupted
            lines += ["", f"Kill: worker 0 SIGKILLed {kill['killed_after_s']:.1f} s after the start, when the study "
                          f"showed both workers mid-trial, but no trial was failed as stale: most likely worker 0 had finished its "
                          f"trial before the signal landed (the poll and the kill ran on a starved CPU), so this run "
                          f"did not test the retry of a killed trial. The study holds {kill['complete']} complete "
                          f"trials, every number once: {_yes(kill['numbers_once'])}; none left running: "
                          f"{_yes(kill['none_left_running'])}."]
            return "\n".join(lines)
        lines += ["", f"Kill: worker 0 SIGKILLed {kill['killed_after_s']:.1f} s after the start, while both workers "
                      f"were mid-trial. Failed trial(s): {failed or 'none'} ({retried or 'no retry'}). Every trial "
                      f"number once: {_yes(kill['numbers_once'])}; finished trials (a retried one counted once) "
                      f"{kill['finished_count']} of {args['trials']}; none completed twice: "
                      f"{_yes(kill['none_completed_twice'])}; none left running or waiting: "
                      f"{_yes(kill['none_left_running'])}. No trial lost or run twice to completion: "
                      f"{'met' if ok else 'NOT met'}."]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    main()

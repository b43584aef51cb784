"""A tuning worker run as its own process by the persistence tests (killed with SIGKILL mid-trial there).

    python study_worker.py MARKERS '{"run_dir": ..., "storage": ..., ...TuneConfig fields}' SECONDS

Each trial writes `MARKERS/started-<number>-<pid>` when it begins and `finished-<number>-<pid>` when its
objective returns, and sleeps SECONDS in between, so a test knows which trial a kill interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from cleanai.tuning import TuneConfig, tune

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def main() -> None:
    markers, config, seconds = Path(sys.argv[1]), TuneConfig(**json.loads(sys.argv[2])), float(sys.argv[3])

    def objective(trial):
        (markers / f"started-{trial.number}-{os.getpid()}").touch()
        time.sleep(seconds)
        (markers / f"finished-{trial.number}-{os.getpid()}").touch()
        return trial.params["x"]

    tune(objective, SPACE, config)


if __name__ == "__main__":
    main()

"""How long do the README's two commands take on a fresh clone, installs included?

Clones the current commit into a new temporary folder (nothing installed, no `.venv`), then times, in
order: `make venv` (create the virtual environment, install the pinned stack), `bash .ci/run` (what CI
runs: `make test`, the whole suite) and `make demo`. The data and model folders are the ones this
checkout uses (`CLEANAI_DATA` / `CLEANAI_MODELS`, else `../shared/`). The clone is deleted afterwards
unless `--keep`. Rows: benchmarks/results/install_time/<--run>/rows.json.
Usage: python benchmarks/install_time.py [--run latest] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _report  # benchmarks/_report.py: scripts run from this folder

REPO = _report.HERE.parent
PHASES = (("make venv", ["make", "venv"]), ("bash .ci/run", ["bash", ".ci/run"]), ("make demo", ["make", "demo"]))


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `command`, returning its wall seconds, exit code and the last lines of its output."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    return {"seconds": time.perf_counter() - start, "returncode": done.returncode, "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="latest", help="name of the results folder")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = parser.parse_args()
    record = {**_report.provenance(args), "rows": []}
    load_before = os.getloadavg()[0]
    shared = REPO.parent / "shared"
    env = {**os.environ, "CLEANAI_DATA": os.environ.get("CLEANAI_DATA", str(shared / "data")),
           "CLEANAI_MODELS": os.environ.get("CLEANAI_MODELS", str(shared / "models"))}
    env.pop("VIRTUAL_ENV", None)
    folder = Path(tempfile.mkdtemp(prefix="cleanai-install-time-"))
    clone = folder / "cleanai"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", record["commit"].removesuffix("+dirty")], cwd=clone, check=True)
    for name, command in PHASES:
        row = {"phase": name, **timed(command, clone, env)}
        record["rows"].append(row)
        print(f"{name}: {row['seconds']:.0f} s, exit {row['returncode']}", flush=True)
        if row["returncode"]:
            break
    if args.keep:
        print(f"clone kept in {clone}")
    else:
        shutil.rmtree(folder)
    _report.finish(record, args.run, _report.machine("make's defaults", load_before))
    print("\n" + render(record))


def render(record: dict[str, Any]) -> str:
    """The phases with their wall time and outcome (the test count as pytest printed it)."""
    def outcome(row: dict[str, Any]) -> str:
        summary = next((line for line in reversed(row["tail"]) if re.search(r"\d+ (passed|failed)", line)), None)
        return (summary or "ok").strip("= ") if row["returncode"] == 0 else f"FAILED (exit {row['returncode']})"
    rows = record["rows"]
    total = sum(r["seconds"] for r in rows)
    return "\n".join([
        _report.heading(record), "",
        "A fresh clone of the commit above, nothing installed; each phase run in it in order. The test count is "
        "pytest's own summary line.", "",
        _report.table(["phase", "wall time", "outcome"],
                      [[f"`{r['phase']}`", f"{r['seconds'] / 60:.1f} min", outcome(r)] for r in rows]
                      + [["all", f"{total / 60:.1f} min", ""]])])


if __name__ == "__main__":
    main()

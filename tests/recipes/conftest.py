from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cleanai.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "recipes" / "digits_demo.yaml"
# The demo recipe on tiny settings: 2 of its criteria (one data-driven), 3 epochs, a short benchmark.
TINY_DEMO = ["steps.train.epochs=3", "steps.distill.train.epochs=1", "steps.benchmark.runs=3",
             "steps.benchmark.warmup=1", "steps.benchmark.repeats=1", "steps.benchmark.throughput_runs=1",
             "steps.benchmark.threads=1",
             "variants={magnitude: {prune: {criterion: magnitude}}, coverage: {prune: {criterion: coverage}}}"]


@pytest.fixture(scope="session")
def demo_args() -> list[str]:
    """`cleanai run` arguments of the demo recipe on tiny settings (without --out)."""
    return ["run", str(DEMO), "--quiet", "--set", *TINY_DEMO]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, demo_args: list[str]) -> Path:
    """recipes/digits_demo.yaml run as is but for TINY_DEMO, through the CLI, with its reports."""
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main([*demo_args, "--out", str(out)]) == 0
    return out


TINY = """\
name: tiny
model:
  name: small_cnn
data:
  name: digits
steps:
  - type: train
    epochs: 1
  - type: prune
    ratio: 0.3
  - type: export
  - type: benchmark
    runs: 3
variants:
  a: {prune: {criterion: magnitude}}
"""


@pytest.fixture
def recipe_file(tmp_path: Path):
    """`recipe_file(text=TINY)` -> a recipe YAML file in tmp_path."""
    def write(text: str = TINY, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def cleanai_process():
    """`cleanai_process(*args)` -> `cleanai ...` started in a child process (this interpreter, this environment)."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        paths = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        started.append(subprocess.Popen([sys.executable, "-m", "cleanai.cli", *args], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def tiny_text() -> str:
    """A small valid recipe (train -> prune -> export -> benchmark, one variant); line numbers matter to tests."""
    return TINY

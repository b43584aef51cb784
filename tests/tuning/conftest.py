"""Tiny real data and models for the tuning tests: a part of the embedded digits, an MLP built from `hp`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn
from torch.utils.data import DataLoader

from cleanai.data import load_dataset, subset
from cleanai.tuning import HyperParameters


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digit_loaders(digits):
    """300 training and 120 validation digits (class-balanced), batches of 50."""
    train = DataLoader(subset(digits.train, 300, seed=0), batch_size=50, shuffle=False)
    val = DataLoader(subset(digits.val, 120, seed=0), batch_size=120)
    return train, val


def build_mlp(hp: HyperParameters) -> nn.Module:
    """An 8x8 digit MLP whose hidden width is a hyperparameter."""
    width = hp.Int("units", 8, 32, step=8)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


# ---- a private PostgreSQL server (Debian's package; `.ci/system-packages`, run by `make test`, installs it)

REPO = Path(__file__).resolve().parents[2]
PG_USER, PG_PASSWORD = "tuner", "s3cret-pw"


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server listening on 127.0.0.1 only (a free port, password auth), its data in a temporary
    folder; stopped and removed after the session. Run as the `postgres` user when the tests run as root."""
    if _postgres_bin() is None:
        subprocess.run(["bash", str(REPO / ".ci" / "system-packages")], check=True)
    bindir = _postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL's initdb is not under /usr/lib/postgresql/*/bin; run .ci/system-packages (as root)")
    base = Path(tempfile.mkdtemp(prefix="cleanai-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    (base / "pw").write_text(PG_PASSWORD + "\n")
    if as_user:
        shutil.chown(base / "pw", "postgres", "postgres")
    port, data = _free_port(), base / "data"

    def run(*cmd: object) -> None:
        subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True)

    run(bindir / "initdb", "-D", data, "-U", PG_USER, f"--pwfile={base / 'pw'}", "--auth-local=trust",
        "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync")
    run(bindir / "pg_ctl", "-D", data, "-l", base / "server.log", "-w", "-t", "120", "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off", "start")
    try:
        yield f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

"""Tiny real data and models for the tuning tests: a part of the embedded digits, an MLP built from `hp`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn
from torch.utils.data import DataLoader

from cleanai.data import load_dataset, subset
from cleanai.tuning import HyperParameters, local_postgres
from cleanai.tuning.local_postgres import postgres_bindir


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


@pytest.fixture(scope="session")
def postgres_installed() -> None:
    """PostgreSQL's server binaries, installed with the Debian package when they are missing."""
    if postgres_bindir() is None:
        subprocess.run(["bash", str(REPO / ".ci" / "system-packages")], check=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_installed) -> Iterator[str]:
    """A real PostgreSQL server listening on 127.0.0.1 only (`local_postgres`: a free port, password auth, its data
    in a temporary folder), stopped and removed after the session."""
    with local_postgres(user="tuner", password="s3cret-pw") as url:
        yield url

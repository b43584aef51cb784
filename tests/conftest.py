"""Shared fixtures. Real data and models are read from ../shared (or $CLEANAI_DATA / $CLEANAI_MODELS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Make the library find the shared copies the way a user's environment variable would.
if (SHARED / "data").is_dir():
    os.environ.setdefault("CLEANAI_DATA", str(SHARED / "data"))
if (SHARED / "models").is_dir():
    os.environ.setdefault("CLEANAI_MODELS", str(SHARED / "models"))


def _shared_dir(var: str, what: str) -> Path:
    path = Path(os.environ.get(var, ""))
    if not path.is_dir():
        raise RuntimeError(f"{what} not found: set {var} or place the shared folder at {SHARED}")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding cifar10-jpeg/ and clinc150/ (fails loudly if absent: these tests prove real data)."""
    return _shared_dir("CLEANAI_DATA", "shared data folder")


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """The folder holding resnet-cifar10-akamaster/."""
    return _shared_dir("CLEANAI_MODELS", "shared models folder")


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny test tensors run fastest, and least disturbed, on one thread

"""A small CNN trained on the embedded digits data (seconds), the model every optimize test starts from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cleanai.data import load_dataset
from cleanai.io import save_safetensors
from cleanai.models import create_model
from cleanai.optimize import OptimizeConfig
from cleanai.training import TrainConfig, Trainer


@pytest.fixture(scope="module", autouse=True)
def _private_cache(private_cache: Path) -> Path:
    """Every optimize test module caches into its own temporary folder (`private_cache`)."""
    return private_cache


@pytest.fixture(scope="session")
def digits_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_cnn trained 4 epochs on digits, as a safetensors file (what a user passes as --weights)."""
    torch.manual_seed(0)
    splits = load_dataset("digits")
    model = create_model("small_cnn", num_classes=10)
    Trainer(model, config=TrainConfig(epochs=4, optimizer="adamw", lr=3e-3, progress=False, seed=0)).fit(
        splits.loaders(batch_size=64).train)
    path = tmp_path_factory.mktemp("digits-cnn") / "cnn.safetensors"
    save_safetensors(model, path)
    return path


def tiny(out: Path, **fields) -> OptimizeConfig:
    """The quick preset cut further for tests: 3 trials, one criterion, one step, short timings."""
    settings = {"out": out, "n_trials": 3, "criteria": ["magnitude"], "max_steps": 1, "latency_runs": 5,
                "sensitivity_ratios": [0.5], "sensitivity_batches": 1, "max_fp32_layers": 1, "progress": False,
                "calibration_batches": 2, "calibrations": ["minmax"], "seed": 0}
    return OptimizeConfig.quick(**{**settings, **fields})

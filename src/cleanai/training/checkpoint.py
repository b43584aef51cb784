"""Training checkpoints that load with `torch.load(weights_only=True)`: tensors and plain Python only.

A checkpoint holds everything a resume needs: model, optimizer, scheduler and GradScaler states,
the RNG states of torch (CPU and CUDA), NumPy and Python (NumPy's and Python's stored as int64
tensors, which `weights_only` accepts), the loader's shuffling generator, epoch, optimizer-step
count, history, best value/epoch (and best weights when restoring them), and callback states.
Its `model` entry is a plain state dict, so `cleanai.io.load_state_dict(path)` reads the weights.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cleanai.errors import CheckpointError
from cleanai.io import PathLike, atomic_path, torch_load

FORMAT = "cleanai.training/1"


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of torch, CUDA, NumPy and Python, as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> Path:
    """Write `state` atomically: a crash mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (weights_only; refuses anything else)."""
    state = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{str(path)!r} is not a CleanAI training checkpoint (format {found!r}, "
                              f"expected {FORMAT!r}); to load bare weights use cleanai.io.load_weights")
    return state

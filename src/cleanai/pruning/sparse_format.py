"""A sparse weights file: safetensors holding only the non-zero values plus a packed bitmask per tensor.

`save_sparse` writes it (the file really shrinks with sparsity), `read_sparse` restores the exact dense
state dict, `load_sparse` loads it into a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, computed_field
from safetensors import SafetensorError, safe_open
from torch import nn

from cleanai.errors import CheckpointError, CleanAIError
from cleanai.io import PathLike, load_weights, save_safetensors
from cleanai.pruning.unstructured import masked_layers

SPARSE_FORMAT = "cleanai-sparse/1"



class SparseFileInfo(BaseModel):
    """What `save_sparse` wrote. `dense_bytes` is the tensor payload a dense file would hold (a dense safetensors
    file adds a header on top, so `ratio` understates the gain slightly); `file_bytes` is the file's real size."""

    model_config = ConfigDict(extra="forbid")

    path: str
    tensors: int
    compressed_tensors: int
    dense_bytes: int
    file_bytes: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float:
        """dense_bytes / file_bytes (4.0 means the file is 4x smaller)."""
        return self.dense_bytes / self.file_bytes if self.file_bytes else float("inf")


def save_sparse(model: nn.Module | Mapping[str, torch.Tensor], path: PathLike) -> SparseFileInfo:
    """Save a state dict as safetensors where each floating tensor that gets smaller so is stored as its non-zero
    values plus a packed bitmask (1 bit per entry); `read_sparse` restores equal tensors (a -0.0 comes back as
    0.0, every other bit is kept). Written atomically."""
    if isinstance(model, nn.Module):
        masked = masked_layers(model)
        if masked:
            raise CleanAIError(f"save_sparse: layers {masked[:5]} still carry masks (their stored weights are not the "
                               "ones they use); call make_permanent(model) first")
        state = model.state_dict()
    else:
        state = dict(model)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, list[Any]] = {}
    dense_bytes = 0
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        dense_bytes += t.numel() * t.element_size()
        if t.is_floating_point() and t.numel():
            keep = t != 0  # -0.0 (what masking a negative weight by multiplication gives) counts as zero
            nnz = int(keep.sum())
            if nnz * t.element_size() + (t.numel() + 7) // 8 < t.numel() * t.element_size():
                tensors[f"{name}::values"] = t[keep]
                tensors[f"{name}::bitmask"] = torch.from_numpy(np.packbits(keep.flatten().numpy()))
                layout[name] = ["bitmask", list(t.shape)]
                continue
        tensors[name] = t
        layout[name] = ["dense", list(t.shape)]
    save_safetensors(tensors, path, metadata={"format": SPARSE_FORMAT, "layout": json.dumps(layout)})
    return SparseFileInfo(path=str(path), tensors=len(layout),
                          compressed_tensors=sum(kind == "bitmask" for kind, _ in layout.values()),
                          dense_bytes=dense_bytes, file_bytes=os.path.getsize(path))


def read_sparse(path: PathLike) -> dict[str, torch.Tensor]:
    """The dense state dict stored by `save_sparse`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"sparse checkpoint {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != SPARSE_FORMAT:
                raise CheckpointError(f"{str(p)!r} is not a file written by save_sparse (format "
                                      f"{meta.get('format')!r}, expected {SPARSE_FORMAT!r}); read dense safetensors "
                                      "with cleanai.io.load_state_dict")
            state = {}
            for name, (kind, shape) in json.loads(meta["layout"]).items():
                if kind == "dense":
                    state[name] = fh.get_tensor(name)
                    continue
                values = fh.get_tensor(f"{name}::values")
                numel = int(np.prod(shape))
                bits = fh.get_tensor(f"{name}::bitmask").numpy()
                keep = torch.from_numpy(np.unpackbits(bits, count=numel).astype(bool))
                if int(keep.sum()) != values.numel():
                    raise CheckpointError(f"{str(p)!r}: tensor {name!r} has {values.numel()} values but its bitmask "
                                          f"marks {int(keep.sum())}; the file is corrupt")
                dense = torch.zeros(numel, dtype=values.dtype)
                dense[keep] = values
                state[name] = dense.view(shape)
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{str(p)!r} is not a readable sparse checkpoint: {exc}") from None
    return state


def load_sparse(model: nn.Module, path: PathLike, strict: bool = True) -> nn.Module:
    """Load a `save_sparse` file into `model` (names the first missing or mis-shaped tensor); returns `model`."""
    return load_weights(model, read_sparse(path), strict=strict)

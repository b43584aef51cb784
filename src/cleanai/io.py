"""Safe, atomic file I/O: nothing partial is ever left behind, and no user file is unpickled.

Weights are stored as safetensors. Foreign torch checkpoints (`.pt`, `.pth`, `.th`) are read with
`torch.load(weights_only=True)` only; a file that would need arbitrary pickle is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cleanai.errors import CheckpointError

PathLike = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file gets the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; it replaces `path` whole only if the block succeeds.

    A crash leaves the previous folder (or nothing) at `path`, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(stage, 0o777 & ~_umask())
    old = target.with_name(f".{target.name}.old")
    try:
        yield stage
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, default=str)
        fh.write("\n")


def save_safetensors(state: Mapping[str, torch.Tensor] | torch.nn.Module, path: PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Save a module's state dict (or a tensor dict) as safetensors, atomically.

    Tensors that share storage (tied weights) are cloned so safetensors accepts them.
    """
    sd = state.state_dict() if isinstance(state, torch.nn.Module) else state
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        tensors[name] = t.clone().contiguous() if ptr in seen or not t.is_contiguous() else t
        if ptr != -1:
            seen.add(ptr)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read weights from safetensors or a torch checkpoint, never executing pickled code.

    A torch checkpoint may hold the state dict at its top level or under `state_dict`/`model`;
    a `module.` prefix (saved from DataParallel) is stripped.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist (expected a .safetensors, .pt, .pth or .th file)")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{str(p)!r} is not a readable safetensors file: {exc}") from None
    obj = _torch_load_safely(p)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{str(p)!r} holds a {type(obj).__name__}, not a state dict of tensors "
            "(expected a mapping name -> tensor, possibly under 'state_dict' or 'model')"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def torch_load(path: PathLike) -> Any:
    """`torch.load(weights_only=True)` with clear errors; used for CleanAI's own training checkpoints."""
    return _torch_load_safely(Path(path))


def _torch_load_safely(p: Path) -> Any:
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), None)
        if detail is not None:
            raise CheckpointError(
                f"{str(p)!r} refused: it needs arbitrary pickle code to load ({detail.split(' was not')[0]}), "
                "which CleanAI never runs on a user's file. Re-save its state_dict() with torch.save, or as "
                ".safetensors."
            ) from None
        raise CheckpointError(
            f"{str(p)!r} is not a checkpoint CleanAI can read safely: it is neither a torch.save file of tensors "
            "nor a pickle that weights_only loading accepts (expected a .safetensors file or a torch state dict)"
        ) from None
    except Exception as exc:  # torch's loaders raise many types on junk (KeyError, EOFError, IndexError, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{str(p)!r} is not a readable torch checkpoint ({reason}); expected a "
                              ".safetensors file or a torch state dict") from None


def load_weights(model: torch.nn.Module, source: PathLike | Mapping[str, torch.Tensor], strict: bool = True) -> torch.nn.Module:
    """Load weights into `model`, naming the first missing, unexpected or mis-shaped tensor."""
    sd = load_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    own = model.state_dict()
    for name in own:  # checkpoints saved before torch 0.4 lack BatchNorm counters; torch itself tolerates that
        if name.endswith("num_batches_tracked") and name not in sd and name.replace("num_batches_tracked", "running_mean") in sd:
            sd[name] = torch.zeros_like(own[name])
    for name, tensor in sd.items():
        if name in own and own[name].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(own[name].shape)}: the checkpoint was saved from a different architecture or width"
            )
    if strict:
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint does not fit {type(model).__name__}: "
                + (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''} " if missing else "")
                + (f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
                + " (pass strict=False to load the overlap)"
            )
    model.load_state_dict(sd, strict=strict)
    return model

"""Safe, atomic file I/O: nothing partial is ever left behind, and no user file is unpickled.

Weights are stored as safetensors. Foreign torch checkpoints (`.pt`, `.pth`, `.th`) are read with
`torch.load(weights_only=True)` only; a file that would need arbitrary pickle is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cleanai.errors import CheckpointError, OutputError

PathLike = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


RUN_MARKER = ".cleanai-run"  # inside every folder `atomic_dir` writes: proof that CleanAI may replace it
_MARKER_TEXT = "Written by CleanAI. The next run to this path replaces this folder whole.\n"
_TEMP = r"[a-z0-9_]{8}"  # the random part of tempfile's names


def check_destination(path: PathLike, *, kind: Literal["dir", "file"] = "dir", overwrite: bool = False,
                      option: str = "output") -> Path:
    """Refuse, before any work, a destination CleanAI could not write or must not replace; return it.

    `path` must name something (not `''`, `.` or a folder holding the working directory), lie under
    a folder (not a file) where this process may write, and not be a file when a folder is asked
    for, nor a folder when a file is. An existing folder is replaced only if it is empty or
    carries the marker `atomic_dir` leaves; an existing file or a foreign folder only with
    `overwrite=True`. A file is never replaced by a folder nor a folder by a file.
    """
    target = Path(path)
    where = f"{option} {str(path)!r}"
    force = "--overwrite" if option.startswith("--") else "overwrite=True"
    if str(path) in ("", ".") or target.name in ("", ".", ".."):
        raise OutputError(f"{where} does not name a {'folder' if kind == 'dir' else 'file'}; give a new path such "
                          f"as runs/{'out' if kind == 'dir' else 'model.onnx'}")
    resolved = target.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise OutputError(f"{where} is the working directory or holds it; give a new folder such as runs/out")
    if len(target.name.encode()) > 200:
        raise OutputError(f"{where}: the name is {len(target.name.encode())} bytes long; keep it under 200")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{where} lies under {str(parent)!r}, which is a file, not a folder")
    _check_writable(parent, where)
    if target.is_dir():
        if kind == "file":
            raise OutputError(f"{where} is an existing folder; give a file path such as {str(target / 'model.onnx')!r}")
        if not overwrite and any(target.iterdir()) and not (target / RUN_MARKER).is_file():
            raise OutputError(f"{where} is a folder CleanAI did not write and it is not empty; choose a new folder, "
                              f"or pass {force} to replace it and everything in it")
    elif target.exists() or target.is_symlink():
        if kind == "dir":
            raise OutputError(f"{where} is an existing file, and a folder never replaces a file; choose another path")
        if not overwrite:
            raise OutputError(f"{where} exists; choose a new file name, or pass {force} to replace it")
    return target


def _check_writable(folder: Path, where: str) -> None:
    """Create and remove a probe file in `folder` (works for read-only mounts and for root alike)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".cleanai-probe.", dir=folder)
    except OSError as exc:
        raise OutputError(f"{where} cannot be written: {str(folder)!r} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _clean_stale(target: Path) -> None:
    """Remove what killed runs to `target` left beside it, and nothing else: staging folders named
    `.<name>.XXXXXXXX[.old].tmp` holding the marker, and temporary files named `.<name>.XXXXXXXX.tmp`."""
    staged = re.compile(rf"\.{re.escape(target.name)}\.{_TEMP}(\.old)?\.tmp")
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            match = staged.fullmatch(entry.name)
            if match is None or entry.is_symlink():
                continue
            if entry.is_dir() and (entry / RUN_MARKER).is_file():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_file() and match.group(1) is None:
                with contextlib.suppress(OSError):
                    entry.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Temporary files that a killed earlier write to the same `path` left behind are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 (and writers may recreate the file): usual permissions
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
def atomic_dir(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `path` (holding only the marker); it replaces `path` whole only if the block
    succeeds.

    A crash leaves the previous folder (or nothing) at `path`, never a half-written one; staging
    folders a killed run left beside `path` are removed. The folder written carries a marker file,
    `.cleanai-run`: only a folder with it, or an empty one, is replaced, unless `overwrite=True`
    (`check_destination` says what is refused). A file at `path` is never replaced.
    """
    target = Path(path)
    check_destination(target, kind="dir", overwrite=overwrite)
    with staging_dir(target) as stage:
        old = stage.with_name(stage.name.removesuffix(".tmp") + ".old.tmp")
        try:
            yield stage
            check_destination(target, kind="dir", overwrite=overwrite)  # it may have changed during the work
            if target.exists():
                os.replace(target, old)
                (old / RUN_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")  # so a kill now leaves it cleanable
            os.replace(stage, target)
        finally:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(path: PathLike) -> Iterator[Path]:
    """A scratch folder beside `path`, carrying the marker and removed afterwards, so that one a killed run
    left behind is recognised and removed by the next write to `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(target)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(stage, 0o777 & ~_umask())
    (stage / RUN_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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

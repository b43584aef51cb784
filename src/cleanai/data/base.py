"""What every dataset loader returns (`DataSplits`), the dataset registry, and shared helpers."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset

from cleanai.errors import DataError, UnknownArgumentError
from cleanai.registry import Registry

DATA_ENV = "CLEANAI_DATA"
CACHE_ENV = "CLEANAI_CACHE"

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")


class Loaders(NamedTuple):
    """Train (shuffled), validation and test DataLoaders of one dataset."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


@dataclass
class DataSplits:
    """A dataset's train/val/test splits plus what a model needs to know about them."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    label_names: list[str]
    task: Literal["image", "text"]
    input_shape: tuple[int, ...] | None  # (C, H, W) for images, None for text

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subsets(self, sizes: Mapping[str, int], seed: int = 0) -> DataSplits:
        """These splits with the ones `sizes` names ("train", "val", "test") cut to seeded, class-balanced parts
        (`subset`): the same seed gives the same samples, in every process of a data-parallel run too."""
        return replace(self, **{name: subset(getattr(self, name), n, seed=seed) for name, n in sizes.items()})

    def loaders(self, batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0,
                collate_fn: Callable[[list[Any]], Any] | None = None, seed: int = 0) -> Loaders:
        """DataLoaders for the three splits; only train is shuffled, by a generator seeded with `seed`.

        Text datasets default to `raw_text_collate` (batches of `(list[str], labels)`); pass
        `text_collate(tokenizer)` to get token tensors instead.
        """
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise DataError(f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}")
        if collate_fn is None and self.task == "text":
            from cleanai.data.text import raw_text_collate

            collate_fn = raw_text_collate
        workers = {"num_workers": num_workers}
        if num_workers > 0:
            workers.update(persistent_workers=True, prefetch_factor=2)

        def make(ds: Dataset, size: int, shuffle: bool) -> DataLoader:
            generator = torch.Generator().manual_seed(seed) if shuffle else None
            return DataLoader(ds, batch_size=size, shuffle=shuffle, generator=generator, collate_fn=collate_fn, **workers)

        eval_size = eval_batch_size or batch_size
        return Loaders(make(self.train, batch_size, True), make(self.val, eval_size, False), make(self.test, eval_size, False))


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return DATASETS.names()


def load_dataset(name: str, root: str | Path | None = None, **kwargs: Any) -> DataSplits:
    """Load a registered dataset by name; `root` is its directory (default under `$CLEANAI_DATA`)."""
    factory = DATASETS.get(name)
    params = inspect.signature(factory).parameters
    if root is not None:
        if "root" not in params:
            raise DataError(f"dataset {name!r} is built in and takes no root directory (got root={str(root)!r})")
        kwargs["root"] = root
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(p for p in params if p != "root") or "none"
        raise UnknownArgumentError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; valid options: {valid}")
    return factory(**kwargs)


def default_cache_dir() -> Path:
    """Where decoded data is cached: `$CLEANAI_CACHE`, else `~/.cache/cleanai`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cleanai"


def resolve_data_dir(root: str | Path | None, subdirs: Sequence[str], required: Sequence[str], dataset: str) -> Path:
    """Find the directory holding `required` files: `root` itself or `root/<subdir>`.

    Without `root`, look in `$CLEANAI_DATA/<subdir>`. Raise `DataError` naming every directory
    tried, the files expected there and the environment variable.
    """
    if root is None:
        base = os.environ.get(DATA_ENV)
        if not base:
            raise DataError(
                f"no directory given for {dataset} and ${DATA_ENV} is not set: pass root=<dir holding "
                f"{', '.join(required)}> or set {DATA_ENV} to the folder holding {' or '.join(f'{s}/' for s in subdirs)}"
            )
        candidates = [Path(base).expanduser() / s for s in subdirs]
    else:
        root = Path(root).expanduser()
        candidates = [root, *(root / s for s in subdirs)]
    for cand in candidates:
        if all((cand / f).is_file() for f in required):
            return cand
    tried = "; ".join(
        f"{c} ({'missing ' + ', '.join(f for f in required if not (c / f).is_file()) if c.is_dir() else 'not a directory'})"
        for c in candidates
    )
    raise DataError(
        f"{dataset} data not found. Expected {', '.join(required)} in one of: {tried}. "
        f"Pass root=<that directory> or set {DATA_ENV} to the folder holding {' or '.join(f'{s}/' for s in subdirs)}"
    )


def stratified_split(labels: np.ndarray, held_out: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..N-1 into (kept, held-out), class-balanced; `held_out` is a count or a fraction of N."""
    n = len(labels)
    count = round(held_out * n) if isinstance(held_out, float) else int(held_out)
    if not 0 <= count < n:
        raise DataError(f"held-out size {held_out!r} must be a count in [0, {n}) or a fraction in [0, 1)")
    idx = np.arange(n)
    if count == 0:
        return idx, idx[:0]
    kept, held = train_test_split(idx, test_size=count, stratify=labels, random_state=seed)
    return np.sort(kept), np.sort(held)


def subset(split: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A seeded random subset of `n` samples of `split` (the split itself when `n` is None or covers it all).

    Class-balanced (stratified) when the split exposes its `labels`, as the built-in datasets do, and
    `n` leaves room for every class on both sides; plainly random otherwise. Same seed, same samples.
    """
    if n is None or n >= len(split):
        return split
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"subset size n={n!r} must be a positive number of samples (or None for the whole split)")
    labels = getattr(split, "labels", None)
    if labels is not None:
        _, counts = np.unique(np.asarray(labels), return_counts=True)
        if counts.min() >= 2 and len(counts) <= n <= len(split) - len(counts):
            return Subset(split, stratified_split(np.asarray(labels), n, seed)[1].tolist())
    return Subset(split, torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].tolist())

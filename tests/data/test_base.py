"""The dataset registry, load_dataset's argument checks, directory resolution, splits and loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cleanai.data import (
    DATASETS, DataSplits, ImageDataset, Loaders, default_cache_dir, list_datasets, load_dataset, subset,
)
from cleanai.data.base import resolve_data_dir, stratified_split
from cleanai.errors import DataError, UnknownNameError


def _toy_splits(n: int = 10) -> DataSplits:
    images = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)
    ds = ImageDataset(images, torch.arange(n) % 2, scale=1.0)
    return DataSplits(name="toy", train=ds, val=ds, test=ds, label_names=["a", "b"], task="image", input_shape=(1, 2, 2))


def test_registry_lists_the_built_in_datasets():
    assert {"digits", "cifar10", "clinc150"} <= set(list_datasets())
    assert list_datasets() == DATASETS.names()


def test_unknown_dataset_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="cifar10.*clinc150.*digits"):
        load_dataset("imagenet")


def test_unknown_option_names_it_and_the_valid_options():
    with pytest.raises(TypeError, match=r"no option\(s\) batch.*valid options: val_size, test_size, seed"):
        load_dataset("digits", batch=3)


def test_root_for_an_embedded_dataset_is_refused():
    with pytest.raises(DataError, match="built in and takes no root"):
        load_dataset("digits", root="/somewhere")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLEANAI_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("CLEANAI_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "cleanai"


def test_resolve_data_dir_accepts_the_dir_or_its_parent(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"x")
    assert resolve_data_dir(tmp_path / "sub", ["sub"], ["a.bin"], "toy") == tmp_path / "sub"
    assert resolve_data_dir(tmp_path, ["sub"], ["a.bin"], "toy") == tmp_path / "sub"


def test_resolve_data_dir_uses_the_environment_variable(monkeypatch, tmp_path):
    (tmp_path / "alt").mkdir()
    (tmp_path / "alt" / "a.bin").write_bytes(b"x")
    monkeypatch.setenv("CLEANAI_DATA", str(tmp_path))
    assert resolve_data_dir(None, ["first", "alt"], ["a.bin"], "toy") == tmp_path / "alt"


def test_missing_files_error_names_directories_files_and_variable(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        resolve_data_dir(tmp_path, ["sub"], ["a.bin", "b.bin"], "toy")
    msg = str(err.value)
    assert f"{tmp_path} (missing b.bin)" in msg
    assert f"{tmp_path / 'sub'} (not a directory)" in msg
    assert "a.bin, b.bin" in msg and "CLEANAI_DATA" in msg


def test_unset_environment_variable_is_explained(monkeypatch):
    monkeypatch.delenv("CLEANAI_DATA", raising=False)
    with pytest.raises(DataError, match=r"\$CLEANAI_DATA is not set.*a\.bin.*sub/"):
        resolve_data_dir(None, ["sub"], ["a.bin"], "toy")


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.repeat(np.arange(4), [40, 40, 80, 40])
    kept, held = stratified_split(labels, 50, seed=3)
    assert len(held) == 50 and len(kept) == 150
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(200))
    assert np.bincount(labels[held]).tolist() == [10, 10, 20, 10]
    again, _ = stratified_split(labels, 50, seed=3)
    other, _ = stratified_split(labels, 50, seed=4)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)
    assert len(stratified_split(labels, 0.25, seed=0)[1]) == 50


def test_stratified_split_of_zero_holds_nothing_and_rejects_too_much():
    labels = np.arange(10) % 2
    kept, held = stratified_split(labels, 0, seed=0)
    assert len(kept) == 10 and len(held) == 0
    with pytest.raises(ValueError, match=r"held-out size 10 must be a count in \[0, 10\)"):
        stratified_split(labels, 10, seed=0)


def test_loaders_shuffle_train_only_and_reproducibly():
    splits = _toy_splits()
    loaders = splits.loaders(batch_size=4, eval_batch_size=5, seed=7)
    assert isinstance(loaders, Loaders)

    def order(loader):
        return [int(x[0, 0, 0, 0]) // 4 for xb, _ in loader for x in xb.split(1)]

    assert order(loaders.val) == list(range(10)) and order(loaders.test) == list(range(10))
    train = order(loaders.train)
    assert sorted(train) == list(range(10)) and train != list(range(10))
    assert train == order(splits.loaders(batch_size=4, seed=7).train)
    assert train != order(splits.loaders(batch_size=4, seed=8).train)
    assert [len(y) for _, y in loaders.train] == [4, 4, 2]
    assert [len(y) for _, y in loaders.val] == [5, 5]


def test_worker_options_only_when_workers_are_used():
    plain = _toy_splits().loaders(num_workers=0)
    assert not plain.train.persistent_workers
    threaded = _toy_splits().loaders(num_workers=1)
    assert threaded.train.persistent_workers and threaded.train.prefetch_factor == 2
    xb, yb = next(iter(threaded.val))
    assert xb.shape == (10, 1, 2, 2) and yb.tolist() == [0, 1] * 5


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size=0"):
        _toy_splits().loaders(batch_size=0)


def test_subset_is_seeded_class_balanced_and_leaves_small_requests_whole() -> None:
    digits = load_dataset("digits")
    part = subset(digits.train, 100, seed=3)
    labels = [digits.train.labels[i] for i in part.indices]
    assert len(part) == 100 and len(set(part.indices)) == 100
    assert max(np.bincount(labels, minlength=10)) - min(np.bincount(labels, minlength=10)) <= 2  # stratified
    assert part.indices == subset(digits.train, 100, seed=3).indices != subset(digits.train, 100, seed=4).indices
    assert subset(digits.train, None) is digits.train and subset(digits.train, 10**6) is digits.train
    plain = subset(torch.utils.data.TensorDataset(torch.arange(50)), 5, seed=0)  # no labels: plainly random
    assert len(plain) == 5 and plain.indices == subset(torch.utils.data.TensorDataset(torch.arange(50)), 5).indices
    with pytest.raises(DataError, match="subset size n=0 must be a positive number of samples"):
        subset(digits.train, 0)

"""The embedded scikit-learn digits dataset: splits, value range, determinism and loaders."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as load_digits_bunch

from cleanai.data import load_dataset, load_digits


def _labels(ds) -> np.ndarray:
    return ds.labels.numpy()


def test_default_split_is_60_20_20_and_covers_every_image_once():
    s = load_dataset("digits")
    assert (len(s.train), len(s.val), len(s.test)) == (1079, 359, 359)
    assert s.name == "digits" and s.task == "image" and s.input_shape == (1, 8, 8)
    assert s.label_names == [str(d) for d in range(10)] and s.num_classes == 10
    split_rows = torch.cat([s.train.images, s.val.images, s.test.images]).flatten(1).numpy()
    original = (load_digits_bunch().images / 16.0).reshape(-1, 64).astype(np.float32)
    assert sorted(r.tobytes() for r in split_rows) == sorted(r.tobytes() for r in original)


def test_splits_are_stratified():
    s = load_digits()
    full = np.bincount(np.concatenate([_labels(s.train), _labels(s.val), _labels(s.test)]))
    for part, share in ((s.train, 0.6), (s.val, 0.2), (s.test, 0.2)):
        assert np.all(np.abs(np.bincount(_labels(part), minlength=10) - share * full) <= 1.5)


def test_items_are_float_images_in_unit_range():
    s = load_digits()
    image, label = s.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8) and isinstance(label, int)
    assert float(s.train.images.min()) == 0.0 and float(s.train.images.max()) == 1.0


def test_split_is_deterministic_under_the_seed():
    a, b, c = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.test.images, c.test.images)


def test_sizes_are_options_as_counts_or_fractions():
    s = load_dataset("digits", val_size=100, test_size=0.5)
    assert (len(s.train), len(s.val), len(s.test)) == (799, 100, 898)


def test_loaders_yield_image_batches():
    loaders = load_digits().loaders(batch_size=32, eval_batch_size=100)
    xb, yb = next(iter(loaders.train))
    assert xb.shape == (32, 1, 8, 8) and xb.dtype == torch.float32
    assert yb.shape == (32,) and yb.dtype == torch.long
    assert [len(y) for _, y in loaders.test] == [100, 100, 100, 59]

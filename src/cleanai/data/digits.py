"""scikit-learn's bundled handwritten digits: the embedded dataset that needs no files."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_digits

from cleanai.data.base import DATASETS, DataSplits, stratified_split
from cleanai.data.images import ImageDataset


@DATASETS.register("digits")
def load_digits(val_size: int | float = 0.2, test_size: int | float = 0.2, seed: int = 0) -> DataSplits:
    """1,797 8x8 grey digits as float32 (1, 8, 8) tensors in [0, 1], split 60/20/20 by class.

    `val_size` / `test_size` are counts or fractions of the whole set; `seed` fixes the split.
    """
    bunch = _sklearn_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # pixel values are 0..16
    labels = torch.from_numpy(bunch.target).long()
    n = len(labels)
    test_count = round(test_size * n) if isinstance(test_size, float) else test_size
    val_count = round(val_size * n) if isinstance(val_size, float) else val_size
    rest, test_idx = stratified_split(bunch.target, test_count, seed)
    keep, val_idx = stratified_split(bunch.target[rest], val_count, seed)
    train_idx, val_idx = rest[keep], rest[val_idx]

    def part(idx: np.ndarray) -> ImageDataset:
        return ImageDataset(images[idx], labels[idx], scale=1.0)

    return DataSplits(
        name="digits", train=part(train_idx), val=part(val_idx), test=part(test_idx),
        label_names=[str(d) for d in bunch.target_names], task="image", input_shape=(1, 8, 8),
    )

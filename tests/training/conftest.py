"""Tiny, fast problems for the training tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_blobs(n: int = 128, classes: int = 3, dim: int = 4, seed: int = 0) -> TensorDataset:
    """Well-separated Gaussian blobs: a linear model reaches ~100% accuracy. The class centres are
    fixed; `seed` draws a different sample (a validation split) around them."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 4
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = centers[y] + 0.5 * torch.randn(n, dim, generator=g)
    return TensorDataset(x, y)


@pytest.fixture
def blobs() -> Callable[..., TensorDataset]:
    return make_blobs


@pytest.fixture
def make_loader() -> Callable[..., DataLoader]:
    def make(n: int = 128, batch_size: int = 16, shuffle: bool = False, seed: int = 0, **kw: int) -> DataLoader:
        return DataLoader(make_blobs(n, seed=seed, **kw), batch_size=batch_size, shuffle=shuffle)

    return make


@pytest.fixture
def mlp() -> Callable[..., nn.Module]:
    def make(dim: int = 4, classes: int = 3, hidden: int = 16, dropout: float = 0.0, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    return make

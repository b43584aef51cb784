"""The random baseline: every channel gets a seeded uniform score, the same for the same layer and seed."""

from __future__ import annotations

import zlib
from typing import Any

import torch

from cleanai.pruning.criteria.base import Criterion


class RandomCriterion(Criterion):
    """Uniform scores from a generator seeded by `seed` and the root layer's name (order-independent)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(normalizer="none")
        self.seed = int(seed)

    def group_scores(self, group: Any) -> torch.Tensor:
        root = group[0].dep.target.module
        names = getattr(getattr(group, "_DG", None), "_module2name", {})
        key = f"{names.get(root, type(root).__name__)}:{self.seed}"
        generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        return torch.rand(len(group[0].idxs), generator=generator, dtype=torch.float64)

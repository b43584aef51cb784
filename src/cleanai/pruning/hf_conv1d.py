"""Torch-Pruning pruner for transformers' `Conv1D` (GPT-2's MLP and projections): a Linear whose weight is
stored transposed, `(in_features, out_features)` = `(nx, nf)`, so DepGraph can remove its output and input
features as it does a Linear's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from cleanai._conv1d import conv1d_types
from cleanai.pruning.shortcuts import CUSTOMIZED_PRUNERS


class Conv1DPruner(tp.pruner.BasePruningFunc):
    """Removes columns (output features, with the bias) or rows (input features) of a `Conv1D` weight."""

    @staticmethod
    def _keep(total: int, idxs: Sequence[int], device: torch.device) -> torch.Tensor:
        drop = set(int(i) for i in idxs)
        return torch.tensor([i for i in range(total) if i not in drop], dtype=torch.long, device=device)

    def prune_out_channels(self, layer: Any, idxs: Sequence[int]) -> nn.Module:
        keep = self._keep(layer.nf, idxs, layer.weight.device)
        layer.weight = nn.Parameter(layer.weight.detach().index_select(1, keep).contiguous(),
                                    requires_grad=layer.weight.requires_grad)
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.detach().index_select(0, keep).contiguous(),
                                      requires_grad=layer.bias.requires_grad)
        layer.nf = len(keep)
        return layer

    def prune_in_channels(self, layer: Any, idxs: Sequence[int]) -> nn.Module:
        keep = self._keep(layer.nx, idxs, layer.weight.device)
        layer.weight = nn.Parameter(layer.weight.detach().index_select(0, keep).contiguous(),
                                    requires_grad=layer.weight.requires_grad)
        layer.nx = len(keep)
        return layer

    def get_out_channels(self, layer: Any) -> int:
        return int(layer.nf)

    def get_in_channels(self, layer: Any) -> int:
        return int(layer.nx)


def customized_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """The custom Torch-Pruning pruners for `model`: `ChannelSelect`, plus `Conv1DPruner` for each Conv1D class."""
    return {**CUSTOMIZED_PRUNERS, **{kind: Conv1DPruner() for kind in conv1d_types(model)}}

"""Torch-Pruning pruners for layers it lacks or mishandles, passed to every DependencyGraph CleanAI builds.

- `Conv1DPruner`: transformers' `Conv1D` (GPT-2's MLP and projections), a Linear whose weight is stored
  transposed, `(in_features, out_features)` = `(nx, nf)`: output and input features go as a Linear's.
- `RecurrentInputPruner`: LSTM / GRU / RNN. Their input features go with the layer feeding them (columns of
  `weight_ih_l0`, both directions); their hidden width is not pruned (gates would have to stay aligned
  across `weight_ih` and `weight_hh`), so `prune()` leaves every group reaching it whole and reports it.
"""

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


class RecurrentInputPruner(tp.pruner.BasePruningFunc):
    """Removes input features of an LSTM / GRU / RNN (columns of `weight_ih_l0` and `weight_ih_l0_reverse`)."""

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError(f"the hidden width of a {type(layer).__name__} is not pruned")

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        keep = Conv1DPruner._keep(layer.input_size, idxs, layer.weight_ih_l0.device)
        for name in ("weight_ih_l0", "weight_ih_l0_reverse"):
            weight = getattr(layer, name, None)
            if weight is not None:
                setattr(layer, name, nn.Parameter(weight.detach().index_select(1, keep).contiguous(),
                                                  requires_grad=weight.requires_grad))
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return (layer.proj_size or layer.hidden_size) * (2 if layer.bidirectional else 1)

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return int(layer.input_size)


def customized_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """The custom Torch-Pruning pruners for `model`: `ChannelSelect`, `Conv1DPruner` for each Conv1D class and
    `RecurrentInputPruner` for each recurrent layer class."""
    recurrent = {type(m) for m in model.modules() if isinstance(m, nn.RNNBase)}
    return {**CUSTOMIZED_PRUNERS, **{kind: Conv1DPruner() for kind in conv1d_types(model)},
            **{kind: RecurrentInputPruner() for kind in recurrent}}

"""Torch-Pruning pruners for layers it lacks or mishandles, passed to every DependencyGraph CleanAI builds.
(transformers' `Conv1D` needs none: `prune()` turns it into the equivalent Linear while it prunes.)

- `RecurrentInputPruner`: LSTM / GRU / RNN. Their input features go with the layer feeding them (columns of
  `weight_ih_l0`, both directions); their hidden width is not pruned (gates would have to stay aligned
  across `weight_ih` and `weight_hh`), so `prune()` leaves every group reaching it whole and reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from cleanai.pruning.shortcuts import CUSTOMIZED_PRUNERS


def _keep(total: int, idxs: Sequence[int], device: torch.device) -> torch.Tensor:
    """The indices in `range(total)` not in `idxs`."""
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(total) if i not in drop], dtype=torch.long, device=device)


class RecurrentInputPruner(tp.pruner.BasePruningFunc):
    """Removes input features of an LSTM / GRU / RNN (columns of `weight_ih_l0` and `weight_ih_l0_reverse`)."""

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError(f"the hidden width of a {type(layer).__name__} is not pruned")

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(layer.input_size, idxs, layer.weight_ih_l0.device)
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
    """The custom Torch-Pruning pruners for `model`: `ChannelSelect` and `RecurrentInputPruner` for each
    recurrent layer class."""
    recurrent = {type(m) for m in model.modules() if isinstance(m, nn.RNNBase)}
    return {**CUSTOMIZED_PRUNERS, **{kind: RecurrentInputPruner() for kind in recurrent}}

"""Make parameter-free "option A" shortcuts visible to Torch-Pruning's dependency graph.

The CIFAR ResNets' `PadShortcut` subsamples space and zero-pads channels. DepGraph sees the pad as
an element-wise op, so it couples the block input's C channels with the block output's 2C
channels and a pruned model fails at forward. `rewrite_pad_shortcuts` replaces each such shortcut
with `ChannelSelect`: the same function written as a fixed 0/1 selection matrix applied as a
strided 1x1 convolution whose weight is a buffer (no parameters, nothing to train). A custom
Torch-Pruning pruner removes its rows when output channels go and its columns when input channels
go, so residual groups stay coupled and the pruned shortcut keeps selecting the right channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from cleanai.models import PadShortcut
from cleanai._batches import model_device
from cleanai.errors import ConfigError


class ChannelSelect(nn.Module):
    """out[:, o] = x[:, i, ::stride, ::stride] where selection[o, i] == 1, else zero."""

    def __init__(self, selection: torch.Tensor, stride: int = 1) -> None:
        super().__init__()
        if selection.dim() != 2:
            raise ConfigError(f"ChannelSelect: selection must be a 2-D (out, in) 0/1 matrix, got shape "
                             f"{tuple(selection.shape)}")
        self.register_buffer("selection", selection.detach().clone().float().reshape(*selection.shape, 1, 1))
        self.stride = int(stride)

    @classmethod
    def from_pad_shortcut(cls, shortcut: PadShortcut) -> ChannelSelect:
        """The selection equivalent to a `PadShortcut` (channels placed after `pad // 2` zero channels)."""
        offset = (shortcut.out_channels - shortcut.in_channels) // 2
        selection = torch.zeros(shortcut.out_channels, shortcut.in_channels)
        selection[torch.arange(shortcut.in_channels) + offset, torch.arange(shortcut.in_channels)] = 1.0
        return cls(selection, shortcut.stride)

    @property
    def in_channels(self) -> int:
        return int(self.selection.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.selection.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.selection.to(x.dtype), stride=self.stride)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class ChannelSelectPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning pruner for `ChannelSelect`: input and output channels are pruned independently."""

    TARGET_MODULES = ChannelSelect

    @staticmethod
    def _keep(total: int, idxs: Sequence[int]) -> torch.Tensor:
        drop = set(int(i) for i in idxs)
        return torch.tensor([i for i in range(total) if i not in drop], dtype=torch.long)

    def prune_out_channels(self, layer: ChannelSelect, idxs: Sequence[int]) -> nn.Module:
        keep = self._keep(layer.out_channels, idxs).to(layer.selection.device)
        layer.selection = layer.selection.index_select(0, keep).contiguous()
        return layer

    def prune_in_channels(self, layer: ChannelSelect, idxs: Sequence[int]) -> nn.Module:
        keep = self._keep(layer.in_channels, idxs).to(layer.selection.device)
        layer.selection = layer.selection.index_select(1, keep).contiguous()
        return layer

    def get_out_channels(self, layer: ChannelSelect) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: ChannelSelect) -> int:
        return layer.in_channels


# Pass to every Torch-Pruning DependencyGraph built on a model that may hold a ChannelSelect.
CUSTOMIZED_PRUNERS: dict[type[nn.Module], tp.pruner.BasePruningFunc] = {ChannelSelect: ChannelSelectPruner()}


def rewrite_pad_shortcuts(model: nn.Module) -> list[str]:
    """Replace every `PadShortcut` in `model` (in place) by its `ChannelSelect`; return the names replaced."""
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, PadShortcut):
                setattr(parent, child_name, ChannelSelect.from_pad_shortcut(child).to(model_device(model)))
                replaced.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return replaced


"""Torch-Pruning pruners for layers it lacks or mishandles, passed to every DependencyGraph CleanAI builds.
(transformers' `Conv1D` needs none: `prune()` turns it into the equivalent Linear while it prunes.)

- `RecurrentPruner`: LSTM / GRU / RNN. Input features go with the layer feeding them (columns of every
  direction's `weight_ih_l0`); hidden units go whole: their rows in every gate of `weight_ih`, `weight_hh` and the
  biases, their columns of `weight_hh` and of the next layer's `weight_ih`, in every layer and direction (a
  bidirectional layer's output is [forward | backward], so `prune()` removes the same units from both halves).
  Torch-Pruning's own `LSTMPruner` slices the gates wrongly and handles neither GRU nor RNN nor stacked layers;
  a layer with `proj_size` keeps its hidden width (`hidden_width_prunable`).
- `MultiheadAttentionPruner`: `nn.MultiheadAttention` ties its inner width to `embed_dim` (head_dim x num_heads ==
  embed_dim), so a head can only go with its `head_dim` channels of the stream it reads and writes. `prune()`
  removes whole heads' blocks of that stream; this pruner refuses anything else and keeps `head_dim`, lowering
  `num_heads` (Torch-Pruning's keeps `num_heads` and re-splits the remaining width into narrower heads).
- `map_channels_last_flatten`: a (batch, steps, channels) tensor flattened to (batch, steps x channels), such as
  a Linear's or an attention's output read whole by a classifier, holds channel c at every t x channels + c.
  Torch-Pruning maps only channels-first flattens (c x steps + t) and leaves this one unmapped, so the consumer
  lost the wrong number of inputs; the mapping is added to the graph after it is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from cleanai.errors import CleanAIError
from cleanai.pruning.shortcuts import CUSTOMIZED_PRUNERS

GATES = {nn.LSTM: 4, nn.GRU: 3}  # rows of weight_ih / weight_hh per hidden unit (nn.RNN: 1)


def _keep(total: int, idxs: Sequence[int], device: torch.device) -> torch.Tensor:
    """The indices in `range(total)` not in `idxs`."""
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(total) if i not in drop], dtype=torch.long, device=device)


def _select(layer: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    tensor = getattr(layer, name, None)
    if tensor is not None:
        setattr(layer, name, nn.Parameter(tensor.detach().index_select(dim, index).contiguous(),
                                          requires_grad=tensor.requires_grad))


def hidden_width_prunable(layer: nn.RNNBase) -> bool:
    """Whether `RecurrentPruner` can remove hidden units of `layer` (not with a projection, `proj_size`)."""
    return not layer.proj_size


class RecurrentPruner(tp.pruner.BasePruningFunc):
    """Removes input features or whole hidden units of an LSTM / GRU / RNN (see the module docstring)."""

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        if not hidden_width_prunable(layer):
            raise CleanAIError(f"the hidden width of a {type(layer).__name__} with proj_size is not pruned")
        hidden, directions = layer.hidden_size, 2 if layer.bidirectional else 1
        units = sorted({int(i) % hidden for i in idxs})
        if directions == 2 and sorted(int(i) for i in idxs) != units + [u + hidden for u in units]:
            raise CleanAIError("a bidirectional recurrent layer loses the same hidden units in both directions")
        device = layer.weight_hh_l0.device
        keep = _keep(hidden, units, device)
        gates = GATES.get(type(layer), 1)
        rows = torch.cat([keep + g * hidden for g in range(gates)])
        inputs = torch.cat([keep + d * hidden for d in range(directions)])
        for k in range(layer.num_layers):
            for suffix in ("", "_reverse")[:directions]:
                for name in (f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}", f"bias_ih_l{k}{suffix}",
                             f"bias_hh_l{k}{suffix}"):
                    _select(layer, name, rows, 0)
                _select(layer, f"weight_hh_l{k}{suffix}", keep, 1)
                if k:
                    _select(layer, f"weight_ih_l{k}{suffix}", inputs, 1)
        layer.hidden_size = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(layer.input_size, idxs, layer.weight_ih_l0.device)
        for name in ("weight_ih_l0", "weight_ih_l0_reverse"):
            _select(layer, name, keep, 1)
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return (layer.proj_size or layer.hidden_size) * (2 if layer.bidirectional else 1)

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return int(layer.input_size)


class MultiheadAttentionPruner(tp.pruner.function.MultiheadAttentionPruner):
    """Removes whole heads of `nn.MultiheadAttention` with their head_dim channels of its stream (see above)."""

    def check(self, layer: nn.MultiheadAttention, idxs: Sequence[int], to_output: bool) -> None:
        d = layer.head_dim
        drop = set(int(i) for i in idxs)
        split = sorted(h for h in {i // d for i in drop} if not {h * d + j for j in range(d)} <= drop)
        if split:
            raise CleanAIError(f"removing channels {sorted(drop)} of nn.MultiheadAttention would split heads {split} "
                               f"(head_dim {d}); only whole heads are removed")

    def prune_out_channels(self, layer: nn.MultiheadAttention, idxs: Sequence[int]) -> nn.Module:
        head_dim = layer.head_dim
        super().prune_out_channels(layer, list(idxs))
        layer.num_heads, layer.head_dim = layer.embed_dim // head_dim, head_dim
        return layer

    prune_in_channels = prune_out_channels


class _ChannelsLastFlatten:
    """Index mapping of a channels-last flatten: channel c <-> features t x channels + c (reverse: feature % channels)."""

    def __init__(self, channels: int, steps: int, reverse: bool) -> None:
        self.channels, self.steps, self.reverse = channels, steps, reverse

    def __call__(self, idxs: list) -> list:
        index = tp._helpers._HybridIndex
        if self.reverse:
            return list(dict.fromkeys(index(idx=i.idx % self.channels, root_idx=i.root_idx) for i in idxs))
        return [index(idx=t * self.channels + i.idx, root_idx=i.root_idx) for t in range(self.steps) for i in idxs]


def map_channels_last_flatten(dg: tp.DependencyGraph) -> None:
    """Give each unmapped flatten of a (batch, steps, channels) tensor whose channels are last its index mapping."""
    infer = tp.dependency.shape_infer
    for node in list(dg.module2node.values()):
        size = tuple(getattr(node.grad_fn, "_saved_self_sym_sizes", ()) or ())
        if node.type != tp.ops.OPTYPE.RESHAPE or len(size) != 3:
            continue
        ins = [infer.infer_out_channels_recursively(dg, n, [0]) for n in node.inputs]
        outs = [infer.infer_in_channels_recursively(dg, n, [0]) for n in node.outputs]
        steps, channels = int(size[1]), int(size[2])
        if ins != [channels] or not outs or any(o != steps * channels for o in outs) or steps == 1:
            continue
        for source in node.inputs:
            deps = [d for d in node.dependencies if d.target == source] + [
                d for d in source.dependencies if d.target == node]
            if any(d.index_mapping[0] is not None for d in deps):
                continue  # Torch-Pruning mapped it (channels first)
            for dep in deps:
                dep.index_mapping[0] = _ChannelsLastFlatten(channels, steps, reverse=dep.target == source)


def customized_pruners(model: nn.Module) -> dict[type[nn.Module], tp.pruner.BasePruningFunc]:
    """The custom Torch-Pruning pruners for `model`: `ChannelSelect`, `RecurrentPruner` for each recurrent layer
    class and `MultiheadAttentionPruner`."""
    recurrent = {type(m) for m in model.modules() if isinstance(m, nn.RNNBase)}
    return {**CUSTOMIZED_PRUNERS, **{kind: RecurrentPruner() for kind in recurrent},
            nn.MultiheadAttention: MultiheadAttentionPruner()}

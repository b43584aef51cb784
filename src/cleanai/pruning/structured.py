"""Structured pruning: physically remove channels, filters, neurons and attention heads.

`prune(model, example_inputs, PruneConfig(...), calib=...)` builds Torch-Pruning's DependencyGraph,
scores every coupled group with the chosen criterion and removes the lowest-scored channels through
DepGraph, so residual additions, depthwise convolutions and flatten -> linear stay consistent. Attention
heads are removed whole: an attention adapter (`cleanai.pruning.attention`: BERT, RoBERTa, MobileBERT,
DistilBERT, ViT, GPT-2, or a `num_heads` map) names each module's q/k/v/output projections; the head's
channels are scored as one DepGraph group and cut from all four projections together. The forward pass
is checked after every step; a failure raises `CleanAIError` naming the step and the layer while
the caller's model stays untouched (it is deep-copied unless `inplace=True`).

Ratio semantics (Torch-Pruning's `pruning_ratio`): `ratio` is the fraction of channels removed,
counted against the widths before pruning — from each group separately (`scope="local"`) or from
all groups together, ranked by normalised score (`scope="global"`). A conv whose input and output
both shrink by r keeps about (1-r)² of its MACs, so MACs typically fall by 1-(1-r)² (r=0.3 -> ~50%).
Iterative pruning reaches the ratio in `iterative_steps` equal steps (linear schedule); the
`callback` runs between steps (for example to fine-tune), and data-driven criteria re-measure on
the current model when they ask to (`refresh_each_step`).

Grouped convolutions (ResNeXt) and GroupNorm split a group's channels into equal parts; channels are
then removed at the same positions of every part, so `groups` / `num_groups` stay valid. HF `Conv1D`
(GPT-2) prunes as a Linear; LSTM/GRU/RNN inputs go with the layer feeding them and their hidden units are a
group of their own (`layer_pruners.py`). `nn.MultiheadAttention` ties its heads to the stream it reads and adds
back to (head_dim x num_heads == embed_dim), so that stream is pruned in whole heads: blocks of head_dim
channels, `num_heads` lowered, `head_dim` kept (`head_ratio` applies).
Layers never pruned: those whose output channels are the model's outputs (the classifier), embedding
widths and the stream a Hugging Face attention reads and adds back to (a transformer's hidden size; heads go whole
through `cleanai.pruning.attention`), recurrent layers with a projection (`proj_size`) and fused
projections split into parts (GPT-2's `c_attn`); `ignored_layers` adds more. `residual="keep"` also leaves whole every
group whose channels pass through a residual addition (a ResNet's residual stream), so only the
channels inside the blocks are removed. The report's `left_as_is` lists every layer holding parameters
that no pruned group changes, with why, and a warning names those CleanAI has no rule for. Option-A
`PadShortcut`s are first rewritten into `ChannelSelect` modules so DepGraph couples their channels
(see `cleanai.pruning.shortcuts`).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import inspect
import io
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from cleanai._hf import HFConv1D, conv1d_to_linear, conv1d_types, no_kv_cache
from cleanai._finite import check_finite
from cleanai._validate import check_model_input
from cleanai.errors import CleanAIError, DataError
from cleanai._batches import Batch, call_model, logits_of, model_device, split_batch, take_batches, to_device
from cleanai.pruning.attention import AttentionAdapter, find_attention, linear_to_conv1d, remove_heads
from cleanai.pruning.batchnorm import recalibrate_batchnorm
from cleanai.pruning.config import PruneConfig
from cleanai.pruning.criteria import CRITERIA, create_criterion, requirements
from cleanai.pruning.serialization import build_manifest
from cleanai.pruning.report import LayerChange, LeftLayer, PruneReport, StepRecord
from cleanai.pruning.layer_pruners import customized_pruners, hidden_width_prunable, map_channels_last_flatten
from cleanai.pruning.shortcuts import ChannelSelect, rewrite_pad_shortcuts

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, HFConv1D, nn.RNNBase)
# Modules whose input channels make them a consumer of a group (so the group is not the model's output).
_CONSUMERS = (nn.modules.conv._ConvNd, nn.Linear, HFConv1D, nn.RNNBase, nn.MultiheadAttention, ChannelSelect)

StepCallback = Callable[[int, nn.Module, PruneReport], None]


@dataclass
class _Unit:
    """One prunable group: the channels of a root layer, or the heads of one attention module."""

    name: str
    root: nn.Module
    fn: Callable[..., Any]
    initial: int
    ratio: float
    local: bool
    min_keep: int
    head_dim: int = 0  # > 0 for attention heads
    attention: nn.Module | None = None
    adapter: AttentionAdapter | None = None
    ch_groups: int = 1  # > 1: grouped convolutions / GroupNorm split the channels; a unit is then one channel slot
    touched: set[str] = field(default_factory=set)

    @property
    def rounded(self) -> bool:
        """Whether `round_to` applies: plain channels (heads and grouped slots are whole units already)."""
        return not self.head_dim and self.ch_groups == 1


def _matching_ratio(name: str, ratio_dict: dict[str, float]) -> float | None:
    """The ratio of the most specific `ratio_dict` key naming `name` or one of its parents."""
    keys = [k for k in ratio_dict if name == k or name.startswith(k + ".") or k == ""]
    return ratio_dict[max(keys, key=len)] if keys else None


def _is_residual_add(node: Any) -> bool:
    """True for the dependency graph's node of a tensor addition (`x + shortcut`), as traced by Torch-Pruning."""
    return isinstance(node, tp.ops._ElementWiseOp) and str(node._grad_fn).startswith("AddBackward")


def _floor(x: float) -> int:
    return math.floor(x + 1e-9)


class StructuredPruner:
    """Prunes `model` in place, step by step; `prune()` is the usual entry point (it copies first)."""

    def __init__(self, model: nn.Module, example_inputs: Any, config: PruneConfig,
                 calib: Iterable[Batch] | None = None, criterion: tp.importance.Importance | None = None) -> None:
        self.model, self.config = model, config
        self.modules = dict(model.named_modules())
        self.names = {m: n for n, m in self.modules.items()}
        self.example_inputs = to_device(example_inputs, model_device(model))
        self.criterion_name = config.criterion if criterion is None else type(criterion).__name__
        self.criterion = criterion if criterion is not None else self._make_criterion()
        self.needs = requirements(self.criterion)
        who = (f"criterion {self.criterion_name!r}" if self.needs.data
               else "recalibrate_bn=True" if config.recalibrate_bn else None)
        self.calib = [] if who is None else take_batches(calib, config.calib_batches, who)
        self.warnings: list[str] = []
        self.skipped: dict[str, str] = {}
        self.capped: list[str] = []
        self.rewritten = rewrite_pad_shortcuts(model)
        self.conv1d = conv1d_to_linear(model)  # HF Conv1D (GPT-2) becomes a Linear while pruning, back after
        if self.rewritten or self.conv1d:
            self.modules = dict(model.named_modules())
            self.names = {m: n for n, m in self.modules.items()}
        ignored = self._resolve_names(config.ignored_layers, "ignored_layers")
        self._resolve_names(list(config.ratio_dict), "ratio_dict")
        self._resolve_names(list(config.num_heads), "num_heads")
        self.attention = list(find_attention(model, config.num_heads))
        # Heads are removed whole by their adapter; the stream an attention reads and adds its output back to
        # (the hidden size: q/k/v inputs and the output projection's outputs in one group) is kept.
        self.attention_streams = [({linear for linear, _ in parts.segments}, parts.out)
                                  for parts in (adapter.parts(att) for _, att, adapter in self.attention)]
        self.attention_inputs = {linear for inputs, _ in self.attention_streams for linear in inputs}
        model.eval()
        with torch.no_grad():
            self.reference_shape = tuple(logits_of(call_model(model, self.example_inputs)).shape)
        self.dg = self._build_graph()
        self.units = self._collect_units(ignored)
        self.left_as_is = self._left_as_is(ignored)
        self.widths_before = self._widths()

    # ---- setup -------------------------------------------------------------------------------
    def _make_criterion(self) -> tp.importance.Importance:
        kwargs = dict(self.config.criterion_kwargs)
        factory = CRITERIA.get(self.config.criterion)
        if "seed" in inspect.signature(factory).parameters:
            kwargs.setdefault("seed", self.config.seed)
        return create_criterion(self.config.criterion, **kwargs)

    def _resolve_names(self, names: list[str], what: str) -> list[nn.Module]:
        missing = [n for n in names if n not in self.modules]
        if missing:
            layers = [n for n, m in self.modules.items() if isinstance(m, ROOT_TYPES)]
            hints = {n: difflib.get_close_matches(n, list(self.modules), n=1) for n in missing}
            hint = "; ".join(f"{n!r} -> did you mean {h[0]!r}?" for n, h in hints.items() if h)
            shown = ", ".join(layers[:40]) + (f", ... ({len(layers) - 40} more)" if len(layers) > 40 else "")
            raise CleanAIError(f"{what} names module(s) {missing} that {type(self.model).__name__} does not have."
                               f"{' ' + hint if hint else ''} Valid layer names: {shown} (any parent module "
                               "name, such as a stage or block, works too)")
        return [self.modules[n] for n in names]

    def _build_graph(self) -> tp.DependencyGraph:
        with warnings.catch_warnings(record=True) as caught, torch.enable_grad(), no_kv_cache(self.model):
            warnings.simplefilter("always")
            try:
                dg = tp.DependencyGraph().build_dependency(
                    self.model, example_inputs=self.example_inputs, output_transform=logits_of,
                    customized_pruners=customized_pruners(self.model), verbose=True)
            except Exception as exc:  # noqa: BLE001 - any tracing failure is reported the same way
                raise CleanAIError(
                    f"Torch-Pruning could not build the dependency graph of {type(self.model).__name__}: "
                    f"{type(exc).__name__}: {exc}. If one layer causes this, leave it out with ignored_layers=[...]"
                ) from exc
        self.warnings += [f"dependency graph: {w.message}" for w in caught if "Unknown operation" in str(w.message)]
        map_channels_last_flatten(dg)
        return dg

    def _collect_units(self, ignored: list[nn.Module]) -> list[_Unit]:
        cfg = self.config
        blocked: list[nn.Module] = [sub for m in ignored for sub in m.modules()]
        attention = [(n, att, adapter) for n, att, adapter in self.attention if not any(
            m in blocked for m in (att, *(linear for linear, _ in adapter.parts(att).segments)))]
        blocked += [m for m in self.model.modules() if isinstance(m, nn.Embedding)]
        blocked += list(self.attention_inputs)
        units = []
        head_ratio = cfg.ratio if cfg.head_ratio is None else cfg.head_ratio
        for group in self._all_groups(blocked):
            root = group[0].dep.target.module
            name = self.names[root]
            width = self.dg.get_out_channels(root)
            ch_groups, reason = self._channel_groups(group, width)
            head_dim, heads_reason = self._head_blocks(group, ch_groups)
            reason = self._unprunable(group) or reason or heads_reason
            if reason:
                self.skipped[name] = reason
                continue
            units.append(self._unit(name, root, group[0].dep.handler, width // (ch_groups * (head_dim or 1)),
                                    head_ratio if head_dim else cfg.ratio, ch_groups=ch_groups, head_dim=head_dim))
        for name, att, adapter in attention:
            parts = adapter.parts(att)
            units.append(self._unit(name, parts.out, tp.prune_linear_in_channels, parts.heads, head_ratio,
                                    head_dim=parts.head_dim, attention=att, adapter=adapter))
        return units

    def _all_groups(self, blocked: list[nn.Module]) -> Iterator[Any]:
        """Torch-Pruning's `get_all_groups` (each root layer's output-channel group, once), except that a root whose
        group DepGraph cannot trace (it loses the channels inside a recurrent layer's unrolled gates) is recorded in
        `skipped` with the error instead of aborting."""
        visited: set[nn.Module] = set()
        blocked = blocked + list(self.dg.IGNORED_LAYERS_IN_TRACING)
        for module in list(self.dg.module2node):
            pruner = self.dg.get_pruner_of_module(module)
            if (module in blocked or module in visited or not isinstance(module, ROOT_TYPES) or pruner is None
                    or pruner.get_out_channels(module) is None):
                continue
            try:
                group = self.dg.get_pruning_group(module, pruner.prune_out_channels,
                                                  list(range(pruner.get_out_channels(module))))
            except Exception as exc:  # noqa: BLE001 - reported with the layer's name, the rest is still pruned
                self.skipped[self.names[module]] = (f"Torch-Pruning cannot trace where its channels go "
                                                    f"({type(exc).__name__}: {exc})")
                continue
            outs = [item.dep.target.module for item in group if self.dg.is_out_channel_pruning_fn(item.dep.handler)]
            visited.update(outs)
            if not any(m in blocked for m in outs):
                yield group

    @functools.cached_property
    def _owners(self) -> dict[int, nn.Module]:
        """id of each parameter -> the module holding it."""
        return {id(p): m for m in self.modules.values() for p in m.parameters(recurse=False)}

    def _members(self, root: nn.Module) -> list[nn.Module]:
        """The modules whose tensors change when output channels of `root` go (its dependency group; a free
        `nn.Parameter` in it, such as a layer scale or position embedding, counts as its module)."""
        try:
            group = self.dg.get_pruning_group(root, self.dg.get_pruner_of_module(root).prune_out_channels, [0])
        except Exception:  # noqa: BLE001 - a layer DepGraph cannot prune alone is its own only member
            return [root]
        members = [self._owners.get(id(t)) if isinstance(t, nn.Parameter) else t  # a free Parameter: its module
                   for t in (item.dep.target.module for item in group)]
        members += [m.out_proj for m in members if isinstance(m, nn.MultiheadAttention)]  # pruned with it
        return [m for m in members if m in self.names]

    def _left_as_is(self, ignored: list[nn.Module]) -> list[LeftLayer]:
        """Every module holding parameters that no pruned group changes, with why; warns about those CleanAI has
        no rule for (their parameters are in no group), so no layer type is skipped in silence."""
        why: dict[nn.Module, str] = {}
        for unit in self.units:  # heads change their q/k/v and output projections, not the out-projection's group
            parts = unit.adapter.parts(unit.attention) if unit.adapter is not None else None
            changed = [linear for linear, _ in parts.segments] + [parts.out] if parts else self._members(unit.root)
            why.update(dict.fromkeys(changed, ""))
        owner: dict[int, str] = {}
        for name, module in self.modules.items():
            for param in module.parameters(recurse=False):
                if id(param) in owner and module not in why:
                    why[module] = f"tied to {owner[id(param)]!r} (they share a weight)"
                owner.setdefault(id(param), name)
        for name, reason in self.skipped.items():
            for member in self._members(self.modules[name]):
                why.setdefault(member, f"in the group of {name!r}, left whole: {reason}")
        for sub in dict.fromkeys(sub for module in ignored for sub in module.modules() if isinstance(sub, ROOT_TYPES)):
            why.setdefault(sub, "in ignored_layers")
            for member in self._members(sub):
                why.setdefault(member, f"in the group of {self.names[sub]!r}, which is in ignored_layers")
        why.update({sub: "in ignored_layers" for module in ignored for sub in module.modules() if sub not in why})
        for module in self.modules.values():
            if isinstance(module, nn.RNNBase) and not hidden_width_prunable(module) and module not in why:
                why[module] = f"{type(module).__name__} with proj_size: its hidden width is not pruned"
        for module in self.modules.values():
            if isinstance(module, nn.Embedding) and module not in why:
                why[module] = "embedding width (a transformer's hidden size) is kept"
                for member in self._members(module):
                    why.setdefault(member, f"coupled to the width of embedding {self.names[module]!r}, which is kept")
        left, unknown = [], []
        for name, module in self.modules.items():
            if not any(True for _ in module.parameters(recurse=False)) or why.get(module, None) == "":
                continue
            reason = why.get(module) or "CleanAI has no pruning rule for this layer type: no group covers it"
            left.append(LeftLayer(name=name, type=type(module).__name__, reason=reason))
            if module not in why:
                unknown.append(f"{name or type(module).__name__} ({type(module).__name__})")
        if unknown:
            message = (f"no pruning group covers the parameters of {', '.join(unknown[:10])}"
                       f"{f' and {len(unknown) - 10} more' if len(unknown) > 10 else ''}: left as they are")
            self.warnings.append(message)
            warnings.warn(message, stacklevel=5)
        return left

    def _unit(self, name: str, root: nn.Module, fn: Callable[..., Any], initial: int, ratio: float,
              head_dim: int = 0, attention: nn.Module | None = None, adapter: AttentionAdapter | None = None,
              ch_groups: int = 1) -> _Unit:
        cfg = self.config
        specific = _matching_ratio(name, cfg.ratio_dict)
        multiple = 1 if head_dim or ch_groups > 1 else (cfg.round_to or 1)
        min_keep = max(1, math.ceil(initial * (1 - cfg.max_layer_ratio) - 1e-9))
        min_keep = math.ceil(min_keep / multiple) * multiple
        return _Unit(name=name, root=root, fn=fn, initial=initial, ratio=ratio if specific is None else specific,
                     local=cfg.scope == "local" or specific is not None, min_keep=min(initial, min_keep),
                     head_dim=head_dim, attention=attention, adapter=adapter, ch_groups=ch_groups)

    def _unprunable(self, group: Any) -> str | None:
        consumers = [item for item in group if self.dg.is_in_channel_pruning_fn(item.dep.handler)
                     and isinstance(item.dep.target.module, _CONSUMERS)]
        if not consumers:
            return "output layer: its channels are the model's outputs"
        if self.config.residual == "keep" and any(_is_residual_add(item.dep.target.module) for item in group):
            return "residual stream (residual='keep'): its channels pass through a residual addition"
        reads = {item.dep.target.module for item in group if self.dg.is_in_channel_pruning_fn(item.dep.handler)}
        writes = {item.dep.target.module for item in group if self.dg.is_out_channel_pruning_fn(item.dep.handler)}
        for inputs, out in self.attention_streams:
            if out in writes and inputs & reads:
                return (f"hidden size: the stream attention projection {self.names.get(out, '?')} adds back into "
                        "(the hidden size is kept; heads are pruned whole)")
        for item in group:
            m = item.dep.target.module
            if isinstance(m, nn.MultiheadAttention) and not m._qkv_same_embed_dim:
                return (f"embedding width of nn.MultiheadAttention {self.names.get(m, '?')} with its own kdim/vdim "
                        f"({m.kdim}/{m.vdim}): its key and value widths would have to shrink with its heads")
        recurrent = next((item.dep.target.module for item in group if isinstance(item.dep.target.module, nn.RNNBase)
                          and self.dg.is_out_channel_pruning_fn(item.dep.handler)
                          and not hidden_width_prunable(item.dep.target.module)), None)
        if recurrent is not None:
            return (f"coupled with the hidden width of {self.names.get(recurrent, '?')!r}, which has a projection "
                    "(proj_size) and is not pruned")
        if isinstance(group[0].dep.target.module, (nn.Linear, HFConv1D)) and any(
                isinstance(item.dep.target.module, tp.ops._SplitOp) for item in group):
            return ("fused projection: its outputs are split into parts (such as GPT-2's c_attn into query, key "
                    "and value), so features can only go as whole attention heads")
        return None

    def _channel_groups(self, group: Any, width: int) -> tuple[int, str | None]:
        """Into how many equal parts grouped convolutions and GroupNorms of `group` split its `width` channels
        (the lcm of their groups; depthwise convolutions excepted), and why the group cannot be pruned if so.

        Channels are then removed at the same positions of every part (Torch-Pruning's channel grouping), so
        each conv group and each GroupNorm group keeps an equal share and `groups` / `num_groups` stay valid.
        """
        splits = {}
        for item in group:
            m = item.dep.target.module
            if isinstance(m, nn.RNNBase) and m.bidirectional and self.dg.is_out_channel_pruning_fn(item.dep.handler):
                splits[self.names.get(m, "?")] = ("directions", 2)  # output [forward | backward]: the same units
            elif isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.out_channels:
                splits[self.names.get(m, "?")] = ("groups", m.groups)
            elif isinstance(m, nn.GroupNorm) and m.num_groups > 1:
                splits[self.names.get(m, "?")] = ("num_groups", m.num_groups)
        ch_groups = math.lcm(1, *(n for _, n in splits.values()))
        if ch_groups == 1:
            return 1, None
        if width % ch_groups or width == ch_groups:
            what = ", ".join(f"{n} ({a}={g})" for n, (a, g) in splits.items())
            return 1, (f"{width} channels split by {what} leave no whole channel slot to remove while keeping "
                       f"every group equal")
        return ch_groups, None

    def _head_blocks(self, group: Any, ch_groups: int) -> tuple[int, str | None]:
        """The head size when `group` is the stream of `nn.MultiheadAttention`s (its channels then go in whole
        heads: contiguous blocks of head_dim), else 0; and why the group cannot be pruned, if so."""
        attentions = {m for m in (item.dep.target.module for item in group) if isinstance(m, nn.MultiheadAttention)}
        sizes = {m.head_dim for m in attentions}
        if len(sizes) > 1 or (sizes and ch_groups > 1):
            names = ", ".join(f"{self.names.get(m, '?')} (head_dim {m.head_dim})" for m in attentions)
            return 0, (f"the stream of {names}{' with grouped layers' if ch_groups > 1 else ''}: no removal keeps "
                       "every head whole")
        return (sizes.pop() if sizes else 0), None

    # ---- one step ----------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, int]:
        """Satisfy the criterion's requirements, then remove what step `step` of `iterative_steps` asks for."""
        if self.needs.gradients:
            self._fill_gradients()
        prepare = getattr(self.criterion, "prepare", None)
        if prepare is not None and (step == 1 or getattr(self.criterion, "refresh_each_step", False)):
            prepare(self.model, self.calib)
        try:
            removed = self._apply(step, self._select(step))
        finally:
            if self.needs.gradients:
                self.model.zero_grad(set_to_none=True)  # the returned model carries no gradients
        self._check_forward(step, removed)
        if self.config.recalibrate_bn:
            recalibrate_batchnorm(self.model, self.calib)
        return removed

    def _fill_gradients(self) -> None:
        """`.grad` of every weight: cross-entropy summed over the calibration batches, in eval mode (BatchNorm
        statistics untouched), for criteria that read gradients (Torch-Pruning's GroupTaylorImportance)."""
        was_training = self.model.training
        self.model.eval().zero_grad(set_to_none=True)
        device = model_device(self.model)
        try:
            with torch.enable_grad():
                for i, batch in enumerate(self.calib):
                    inputs, targets = split_batch(batch)
                    if targets is None:
                        raise DataError(f"criterion {self.criterion_name!r} needs gradients of a loss: calib batch {i} "
                                        "has no targets; pass (inputs, targets) batches")
                    logits = logits_of(call_model(self.model, to_device(inputs, device)))
                    F.cross_entropy(logits, to_device(targets, device)).backward()
        finally:
            self.model.train(was_training)

    def _scores(self, unit: _Unit, step: int) -> torch.Tensor | None:
        width = unit.root.in_features if unit.adapter is not None else self.dg.get_out_channels(unit.root)
        try:
            scores = self.criterion(self.dg.get_pruning_group(unit.root, unit.fn, list(range(width))))
        except (IndexError, RuntimeError) as exc:  # channel indices beyond a coupled layer's width
            raise self._broken(step, unit.name, f"scoring its group failed with {type(exc).__name__}: {exc}",
                               [unit.name]) from exc
        if scores is None:
            return None
        scores = scores.detach().float().cpu().reshape(-1)
        if scores.numel() != width or not bool(torch.isfinite(scores).all()):
            raise CleanAIError(f"criterion {self.criterion_name!r} returned {scores.numel()} scores (finite: "
                               f"{bool(torch.isfinite(scores).all())}) for group {unit.name!r} of {width} channels; "
                               "a criterion must return one finite score per channel")
        if unit.ch_groups > 1:  # one score per slot: the mean over the slot's channel in every group
            return scores.view(unit.ch_groups, -1).mean(0)
        return scores.view(-1, unit.head_dim).mean(1) if unit.head_dim else scores

    def _target_keep(self, unit: _Unit, step: int) -> int:
        """Channels (heads) unit should keep after `step`: its ratio reached linearly, rounded, capped."""
        keep = _floor(unit.initial * (1 - unit.ratio * step / self.config.iterative_steps))
        if keep <= 0:
            self._note_cap(unit, unit.min_keep)
        return max(self._round(unit, keep), unit.min_keep)

    def _round(self, unit: _Unit, keep: int) -> int:
        """`keep` to the nearest multiple of `round_to` (halves up, at least one multiple, at most the unit's width):
        rounding down would cut a 16-channel layer to 8 at any ratio."""
        multiple = self.config.round_to
        if not (unit.rounded and multiple):
            return keep
        return min(unit.initial, max(multiple, multiple * math.floor(keep / multiple + 0.5)))

    def _note_cap(self, unit: _Unit, kept: int) -> None:
        if unit.name not in self.capped:
            self.capped.append(unit.name)
            what = "heads" if unit.head_dim else "channels"
            message = (f"the requested ratio would remove every one of the {unit.initial} {what} of {unit.name!r}; "
                       f"capped to keep {kept}")
            self.warnings.append(message)
            warnings.warn(message, stacklevel=7)  # points at the caller of prune()

    def _select(self, step: int) -> list[tuple[_Unit, list[int]]]:
        scored = []
        for unit in self.units:
            scores = self._scores(unit, step)
            if scores is None:
                self.skipped.setdefault(unit.name, "the criterion gives no score for this group")
            else:
                scored.append((unit, scores))
        plan = []
        for unit, scores in scored:
            if unit.local:
                n = len(scores) - self._target_keep(unit, step)
                if n > 0:
                    plan.append((unit, torch.argsort(scores, stable=True)[:n].tolist()))
        for heads in (False, True):
            plan += self._select_global([(u, s) for u, s in scored if not u.local and bool(u.head_dim) == heads], step)
        return plan

    def _select_global(self, pool: list[tuple[_Unit, torch.Tensor]], step: int) -> list[tuple[_Unit, list[int]]]:
        """Remove the lowest normalised scores across all groups of `pool`, never below each group's minimum."""
        if not pool:
            return []
        ratio = pool[0][0].ratio * step / self.config.iterative_steps
        n = sum(len(s) for _, s in pool) - _floor(sum(u.initial for u, _ in pool) * (1 - ratio))
        if n <= 0:
            return []
        owner = torch.cat([torch.full((len(s),), i) for i, (_, s) in enumerate(pool)])
        order = owner[torch.argsort(torch.cat([s for _, s in pool]), stable=True)].tolist()
        wanted = torch.bincount(torch.tensor(order[:n]), minlength=len(pool)).tolist()
        allowance = [len(s) - u.min_keep for u, s in pool]
        taken = [0] * len(pool)
        for i in order:
            if n == 0:
                break
            if taken[i] < allowance[i]:
                taken[i] += 1
                n -= 1
        plan = []
        for i, (unit, scores) in enumerate(pool):
            keep = len(scores) - taken[i]
            if wanted[i] >= len(scores):
                self._note_cap(unit, keep)
            keep = max(self._round(unit, keep), unit.min_keep)
            if len(scores) > keep:
                plan.append((unit, torch.argsort(scores, stable=True)[:len(scores) - keep].tolist()))
        return plan

    def _apply(self, step: int, plan: list[tuple[_Unit, list[int]]]) -> dict[str, int]:
        """Channels through DepGraph first, then whole heads through their adapters (the graph is rebuilt after)."""
        removed = {}
        plan = sorted(plan, key=lambda p: p[0].adapter is not None)
        on_pruned = getattr(self.criterion, "on_pruned", None)
        for unit, idxs in plan:
            channels = self._channels(unit, idxs)
            try:
                group = self.dg.get_pruning_group(unit.root, unit.fn, channels)
                unit.touched = {self.names[item.dep.target.module] for item in group
                                if isinstance(item.dep.target.module, nn.Module)
                                and item.dep.target.module in self.names}
                if on_pruned is not None:
                    on_pruned(group)
                if unit.adapter is not None:
                    remove_heads(unit.attention, unit.adapter, idxs)
                else:
                    group.prune()
            except Exception as exc:  # noqa: BLE001 - a failed surgery is reported with what to ignore
                raise self._broken(step, unit.name, f"removing its channels failed with {type(exc).__name__}: "
                                   f"{exc}", [unit.name]) from exc
            removed[unit.name] = len(idxs) if unit.head_dim else len(channels)
        if any(unit.adapter is not None for unit, _ in plan):  # the graph recorded the old split sizes and shapes
            self.dg = self._build_graph()
        return removed

    def _channels(self, unit: _Unit, idxs: list[int]) -> list[int]:
        """The channel indices of the heads or channel slots `idxs` of `unit`."""
        if unit.head_dim:
            return [h * unit.head_dim + k for h in idxs for k in range(unit.head_dim)]
        if unit.ch_groups > 1:
            slot = self.dg.get_out_channels(unit.root) // unit.ch_groups
            return sorted(g * slot + j for g in range(unit.ch_groups) for j in idxs)
        return idxs

    def _check_forward(self, step: int, removed: dict[str, int]) -> None:
        """Run the pruned model; raise a CleanAIError naming the step, the failing layer and what to ignore."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                shape = tuple(logits_of(call_model(self.model, self.example_inputs)).shape)
            problem = None if shape == self.reference_shape else f"output shape {shape} != {self.reference_shape}"
            where = "" if problem is None else "(the model output)"
        except Exception as exc:  # noqa: BLE001 - any failure means the surgery broke the model
            problem, where = f"{type(exc).__name__}: {exc}", self._failing_module()
        finally:
            self.model.train(was_training)
        if problem is None:
            return
        inside = [u.name for u in self.units if u.name in removed
                  and any(t == where or t.startswith(where + ".") or not where for t in u.touched)]
        raise self._broken(step, where or type(self.model).__name__, f"the pruned model fails at forward: {problem}",
                           inside or list(removed))

    def _broken(self, step: int, layer: str, problem: str, suspects: list[str]) -> CleanAIError:
        untouched = ("the caller's model is unchanged" if not self.config.inplace
                     else "the model passed with inplace=True was modified")
        return CleanAIError(
            f"pruning step {step}/{self.config.iterative_steps} broke the model at layer {layer!r}: {problem}. "
            f"Torch-Pruning's dependency graph does not handle the channel coupling there; leave it unpruned "
            f"with ignored_layers={suspects[:5]} ({untouched})")

    def _failing_module(self) -> str:
        """Name of the innermost module whose forward raised."""
        stack: list[str] = []

        def enter(name: str) -> Callable[..., None]:
            return lambda module, args: stack.append(name)  # list.append returns None: output untouched

        def leave(module: nn.Module, args: Any, output: Any) -> None:
            stack.pop()

        handles = []
        for name, module in self.modules.items():
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
        try:
            with torch.no_grad():
                call_model(self.model, self.example_inputs)
        except Exception:  # noqa: BLE001 - the failure is what we are locating
            return stack[-1] if stack else ""
        finally:
            for handle in handles:
                handle.remove()
        return ""

    # ---- bookkeeping -------------------------------------------------------------------------
    def count(self) -> tuple[int, int]:
        """(MACs, params) of the model on the example inputs (Torch-Pruning's op counter)."""
        counter = tp.utils.op_counter  # HF Conv1D counted as the Linear it is (the mapping is reset after each count)
        counter.CUSTOM_MODULES_MAPPING = dict.fromkeys(conv1d_types(self.model), counter.linear_flops_counter_hook)
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # it prints batch-size guesses
            macs, params = tp.utils.count_ops_and_params(self.model, self.example_inputs)
        return int(macs), int(params)

    def _widths(self) -> dict[str, tuple[str, str, int]]:
        widths = {}
        for name, m in self.model.named_modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                widths[name] = (type(m).__name__, "channels", m.out_channels)
            elif isinstance(m, nn.Linear):
                widths[name] = ("Linear", "features", m.out_features)
            elif isinstance(m, HFConv1D):
                widths[name] = (type(m).__name__, "features", m.nf)
            elif isinstance(m, nn.RNNBase):
                widths[name] = (type(m).__name__, "hidden units", m.hidden_size)
            elif isinstance(m, nn.MultiheadAttention):
                widths[name] = (type(m).__name__, "heads", m.num_heads)
        for unit in self.units:
            if unit.adapter is not None:
                widths[unit.name] = (type(unit.attention).__name__, "heads", unit.adapter.parts(unit.attention).heads)
        return widths

    def report(self, before: tuple[int, int], after: tuple[int, int], steps: list[StepRecord]) -> PruneReport:
        widths = self._widths()
        layers = [LayerChange(name=n, type=t, unit=u, before=w, after=widths[n][2])
                  for n, (t, u, w) in self.widths_before.items() if n in widths]
        return PruneReport(
            criterion=self.criterion_name, config=self.config.model_dump(mode="json"),
            macs_before=before[0], params_before=before[1], macs_after=after[0], params_after=after[1],
            layers=layers, steps=steps, rewritten_modules=self.rewritten, skipped_groups=dict(self.skipped),
            left_as_is=list(self.left_as_is),
            capped_layers=list(self.capped), warnings=list(self.warnings))

    def annotate_configs(self) -> None:
        """Record changed widths in each Hugging Face config (`cleanai_pruned_widths`), which saves with it."""
        widths, seen = self._widths(), set()
        for owner_name, owner in self.modules.items():
            cfg = getattr(owner, "config", None)
            if not hasattr(owner, "base_model_prefix") or not hasattr(cfg, "to_dict") or id(cfg) in seen:
                continue
            seen.add(id(cfg))
            prefix = f"{owner_name}." if owner_name else ""
            cfg.cleanai_pruned_widths = {n[len(prefix):]: w[2] for n, w in widths.items() if n.startswith(prefix)
                                         and self.widths_before.get(n, w)[2] != w[2]}
            cfg.cleanai_manifest = build_manifest(owner)  # the layout load_pretrained_pruned rebuilds

    def run(self, callback: StepCallback | None = None) -> PruneReport:
        """All iterative steps; `callback(step, model, report_so_far)` runs after each checked step."""
        before = self.count()
        steps: list[StepRecord] = []
        report = self.report(before, before, steps)
        for step in range(1, self.config.iterative_steps + 1):
            start = time.perf_counter()
            removed = self.step(step)
            seconds = time.perf_counter() - start
            after = self.count()
            steps.append(StepRecord(step=step, macs=after[0], params=after[1], seconds=seconds, removed=removed))
            report = self.report(before, after, steps)
            if callback is not None:
                callback(step, self.model, report)
        linear_to_conv1d(self.model, self.conv1d)
        self.annotate_configs()
        return report


def prune(model: nn.Module, example_inputs: Any, config: PruneConfig | dict[str, Any] | None = None,
          calib: Iterable[Batch] | None = None, *, criterion: tp.importance.Importance | None = None,
          callback: StepCallback | None = None) -> tuple[nn.Module, PruneReport]:
    """Structurally prune `model`; return the pruned model (a copy unless `config.inplace`) and a report.

    `example_inputs` is what the model is called with (Tensor, tuple, or dict of Tensors);
    `calib` yields `(inputs, targets)` batches for data-driven criteria; `criterion` overrides
    `config.criterion` with any Torch-Pruning `Importance` object, whose requirements (`requirements()`:
    calibration data, gradients) are met here or refused with a CleanAIError; `callback(step, model, report)`
    runs between iterative steps (it may train the weights, not change the architecture).
    """
    check_model_input(model, example_inputs, where="prune")
    config = PruneConfig.model_validate(config or {}) if not isinstance(config, PruneConfig) else config
    check_finite(model, f"the weights of {type(model).__name__}", CleanAIError, "pruning would rank channels by them")
    was_training = model.training
    work = model if config.inplace else copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        pruner = StructuredPruner(work, example_inputs, config, calib, criterion)
        report = pruner.run(callback)
    work.train(was_training)
    return work, report


def prunable_groups(model: nn.Module, example_inputs: Any, config: PruneConfig | None = None) -> dict[str, int]:
    """The groups `prune()` would rank, by name (root layer or attention module) -> channels (or heads).

    These are the names to use in `ratio_dict` for per-group ratios (for example in a sensitivity scan);
    `config` supplies `ignored_layers`. The model is not modified.
    """
    config = config or PruneConfig()
    config = config.model_copy(update={"criterion": "magnitude"})  # no calibration needed to list groups
    pruner = StructuredPruner(copy.deepcopy(model), example_inputs, config)
    return {unit.name: unit.initial for unit in pruner.units}

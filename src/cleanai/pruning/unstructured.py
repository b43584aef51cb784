"""Unstructured pruning: zero individual weights by magnitude, at once or on a schedule during training.

- `prune_unstructured(model, UnstructuredConfig(sparsity=0.8, scope="global"))` zeroes the smallest-magnitude
  weights of every Linear/Conv layer (HF `Conv1D`, LSTM/GRU/RNN `weight_ih`/`weight_hh`, the in-projection of
  `nn.MultiheadAttention` included) at once and returns the model (a copy unless `inplace=True`) and a
  `SparsityReport`.
- `SparsityScheduler(model, config)` is a Trainer `Callback` that raises the sparsity during training on the
  config's `schedule`: `ConstantSparsity` or TF-MOT's `PolynomialDecay`. Masks are recomputed from the weight
  magnitudes on the schedule's steps, and after every optimizer step the masked weights are set back to zero.
- `make_permanent` folds masks into plain weights; `sparsity_report` counts the zeros. Schedules live in
  `cleanai.pruning.schedules`, the sparse file format (`save_sparse`, `load_sparse`) in `cleanai.pruning.sparse_format`.

The scheduler keeps its masks itself: the model keeps plain `weight` parameters whose pruned entries are zero,
so forward and backward run at full speed (no re-parametrisation hook), the state dict keeps its names, and the
only cost is one in-place multiply per layer after each optimizer step. `scope="local"` prunes each layer to the
sparsity (TF-MOT's behaviour); `scope="global"` ranks all selected weights together (one magnitude threshold),
which prunes layers with small weights harder and at high sparsity can empty a small layer such as a classifier
head (list it in `ignored_layers`).
A layer keeps `round(n * (1 - sparsity))` of its `n` weights, TF-MOT's rounding, so sparsities are exact.
A weight shared by several layers (tied embeddings) is pruned once, by the first layer owning it; the report's
`left_as_is` lists every layer holding a weight matrix that was not sparsified, and why.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from cleanai._hf import HFConv1D
from cleanai.errors import CleanAIError, ConfigError, UnknownNameError
from cleanai.pruning.report import LeftLayer
from cleanai.pruning.schedules import ConstantSparsity, Schedule, check_sparsity
from cleanai.registry import Registry
from cleanai.training.callbacks import Callback

LAYER_TYPES: Registry[type[nn.Module]] = Registry("unstructured layer type")
for _name, _cls in (("linear", nn.Linear), ("conv1d", nn.Conv1d), ("conv2d", nn.Conv2d), ("conv3d", nn.Conv3d),
                    ("hf_conv1d", HFConv1D), ("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN),
                    ("multihead_attention", nn.MultiheadAttention), ("embedding", nn.Embedding)):
    LAYER_TYPES.register(_name, _cls)
_DEFAULT_TYPES = ["linear", "conv1d", "conv2d", "conv3d", "hf_conv1d", "lstm", "gru", "rnn", "multihead_attention"]


def list_layer_types() -> list[str]:
    """Names accepted in `UnstructuredConfig.module_types` (register more with `LAYER_TYPES.register`)."""
    return LAYER_TYPES.names()


class UnstructuredConfig(BaseModel):
    """Magnitude pruning settings. `sparsity` is the target fraction of zero weights; `prune_unstructured` applies
    it at once, `SparsityScheduler` reaches it on `schedule`. `module_types` are `list_layer_types()` names;
    `ignored_layers` names modules (a container excludes every layer inside it)."""

    model_config = ConfigDict(extra="forbid")

    sparsity: float = 0.5
    scope: Literal["local", "global"] = "local"
    module_types: list[str] = Field(default_factory=lambda: list(_DEFAULT_TYPES))
    ignored_layers: list[str] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=ConstantSparsity)
    inplace: bool = False

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, value: float) -> float:
        return check_sparsity(value)

    @field_validator("module_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ConfigError(f"module_types must name at least one of: {', '.join(list_layer_types())}")
        for name in value:
            LAYER_TYPES.get(name)
        return value


# ---------------------------------------------------------------------------------------------- masks


def layer_weights(module: nn.Module) -> dict[str, str]:
    """Key suffix -> attribute of the weight matrices of `module` that magnitude pruning sparsifies: `weight`
    (key suffix ""), an RNN's `weight_ih_l*` / `weight_hh_l*`, `nn.MultiheadAttention`'s in-projection(s)."""
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        wanted = "weight_" if isinstance(module, nn.RNNBase) else "proj_weight"
        return {f".{n}": n for n, p in module.named_parameters(recurse=False)
                if (n.startswith(wanted) if wanted == "weight_" else n.endswith(wanted)) and p is not None}
    return {"": "weight"} if isinstance(getattr(module, "weight", None), torch.Tensor) else {}


def prunable_weights(model: nn.Module, module_types: Sequence[str], ignored_layers: Sequence[str] = ()
                     ) -> tuple[dict[str, tuple[nn.Module, str]], list[LeftLayer]]:
    """The weight tensors magnitude pruning sparsifies, as key -> (module, attribute) (key: the layer's name, plus
    `.<attribute>` for an RNN's or attention's weights), and every other layer holding a weight matrix with why
    it is left as is (ignored, tied to another layer's weight, not a selected type, or of a type CleanAI has no
    rule for). Only the first layer owning a shared (tied) weight prunes it."""
    types = tuple(LAYER_TYPES.get(name) for name in module_types)
    known = tuple(LAYER_TYPES.get(name) for name in list_layer_types())
    selected = select_layers(model, module_types, ignored_layers, allow_empty=True)
    weights: dict[str, tuple[nn.Module, str]] = {}
    left: list[LeftLayer] = []
    owner: dict[int, str] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        matrices = {n: p for n, p in module.named_parameters(recurse=False) if p.dim() >= 2}
        tied = next((owner[id(p)] for p in matrices.values() if id(p) in owner), None)
        for p in matrices.values():
            owner.setdefault(id(p), name)
        if not matrices:
            continue
        if name in selected and tied is None:
            weights.update({f"{name}{suffix}": (module, attr) for suffix, attr in layer_weights(module).items()})
            continue
        reason = (f"tied to {tied!r} (they share a weight, pruned there if selected)" if tied is not None
                  else "in ignored_layers" if isinstance(module, types)
                  else f"type {kind} not in module_types" if isinstance(module, known)
                  else f"CleanAI has no unstructured pruning rule for a {kind}")
        left.append(LeftLayer(name=name, type=kind, reason=reason))
    return weights, left


def select_layers(model: nn.Module, module_types: Sequence[str], ignored_layers: Sequence[str] = (),
                  exact: bool = False, allow_empty: bool = False) -> dict[str, nn.Module]:
    """name -> module for the layers of `module_types` with weights, minus `ignored_layers` (and their children).

    `exact=True` takes only modules whose type is exactly a listed class (not subclasses); `allow_empty=True`
    returns an empty dict instead of refusing when no layer is left.
    """
    types = tuple(LAYER_TYPES.get(name) for name in module_types)
    found = {name: m for name, m in model.named_modules()
             if (type(m) in types if exact else isinstance(m, types)) and layer_weights(m)}
    modules = dict(model.named_modules())
    for ignored in ignored_layers:
        if ignored not in modules:
            shown = ", ".join(list(found)[:40]) + (f", ... ({len(found) - 40} more)" if len(found) > 40 else "")
            raise UnknownNameError(f"ignored_layers names {ignored!r}, which is not a module of "
                                   f"{type(model).__name__}. Valid names: the prunable layers ({shown}) "
                                   "or any module containing them")
    kept = {name: m for name, m in found.items()
            if not any(name == ig or name.startswith(f"{ig}.") or not ig for ig in ignored_layers)}
    if not kept and not allow_empty:
        raise CleanAIError(f"{type(model).__name__} has no layer of types {module_types} left to prune "
                           f"(found {len(found)}, all ignored); check module_types and ignored_layers")
    return kept


def keep_count(numel: int, sparsity: float) -> int:
    """Weights kept in a tensor of `numel` weights at `sparsity`: round(numel * (1 - sparsity)), as TF-MOT."""
    return round(numel * (1.0 - sparsity))


def top_k_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask (shape of `scores`) of exactly `keep` entries with the highest scores (ties broken by position)."""
    flat = scores.detach().flatten()
    n = flat.numel()
    drop = n - keep
    if drop <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if keep <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = flat.kthvalue(drop).values
    mask = flat > threshold
    spare = keep - int(mask.sum())  # entries equal to the threshold that are still kept
    if spare > 0:
        ties = (flat == threshold).nonzero().squeeze(1)
        mask[ties[ties.numel() - spare:]] = True
    return mask.view_as(scores)


@torch.no_grad()
def magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float,
                    scope: Literal["local", "global"] = "local") -> dict[str, torch.Tensor]:
    """name -> bool keep-mask pruning the smallest |w|: per tensor (`local`) or over all tensors together (`global`)."""
    check_sparsity(sparsity)
    if scope == "local":
        return {name: top_k_mask(w.abs(), keep_count(w.numel(), sparsity)) for name, w in weights.items()}
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])
    keep = top_k_mask(flat, keep_count(flat.numel(), sparsity))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def prune_unstructured(model: nn.Module, config: UnstructuredConfig | Mapping[str, Any] | None = None
                       ) -> tuple[nn.Module, SparsityReport]:
    """Zero the smallest-magnitude weights to `config.sparsity` at once; return the model (a copy unless
    `config.inplace`) and its `SparsityReport`. The result holds plain zeros (nothing to make permanent)."""
    cfg = config if isinstance(config, UnstructuredConfig) else UnstructuredConfig.model_validate(config or {})
    work = model if cfg.inplace else copy.deepcopy(model)
    select_layers(work, cfg.module_types, cfg.ignored_layers)  # refuses a selection that leaves no layer
    weights = {key: getattr(m, attr) for key, (m, attr) in prunable_weights(work, cfg.module_types,
                                                                           cfg.ignored_layers)[0].items()}
    masks = magnitude_masks(weights, cfg.sparsity, cfg.scope)
    with torch.no_grad():
        for key, weight in weights.items():
            weight.masked_fill_(~masks[key], 0.0)
    report = sparsity_report(work, cfg.module_types, cfg.ignored_layers)
    for message in report.warnings:
        warnings.warn(message, stacklevel=2)
    return work, report


class SparsityScheduler(Callback):
    """Trainer callback (or, in a custom loop, call `update(step)` after each optimizer step) that prunes
    `model` by magnitude on `config.schedule` up to `config.sparsity`, keeping masked weights at zero.

    `updates` lists `(step, sparsity)` for every mask recomputation; `sparsity` is the latest.
    """

    def __init__(self, model: nn.Module, config: UnstructuredConfig | Mapping[str, Any] | None = None) -> None:
        self.config = (config if isinstance(config, UnstructuredConfig)
                       else UnstructuredConfig.model_validate(config or {}))
        self.layers = select_layers(model, self.config.module_types, self.config.ignored_layers)
        self.weights = prunable_weights(model, self.config.module_types, self.config.ignored_layers)[0]
        self.masks: dict[str, torch.Tensor] = {}  # float 0/1 in the weight's dtype: multiplying is the fastest reset
        self.sparsity = 0.0
        self.updates: list[tuple[int, float]] = []
        self._step: int | None = None

    def update(self, step: int) -> bool:
        """After `step` optimizer steps: recompute masks if the schedule says so, then zero masked weights.
        Returns whether the masks were recomputed."""
        schedule = self.config.schedule
        due = schedule.should_update(step)
        if due:
            self.sparsity = schedule.sparsity_at(step, self.config.sparsity)
            weights = {key: self._weight(key) for key in self.weights}
            keep = magnitude_masks(weights, self.sparsity, self.config.scope)
            self.masks = {key: keep[key].to(weight.dtype) for key, weight in weights.items()}
            self.updates.append((step, self.sparsity))
        self.apply_masks()
        self._step = step
        return due

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Set every masked weight to zero (in place)."""
        for name, mask in self.masks.items():
            weight = self._weight(name)
            if mask.device != weight.device:
                mask = self.masks[name] = mask.to(weight.device)
            weight.mul_(mask)

    def _weight(self, key: str) -> torch.Tensor:
        module, attr = self.weights[key]
        return getattr(module, attr)

    def on_train_begin(self, trainer: Any) -> None:
        if trainer.global_step != self._step:  # after a resume, the restored state already covers this step
            self.update(trainer.global_step)

    def on_batch_end(self, trainer: Any, batch: int, loss: float) -> None:
        if trainer.global_step != self._step:  # an optimizer step happened (not so mid-way through accumulation)
            self.update(trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "step": self._step, "updates": [list(u) for u in self.updates],
                "masks": {name: mask.bool().cpu() for name, mask in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sparsity, self._step = state["sparsity"], state["step"]
        self.updates = [(int(s), float(v)) for s, v in state["updates"]]
        self.masks = {name: mask.to(self._weight(name).device, self._weight(name).dtype)
                      for name, mask in state["masks"].items()}


# ---------------------------------------------------------------------------------------------- permanence, report


@runtime_checkable
class MaskedLayer(Protocol):
    """A layer that applies its own mask in forward (such as `MovementLinear`): it reports the weight it really
    uses and turns into a plain layer holding that weight."""

    def masked_weight(self) -> torch.Tensor: ...

    def to_plain(self) -> nn.Module: ...


def masked_layers(model: nn.Module) -> list[str]:
    """Names of modules still carrying a mask: `MaskedLayer`s and torch.nn.utils.prune re-parametrisations."""
    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, MaskedLayer)
            or any(isinstance(h, torch_prune.BasePruningMethod) for h in m._forward_pre_hooks.values())]


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight, in place, leaving plain layers with zeros: `MaskedLayer`s (movement
    pruning) become their plain type and torch.nn.utils.prune masks are removed. Returns the model (a new
    object only when `model` itself is a `MaskedLayer`). Magnitude pruning needs nothing: it leaves plain zeros."""
    if isinstance(model, MaskedLayer):
        return model.to_plain()
    for name, module in list(model.named_modules()):
        if isinstance(module, MaskedLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.to_plain())
            continue
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


class LayerSparsity(BaseModel):
    """Zeros in one layer's weight (the weight its forward really uses)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    shape: list[int]
    params: int
    zeros: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sparsity(self) -> float:
        return self.zeros / self.params if self.params else 0.0


class SparsityReport(BaseModel):
    """Per-layer and global sparsity; JSON via `to_dict()`, a table via `str()`. `params`/`zeros` count the
    reported layers' weights; `model_params`/`model_zeros` every parameter of the model; `left_as_is` the layers
    holding weight matrices that are not counted among `layers`, with why."""

    model_config = ConfigDict(extra="forbid")

    layers: list[LayerSparsity]
    model_params: int
    model_zeros: int
    left_as_is: list[LeftLayer] = []
    warnings: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sparsity(self) -> float:
        """Global sparsity over the reported layers."""
        return self.zeros / self.params if self.params else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def model_sparsity(self) -> float:
        return self.model_zeros / self.model_params if self.model_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def __str__(self) -> str:
        width = max([len("layer"), *(len(layer.name) for layer in self.layers)])
        lines = [f"{'layer':<{width}}  {'type':<16} {'params':>11} {'zeros':>11} {'sparsity':>8}"]
        lines += [f"{layer.name:<{width}}  {layer.type:<16} {layer.params:>11,} {layer.zeros:>11,} "
                  f"{layer.sparsity:>8.1%}" for layer in self.layers]
        lines.append(f"{'global':<{width}}  {'':<16} {self.params:>11,} {self.zeros:>11,} {self.sparsity:>8.1%}")
        lines.append(f"all parameters: {self.model_zeros:,} of {self.model_params:,} are zero "
                     f"({self.model_sparsity:.1%})")
        lines += [f"left as is: {left.name} ({left.type}): {left.reason}" for left in self.left_as_is]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@torch.no_grad()
def sparsity_report(model: nn.Module, module_types: list[str] | None = None,
                    ignored_layers: Sequence[str] = ()) -> SparsityReport:
    """Zeros per weight of the layers of `module_types` (default: every `list_layer_types()` type; RNN and
    attention weights one row each) and over the whole model, the other layers holding weight matrices (`left_as_is`,
    with `ignored_layers` named as such) and a warning naming those of types CleanAI has no rule for; masked layers
    are measured on the weight their forward uses."""
    types = module_types or list_layer_types()
    weights, left = prunable_weights(model, types)[0], prunable_weights(model, types, ignored_layers)[1]
    layers = []
    for key, (module, attr) in weights.items():
        masked = isinstance(module, MaskedLayer) and attr == "weight"
        weight = module.masked_weight() if masked else getattr(module, attr)
        layers.append(LayerSparsity(name=key, type=type(module).__name__, shape=list(weight.shape),
                                    params=weight.numel(), zeros=int((weight == 0).sum())))
    unknown = [f"{item.name or '<model>'} ({item.type})" for item in left if item.reason.startswith("CleanAI has no")]
    notes = [f"no unstructured pruning rule covers the weights of {', '.join(unknown[:10])}"
             f"{f' and {len(unknown) - 10} more' if len(unknown) > 10 else ''}: left dense"] if unknown else []
    params, zeros = 0, 0
    for tensor in _used_parameters(model):
        params += tensor.numel()
        zeros += int((tensor == 0).sum())
    return SparsityReport(layers=layers, model_params=params, model_zeros=zeros, left_as_is=left, warnings=notes)


def _used_parameters(model: nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter once, as the forward uses it: masked for `MaskedLayer` weights and torch.nn.utils.prune
    re-parametrisations (whose `<name>_orig` parameter is replaced by the masked `<name>`)."""
    seen: set[int] = set()
    for module in model.modules():
        pruned = {h._tensor_name for h in module._forward_pre_hooks.values()
                  if isinstance(h, torch_prune.BasePruningMethod)}
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, MaskedLayer) and name == "weight":
                yield module.masked_weight()
            elif name.endswith("_orig") and name[:-5] in pruned:
                yield getattr(module, name[:-5])
            else:
                yield param

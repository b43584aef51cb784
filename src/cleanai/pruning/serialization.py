"""Save and load structurally pruned models without pickle: a widths manifest (JSON) plus safetensors.

A pruned model has the same module tree as the model it came from, only narrower (a text model may also
keep fewer encoder blocks, `keep_layers`: the manifest records how many, and embedding rows behind a
`VocabularyEmbedding`, `prune_vocabulary(remap="model")`). `save_pruned`
records, for every module that holds tensors (and every BERT-style attention module), its type,
its widths (`out_channels`, `in_features`, `num_features`, heads, ...), its fixed geometry
(kernel size, stride, ...) and the shapes of its own parameters and buffers; the weights go to
`model.safetensors`. `load_pruned` builds the ORIGINAL, unpruned model (by registry name or from a
module you pass), turns option-A `PadShortcut`s the manifest lists back into `ChannelSelect`s,
shrinks every layer to the recorded widths and then loads the weights strictly. Tensors of modules
CleanAI has no width rule for (a free `nn.Parameter` such as ConvNeXt's layer scale `gamma` or a
position embedding, MobileBERT's `NoNorm`) are rebuilt at their recorded shapes. `save_pruned` does
that round trip before writing anything, so a folder that cannot be read back is never written.
Nothing is unpickled, and a manifest that does not fit the base model fails with a
`CheckpointError` naming the layer.

    save_pruned(pruned, "runs/pruned", base="resnet20", base_kwargs={"num_classes": 10})
    model = load_pruned("runs/pruned")              # or load_pruned(dir, base=my_unpruned_model)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cleanai._batches import call_model, logits_of
from cleanai._hf import HFConv1D
from cleanai.errors import CheckpointError, ConfigError
from cleanai.io import PathLike, load_weights, save_safetensors, write_json
from cleanai.models import PadShortcut, TextClassifier, VocabularyEmbedding, create_model
from cleanai.pruning.attention import attention_adapter
from cleanai.pruning.shortcuts import ChannelSelect

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "cleanai.pruned"
VERSION = 1

# Attributes that pruning may shrink (recorded, checked to be <= the base model's, then set on load).
_WIDTHS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.modules.conv._ConvNd: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.modules.batchnorm._NormBase: ("num_features",),
    nn.LayerNorm: ("normalized_shape",),
    nn.GroupNorm: ("num_groups", "num_channels"),
    nn.Embedding: ("num_embeddings", "embedding_dim"),
    nn.PReLU: ("num_parameters",),
    nn.RNNBase: ("input_size", "hidden_size"),
    nn.MultiheadAttention: ("embed_dim", "kdim", "vdim", "num_heads"),
    HFConv1D: ("nx", "nf"),
    ChannelSelect: (),
}
# Attributes pruning never changes (recorded and checked to be equal).
_FIXED: dict[type[nn.Module], tuple[str, ...]] = {
    nn.modules.conv._ConvNd: ("kernel_size", "stride", "padding", "dilation"),
    ChannelSelect: ("stride",),
    nn.MultiheadAttention: ("head_dim",),
}
_HEADS = ("num_attention_heads", "all_head_size")  # BERT-style self-attention, shrunk with its heads
_HEAD_FIXED = ("attention_head_size",)


def _is_attention(module: nn.Module) -> bool:
    return all(isinstance(getattr(module, a, None), int) and not isinstance(getattr(module, a), bool)
               for a in (*_HEADS, *_HEAD_FIXED))


def _attrs(module: nn.Module, table: dict[type[nn.Module], tuple[str, ...]]) -> dict[str, Any]:
    names = [a for kind, attrs in table.items() if isinstance(module, kind) for a in attrs]
    return {a: _jsonable(getattr(module, a)) for a in names}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _tensors(module: nn.Module) -> dict[str, list[int] | None]:
    own = {**module._parameters, **module._buffers}
    return {name: None if t is None else list(t.shape) for name, t in own.items()}


def _entry(module: nn.Module) -> dict[str, Any] | None:
    """What the manifest records about one module, or None for modules without tensors or heads."""
    tensors = {k: v for k, v in _tensors(module).items() if v is not None}
    attention = _is_attention(module)
    adapter = None if attention else attention_adapter(module)
    if not tensors and not attention and adapter is None:
        return None
    widths, fixed = _attrs(module, _WIDTHS), _attrs(module, _FIXED)
    if attention:
        widths.update({a: getattr(module, a) for a in _HEADS})
        fixed.update({a: getattr(module, a) for a in _HEAD_FIXED})
    entry: dict[str, Any] = {"type": type(module).__name__}
    if adapter is not None:  # other families' heads: set back through their attention adapter
        entry["heads"] = adapter.parts(module).heads
    if widths:
        entry["widths"] = widths
    if fixed:
        entry["fixed"] = fixed
    if tensors:
        entry["tensors"] = tensors
    return entry


def build_manifest(model: nn.Module, base: str | None = None,
                   base_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The widths manifest of `model` (see the module docstring); `base` names it in the model registry."""
    if base_kwargs and base is None:
        raise ConfigError("base_kwargs given without base: name the registered model they build (base='resnet20')")
    kwargs = dict(base_kwargs or {})
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"base_kwargs must be JSON values (numbers, strings, lists, dicts), got {kwargs!r}: "
                         f"{exc}") from None
    modules: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for name, module in model.named_modules():
        entry = _entry(module)
        if entry is not None:
            modules[name] = entry
        widths = getattr(getattr(module, "config", None), "cleanai_pruned_widths", None)
        if hasattr(module, "base_model_prefix") and isinstance(widths, dict):
            configs[name] = widths
    return {
        "format": FORMAT, "version": VERSION, "torch": torch.__version__,
        "base": None if base is None else {"name": base, "kwargs": kwargs},
        "model_class": type(model).__name__,
        "encoder_layers": model.config.num_hidden_layers if isinstance(model, TextClassifier) else None,
        "shortcuts": [n for n, m in model.named_modules() if isinstance(m, ChannelSelect)],
        "vocabulary": {n: m.padding_idx for n, m in model.named_modules() if isinstance(m, VocabularyEmbedding)},
        "hf_pruned_widths": configs,
        "modules": modules,
        "weights": WEIGHTS_NAME,
    }


def save_pruned(model: nn.Module, directory: PathLike, *, base: str | nn.Module | None = None,
                base_kwargs: Mapping[str, Any] | None = None, example_inputs: Any = None) -> Path:
    """Write `manifest.json` and `model.safetensors` for `model` into `directory` (each file atomically).

    `base` / `base_kwargs` name the unpruned model (`create_model(base, **base_kwargs)`) so that
    `load_pruned(directory)` needs nothing else; `base` may also be the unpruned module itself (then
    pass it to `load_pruned` too). Before anything is written, the model is rebuilt as `load_pruned`
    will rebuild it (from `base`, else from a copy of `model`), its weights are loaded and compared,
    and, with `example_inputs`, its outputs are compared with `model`'s: a `CheckpointError` names
    what would not read back. The manifest is written last, so a directory with a manifest always
    has its weights.
    """
    manifest = build_manifest(model, base if isinstance(base, str) else None, base_kwargs)
    _check_round_trip(model, manifest, base, example_inputs)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, target / WEIGHTS_NAME, metadata={"format": FORMAT, "manifest": MANIFEST_NAME})
    write_json(target / MANIFEST_NAME, manifest)
    return target


def _check_round_trip(model: nn.Module, manifest: dict[str, Any], base: str | nn.Module | None,
                      example_inputs: Any) -> None:
    """Rebuild `model` from `base` and `manifest` as `load_pruned` does; raise if weights or outputs differ."""
    fresh = (create_model(base, **manifest["base"]["kwargs"]) if isinstance(base, str)
             else copy.deepcopy(base if base is not None else model))
    state = model.state_dict()
    rebuilt = load_weights(shrink_to_manifest(fresh, manifest), state, strict=True).eval()
    for name, tensor in rebuilt.state_dict().items():
        if not torch.equal(tensor, state[name]):
            raise CheckpointError(f"save_pruned: tensor {name!r} does not read back equal; nothing was written")
    if example_inputs is None:
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, got = (logits_of(call_model(m, example_inputs)) for m in (model, rebuilt))
    finally:
        model.train(was_training)
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-5, atol=1e-6):
        diff = (expected - got).abs().max().item() if expected.shape == got.shape else "shape"
        raise CheckpointError(f"save_pruned: the model rebuilt from the manifest gives other outputs on the example "
                              f"(max |diff| {diff}; shapes {tuple(got.shape)} vs {tuple(expected.shape)}): some "
                              f"module of {type(model).__name__} keeps a width outside its tensors; nothing was "
                              "written")


def read_manifest(directory: PathLike) -> dict[str, Any]:
    """Read and check the manifest written by `save_pruned`."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{str(directory)!r} holds no {MANIFEST_NAME}: it is not a directory written by "
                              "save_pruned (expected manifest.json and model.safetensors)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not readable JSON: {exc}") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or not isinstance(manifest.get("modules"), dict)):
        raise CheckpointError(f"{str(path)!r} is not a CleanAI pruned-model manifest "
                              f"(expected format {FORMAT!r} with a 'modules' mapping)")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has manifest version {manifest.get('version')!r}; this CleanAI reads "
                              f"version {VERSION}")
    return manifest


def load_pruned(directory: PathLike, base: nn.Module | str | None = None, **base_kwargs: Any) -> nn.Module:
    """Rebuild the pruned model saved in `directory` from its original definition and load its weights.

    `base` is the unpruned model (a module, copied, never modified) or a registered model name
    (built with `base_kwargs`, else with the manifest's kwargs); by default the manifest's base.
    Returns the model in eval mode.
    """
    manifest = read_manifest(directory)
    model = _base_model(manifest, base, base_kwargs)
    shrink_to_manifest(model, manifest)
    load_weights(model, Path(directory) / manifest.get("weights", WEIGHTS_NAME), strict=True)
    return model.eval()


def load_pretrained_pruned(directory: PathLike, model_class: type[nn.Module] | None = None) -> nn.Module:
    """Reload a pruned Hugging Face model written by its `save_pretrained`: build it from config.json (class
    `model_class`, by default the config's first architecture), shrink it to the layout pruning recorded in the
    config (`cleanai_manifest`), then load model.safetensors strictly. Plain `from_pretrained` cannot: the
    config derives one head size and width for every layer."""
    import transformers

    path = Path(directory)
    if not (path / "config.json").is_file() or not (path / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{str(directory)!r} is not a Hugging Face model directory with safetensors weights "
                              f"(config.json and {WEIGHTS_NAME})")
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    manifest = getattr(config, "cleanai_manifest", None)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"the config in {str(directory)!r} records no pruned layout (cleanai_manifest): it was "
                              "not pruned by cleanai.pruning.prune; load it with transformers' from_pretrained")
    if model_class is None:
        names = config.architectures or []
        model_class = getattr(transformers, names[0], None) if names else None
        if model_class is None:
            raise CheckpointError(f"the config in {str(directory)!r} names no known architecture ({names}); pass "
                                  "model_class=")
    base = model_class

    def build(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        shrink_to_manifest(self, manifest)

    # transformers' own from_pretrained (its key renaming included) on the class whose layers start shrunk
    pruned_class = type(base.__name__, (base,), {"__init__": build, "__module__": base.__module__})
    model, info = pruned_class.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                               output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"] or info["unexpected_keys"]:
        raise CheckpointError(f"{str(directory)!r} does not hold the weights of its pruned layout: missing "
                              f"{sorted(info['missing_keys'])[:5]}, mismatched {sorted(info['mismatched_keys'])[:5]}, "
                              f"unexpected {sorted(info['unexpected_keys'])[:5]}")
    return model.eval()


def _base_model(manifest: dict[str, Any], base: nn.Module | str | None, kwargs: dict[str, Any]) -> nn.Module:
    recorded = manifest.get("base") or {}
    if isinstance(base, nn.Module):
        if kwargs:
            raise ConfigError("base_kwargs apply to a base given by name, not to a module")
        return copy.deepcopy(base)
    name = base if base is not None else recorded.get("name")
    if name is None:
        raise CheckpointError("the manifest records no base model name (save_pruned was called without base=...); "
                              "pass the unpruned model or its registered name: load_pruned(directory, base=...)")
    if not kwargs and name == recorded.get("name"):
        kwargs = dict(recorded.get("kwargs") or {})
    return create_model(name, **kwargs)


def shrink_to_manifest(model: nn.Module, manifest: Mapping[str, Any]) -> nn.Module:
    """Resize the layers of the unpruned `model` (in place) to the widths the manifest records.

    Raises `CheckpointError` naming the first layer that does not fit: missing, of another type,
    wider than the base, of other geometry, or a base layer the manifest does not know.
    """
    recorded_class = manifest.get("model_class")
    if recorded_class not in (None, type(model).__name__):
        raise CheckpointError(f"the manifest was saved from a {recorded_class} but the base model is a "
                              f"{type(model).__name__}; pass the model the pruned one was made from")
    entries: dict[str, Any] = manifest["modules"]
    depth = manifest.get("encoder_layers")
    if isinstance(model, TextClassifier) and isinstance(depth, int) and depth < model.config.num_hidden_layers:
        model.cut_layers(range(depth))  # fewer blocks (`keep_layers`): which ones is in the weights, not the layout
    for name in manifest.get("shortcuts", []):
        _restore_shortcut(model, name)
    for name, padding_idx in manifest.get("vocabulary", {}).items():
        _restore_vocabulary(model, name, padding_idx)
    modules = dict(model.named_modules())
    for name, entry in entries.items():
        module = modules.get(name)
        if module is None:
            raise CheckpointError(f"manifest layer {name!r} ({entry.get('type')}) does not exist in the base "
                                  f"{type(model).__name__}: the manifest was written for another architecture")
        _shrink(name, module, entry)
    for name, module in modules.items():
        if name not in entries and _entry(module) is not None:
            raise CheckpointError(f"base model layer {name!r} ({type(module).__name__}) is not in the manifest: "
                                  "the manifest was written for another architecture (a different depth or layout)")
    for name, widths in manifest.get("hf_pruned_widths", {}).items():
        owner = modules.get(name)
        if owner is not None and hasattr(owner, "config"):
            owner.config.cleanai_pruned_widths = dict(widths)
    return model


def _restore_vocabulary(model: nn.Module, name: str, padding_idx: int | None) -> None:
    """Replace the `nn.Embedding` at `name` by a full-size `VocabularyEmbedding` (`prune_vocabulary(remap=
    'model')`), which the manifest's widths then shrink to the kept rows."""
    module = dict(model.named_modules()).get(name)
    if type(module) is not nn.Embedding:
        found = "does not exist" if module is None else f"is a {type(module).__name__}"
        raise CheckpointError(f"manifest vocabulary {name!r} (a VocabularyEmbedding made from an nn.Embedding) {found} "
                              f"in the base {type(model).__name__}")
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, VocabularyEmbedding(
        module.num_embeddings, module.embedding_dim, module.num_embeddings, padding_idx=padding_idx))


def _restore_shortcut(model: nn.Module, name: str) -> None:
    """Replace the `PadShortcut` at `name` by its `ChannelSelect`, as pruning did."""
    parent_name, _, child = name.rpartition(".")
    modules = dict(model.named_modules())
    module = modules.get(name)
    if isinstance(module, ChannelSelect):
        return
    if not isinstance(module, PadShortcut):
        found = "does not exist" if module is None else f"is a {type(module).__name__}"
        raise CheckpointError(f"manifest shortcut {name!r} (a ChannelSelect made from an option-A PadShortcut) "
                              f"{found} in the base {type(model).__name__}")
    selection = ChannelSelect.from_pad_shortcut(module)
    setattr(modules[parent_name], child, selection)


def _shrink(name: str, module: nn.Module, entry: Mapping[str, Any]) -> None:
    kind = type(module).__name__
    if entry.get("type") != kind:
        raise CheckpointError(f"manifest layer {name!r} is a {entry.get('type')} but the base model has a {kind} there")
    base = _entry(module) or {}
    for attr, value in entry.get("fixed", {}).items():
        if base.get("fixed", {}).get(attr) != value:
            raise CheckpointError(f"layer {name!r} ({kind}): the manifest has {attr}={value!r} but the base model "
                                  f"has {base.get('fixed', {}).get(attr)!r}; pruning never changes {attr}")
    widths = entry.get("widths", {})
    for attr, value in widths.items():
        have = base.get("widths", {}).get(attr)
        if have is None or not _fits(value, have):
            raise CheckpointError(f"layer {name!r} ({kind}): the manifest has {attr}={value!r} but the base model has "
                                  f"{have!r}; a pruned layer can only be narrower than the model it came from")
    shapes = entry.get("tensors", {})
    own = {**module._parameters, **module._buffers}
    for tensor_name in sorted(set(own) | set(shapes)):
        tensor, shape = own.get(tensor_name), shapes.get(tensor_name)
        if (tensor is None) != (shape is None):
            raise CheckpointError(f"layer {name!r} ({kind}): tensor {tensor_name!r} is "
                                  f"{'missing from' if shape is None else 'absent in'} the "
                                  f"{'manifest' if shape is None else 'base model'}")
        if tensor is None or list(tensor.shape) == shape:
            continue
        if not _fits(shape, list(tensor.shape)):
            raise CheckpointError(f"layer {name!r} ({kind}): {tensor_name} has shape {shape} in the manifest but "
                                  f"{list(tensor.shape)} in the base model; it can only be smaller")
        fresh = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
        if tensor_name in module._parameters:
            module._parameters[tensor_name] = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
        else:
            module._buffers[tensor_name] = fresh
    for attr, value in widths.items():
        setattr(module, attr, tuple(value) if isinstance(value, list) else value)
    if "heads" in entry:
        adapter = attention_adapter(module)
        if adapter is None or base.get("heads", 0) < entry["heads"]:
            raise CheckpointError(f"layer {name!r} ({kind}): the manifest has {entry['heads']} heads but the base "
                                  f"model has {base.get('heads')!r}; a pruned attention only has fewer heads")
        adapter.set_heads(module, entry["heads"])
    if isinstance(module, HFConv1D):
        module.nx, module.nf = module.weight.shape
    _check_widths_match_shapes(name, module)


def _implied_shapes(module: nn.Module) -> dict[str, list[int]]:
    """The shapes a layer's width attributes say its own tensors have (empty for types without such a rule)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        out, inp, groups = module.out_channels, module.in_channels, module.groups
        kernel = list(module.kernel_size)
        weight = [inp, out // groups, *kernel] if module.transposed else [out, inp // groups, *kernel]
        return {"weight": weight, "bias": [out]}
    if isinstance(module, nn.Linear):
        return {"weight": [module.out_features, module.in_features], "bias": [module.out_features]}
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return dict.fromkeys(("weight", "bias", "running_mean", "running_var"), [module.num_features])
    if isinstance(module, nn.LayerNorm):
        return dict.fromkeys(("weight", "bias"), list(module.normalized_shape))
    if isinstance(module, nn.GroupNorm):
        return dict.fromkeys(("weight", "bias"), [module.num_channels])
    if isinstance(module, nn.Embedding):
        return {"weight": [module.num_embeddings, module.embedding_dim]}
    if isinstance(module, nn.PReLU):
        return {"weight": [module.num_parameters]}
    if isinstance(module, HFConv1D):
        return {"weight": [module.nx, module.nf], "bias": [module.nf]}
    return {}


def _check_widths_match_shapes(name: str, module: nn.Module) -> None:
    """Refuse a layer whose recorded widths disagree with its recorded tensor shapes (an edited manifest)."""
    kind = type(module).__name__
    own = {**module._parameters, **module._buffers}
    for tensor_name, implied in _implied_shapes(module).items():
        tensor = own.get(tensor_name)
        if tensor is not None and list(tensor.shape) != implied:
            raise CheckpointError(f"layer {name!r} ({kind}): its widths ({_attrs(module, _WIDTHS)}) make "
                                  f"{tensor_name} {implied}, but the stored tensor is {list(tensor.shape)}; "
                                  "the manifest does not match its weights")
    groups = getattr(module, "groups", 1)
    if isinstance(module, nn.modules.conv._ConvNd) and (module.in_channels % groups or module.out_channels % groups):
        raise CheckpointError(f"layer {name!r} ({kind}): in_channels={module.in_channels} and out_channels="
                              f"{module.out_channels} must both divide by groups={groups}")
    if _is_attention(module) and module.all_head_size != module.num_attention_heads * module.attention_head_size:
        raise CheckpointError(f"layer {name!r} ({kind}): all_head_size={module.all_head_size} is not "
                              f"num_attention_heads={module.num_attention_heads} x attention_head_size="
                              f"{module.attention_head_size}; the manifest does not match its weights")


def _fits(value: Any, have: Any) -> bool:
    """`value` is no larger than `have` (ints, or lists of ints compared element-wise)."""
    if isinstance(value, list) and isinstance(have, list):
        return len(value) == len(have) and all(_fits(v, h) for v, h in zip(value, have))
    return isinstance(value, int) and isinstance(have, int) and 0 <= value <= have


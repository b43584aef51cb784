"""Fold BatchNorm into the Conv or Linear layer before it, so inference runs one layer instead of two.

In eval mode BatchNorm is a per-channel affine map, so `bn(conv(x))` equals a conv with rescaled
weights and a shifted bias. `fuse_conv_bn` finds such pairs on the whole module graph with torch.fx
(not only inside `nn.Sequential`), folds them with torch's own `fuse_conv_bn_eval` /
`fuse_linear_bn_eval`, and checks the result numerically before returning it.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from cleanai.errors import CleanAIError, InputError

# (layer type, BatchNorm type) pairs that fold; a Linear folds only into BatchNorm1d over its features.
FOLDABLE: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
    (nn.Linear, nn.BatchNorm1d),
)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Plain attributes of CleanAI models that other parts read (example input shapes, class count).
_KEPT_ATTRIBUTES = ("input_size", "num_classes")

ExampleInputs = torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]


class FusionError(CleanAIError, RuntimeError):
    """BatchNorm could not be folded, or the folded model does not compute what the original did."""


@dataclass
class _Report:
    folded: list[str] = field(default_factory=list)
    untraced: dict[str, str] = field(default_factory=dict)  # module name -> why torch.fx could not trace it


def fuse_conv_bn(model: nn.Module, inplace: bool = False, *, example_inputs: ExampleInputs | None = None,
                 atol: float = 1e-5) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv1d/2d/3d or a Linear into that layer; return the eval-mode result.

    The model is traced with torch.fx and a `GraphModule` is returned. Where tracing fails (Python
    control flow on tensors), each child module is fused on its own and `nn.Sequential` children are
    folded pair by pair; BatchNorm layers called directly by an untraceable forward stay, with a
    warning naming that module, and if nothing could be folded at all a `FusionError` names it.
    `inplace=True` folds the model's own layers instead of copies (use the returned module).

    Every folded pair is compared with the unfused pair on random inputs, and the whole model on
    `example_inputs` (default: a random batch of two shaped like `model.input_size`, when the model has
    one); a largest absolute difference above `atol` times max(1, the output's magnitude) raises.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"fuse_conv_bn needs a torch.nn.Module, got {type(model).__name__}")
    inputs = _example_inputs(model, example_inputs)
    was_training = model.training
    try:
        reference = _run(model.eval(), inputs) if inputs is not None else None
    finally:
        model.train(was_training and not inplace)
    report = _Report()
    fused = _fuse(model if inplace else copy.deepcopy(model).eval(), "", report, atol).eval()
    for name in _KEPT_ATTRIBUTES:
        if hasattr(model, name) and not hasattr(fused, name):
            setattr(fused, name, getattr(model, name))
    _check_untraced(fused, report)
    if reference is not None:
        _compare(reference, _run(fused, inputs), atol, f"{type(model).__name__} after folding {len(report.folded)} "
                 "BatchNorm layer(s), on the example inputs")
    return fused


def _example_inputs(model: nn.Module, given: ExampleInputs | None) -> ExampleInputs | None:
    if given is not None:
        return given
    size = getattr(model, "input_size", None)
    if not size:
        return None
    return torch.randn(2, *size, generator=torch.Generator().manual_seed(0))


def _run(model: nn.Module, inputs: ExampleInputs) -> Any:
    with torch.inference_mode():
        if isinstance(inputs, Mapping):
            return model(**inputs)
        return model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)


def _tensors(out: Any) -> Iterator[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, Mapping):
        for value in out.values():
            yield from _tensors(value)
    elif isinstance(out, (tuple, list)):
        for value in out:
            yield from _tensors(value)


def _compare(reference: Any, result: Any, atol: float, what: str) -> None:
    """Raise FusionError when any output differs by more than atol * max(1, |reference|max) (fp32 has ~7 digits)."""
    for want, got in zip(_tensors(reference), _tensors(result), strict=True):
        if not want.is_floating_point():
            continue
        scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
        diff = float((want.double() - got.double()).abs().max()) if want.numel() else 0.0
        if not diff <= atol * scale:
            raise FusionError(f"folding changed the result of {what}: max abs diff {diff:.3g} > {atol:g}"
                              + (f" x {scale:.3g} (output magnitude)" if scale > 1 else ""))


# --- graph pass ----------------------------------------------------------------------------------------


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BATCHNORMS) for m in module.modules())


def _fuse(module: nn.Module, name: str, report: _Report, atol: float) -> nn.Module:
    """Fold pairs in `module` with torch.fx; where tracing fails, fuse its children one by one."""
    if not _has_batchnorm(module):
        return module
    try:
        graph_module = fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises TraceError, TypeError, ... on untraceable Python
        report.untraced[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if isinstance(module, nn.Sequential):
            return _fuse_sequential(module, name, report, atol)
        for child_name, child in list(module.named_children()):
            setattr(module, child_name, _fuse(child, _join(name, child_name), report, atol))
        return module
    _fold_graph(graph_module, name, report, atol)
    return graph_module


def _fold_graph(gm: fx.GraphModule, prefix: str, report: _Report, atol: float) -> None:
    modules = dict(gm.named_modules())
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BATCHNORMS):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1):
            continue  # the BatchNorm's input is not a layer's output used only here
        layer, bn = modules[source.target], modules[node.target]
        if calls[source.target] > 1 or calls[node.target] > 1 or not _foldable(layer, bn):
            continue  # a module called twice would change its other call too
        _set_submodule(gm, source.target, _fold(layer, bn, _join(prefix, source.target), _join(prefix, node.target),
                                                report, atol))
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()


def _fuse_sequential(seq: nn.Sequential, name: str, report: _Report, atol: float) -> nn.Sequential:
    """Module-pattern pass: fold consecutive (layer, BatchNorm) children; fuse the other children on their own."""
    children = list(seq.named_children())
    i = 0
    while i < len(children):
        child_name, child = children[i]
        following = children[i + 1][1] if i + 1 < len(children) else None
        if following is not None and _foldable(child, following):
            bn_name = children[i + 1][0]
            setattr(seq, child_name, _fold(child, following, _join(name, child_name), _join(name, bn_name), report,
                                           atol))
            setattr(seq, bn_name, nn.Identity())
            i += 2
            continue
        setattr(seq, child_name, _fuse(child, _join(name, child_name), report, atol))
        i += 1
    return seq


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    if not any(type(layer) is lt and type(bn) is bt for lt, bt in FOLDABLE):
        return False
    if bn.running_mean is None or bn.running_var is None:
        return False  # track_running_stats=False: normalises with batch statistics even in eval mode
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return channels == bn.num_features


def _fold(layer: nn.Module, bn: nn.Module, layer_name: str, bn_name: str, report: _Report, atol: float) -> nn.Module:
    """The layer with `bn` folded in, checked against `bn(layer(x))` on a random input."""
    layer.eval()
    bn.eval()
    fused = fuse_linear_bn_eval(layer, bn) if isinstance(layer, nn.Linear) else fuse_conv_bn_eval(layer, bn)
    x = _probe(layer)
    with torch.inference_mode():
        _compare(bn(layer(x)), fused(x), atol, f"{layer_name} + {bn_name} on a random input of shape {tuple(x.shape)}")
    report.folded.append(bn_name)
    return fused


def _probe(layer: nn.Module) -> torch.Tensor:
    """A random input the layer accepts: (2, in_features) for Linear; 2 x in_channels x a few positions for Conv."""
    g = torch.Generator().manual_seed(0)
    dtype = layer.weight.dtype
    if isinstance(layer, nn.Linear):
        return torch.randn(2, layer.in_features, generator=g, dtype=dtype)
    span = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.dilation)]
    return torch.randn(2, layer.in_channels, *(max(s, 5) for s in span), generator=g, dtype=dtype)


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, attr = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_untraced(fused: nn.Module, report: _Report) -> None:
    """Name the untraceable modules whose own BatchNorm layers stayed; raise if nothing was folded at all."""
    if not report.untraced:
        return
    stuck = {}
    for scope, reason in report.untraced.items():
        owner = fused.get_submodule(scope) if scope else fused
        if isinstance(owner, nn.Sequential):
            continue  # folded by pattern: a BatchNorm left there follows no layer
        left = [_join(scope, n) for n, child in owner.named_children() if isinstance(child, _BATCHNORMS)]
        if left:
            stuck[scope] = (reason, left)
    if not stuck:
        return
    detail = "; ".join(f"{scope or '<root>'!r} ({type(fused.get_submodule(scope) if scope else fused).__name__}): "
                       f"{reason}; BatchNorm kept: {', '.join(left)}" for scope, (reason, left) in stuck.items())
    if not report.folded:
        raise FusionError(f"no BatchNorm could be folded: torch.fx cannot trace {detail}. Make that forward "
                          "traceable (no Python branches on tensor values) or fold its Conv/BN pairs in an "
                          "nn.Sequential")
    warnings.warn(f"folded {len(report.folded)} BatchNorm layer(s), but torch.fx cannot trace {detail}", stacklevel=3)

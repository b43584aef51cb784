"""Attention adapters: how structured pruning finds, scores and removes whole heads in each transformer family.

An `AttentionAdapter` is a small strategy: it recognises one family's attention module, returns its
`AttentionParts` (the q/k/v projections as row segments, the output projection, heads and head size)
and writes a new head count back into the module. `StructuredPruner` holds one code path for heads
and asks the registry (`list_attention_adapters()`, `register_attention_adapter`) which adapter fits.
Registered: BERT/RoBERTa/MobileBERT (`query/key/value`), DistilBERT (`q_lin/k_lin/v_lin/out_lin`),
ViT (`q_proj/k_proj/v_proj/o_proj`), GPT-2 (fused `c_attn` + `c_proj`). A model none
of them knows can still have its heads pruned: `PruneConfig(num_heads={"name": heads})` uses the
structural adapter (three q/k/v Linears or one fused 3x Linear, then an output Linear).

`head_layout(model)` reads every attention's heads, head size and part widths (whole heads or not).

`nn.MultiheadAttention` needs no adapter: torch requires `head_dim * num_heads == embed_dim`, so its heads go
with their channels of the stream it reads and writes; `prune()` removes that stream in whole heads
(`cleanai.pruning.layer_pruners.MultiheadAttentionPruner`).

Hugging Face `Conv1D` (GPT-2's transposed Linear) is swapped for `nn.Linear` during pruning
(`conv1d_to_linear`) so the dependency graph, the criteria and the surgery see ordinary Linears, and
swapped back afterwards (`linear_to_conv1d`), so the model still saves with `save_pretrained`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cleanai._hf import HFConv1D, conv1d_to_linear
from cleanai.registry import Registry


@dataclass(frozen=True)
class AttentionParts:
    """The projections of one attention module: q/k/v as (Linear, first row) segments, the output Linear."""

    segments: tuple[tuple[nn.Linear, int], ...]  # q, k, v: rows [offset, offset + heads * head_dim) of a Linear
    out: nn.Linear  # its input columns are the concatenated heads
    heads: int
    head_dim: int


@dataclass(frozen=True)
class AttentionAdapter:
    """How one transformer family stores its heads (see the module docstring)."""

    name: str
    matches: Callable[[nn.Module], bool]
    parts: Callable[[nn.Module], AttentionParts]
    set_heads: Callable[[nn.Module, int], None]


ATTENTION_ADAPTERS: Registry[AttentionAdapter] = Registry("attention adapter")


def register_attention_adapter(adapter: AttentionAdapter) -> AttentionAdapter:
    """Add an adapter (for a family the registered ones do not cover); returns it."""
    return ATTENTION_ADAPTERS.register(adapter.name, adapter)


def list_attention_adapters() -> list[str]:
    """Names of the registered attention adapters."""
    return ATTENTION_ADAPTERS.names()


def _linears(module: nn.Module, names: tuple[str, ...]) -> bool:
    """The named children are Linears (or HF Conv1D, which `conv1d_to_linear` turns into Linears)."""
    return all(isinstance(getattr(module, n, None), (nn.Linear, HFConv1D)) for n in names)


def _int(module: nn.Module, name: str) -> bool:
    value = getattr(module, name, None)
    return isinstance(value, int) and not isinstance(value, bool)


def _separate(q: str, k: str, v: str, out: str, heads: str, head_dim: str) -> Callable[[nn.Module], AttentionParts]:
    def parts(m: nn.Module) -> AttentionParts:
        return AttentionParts(tuple((getattr(m, n), 0) for n in (q, k, v)), getattr(m, out),
                              getattr(m, heads), getattr(m, head_dim))
    return parts


def _setter(heads: str, *widths: str) -> Callable[[nn.Module, int], None]:
    """Set `heads` and each width attribute (heads x head size) on the module."""
    def set_heads(m: nn.Module, n: int) -> None:
        head_dim = _head_dim(m)
        setattr(m, heads, n)
        for w in widths:
            setattr(m, w, n * head_dim)
    return set_heads


def _head_dim(m: nn.Module) -> int:
    return next(getattr(m, a) for a in ("attention_head_size", "head_dim") if _int(m, a))


for _adapter in (
    AttentionAdapter(  # BERT, RoBERTa, MobileBERT, ELECTRA...: self-attention with the output in the parent
        "bert", lambda m: _linears(m, ("query", "key", "value")) and _int(m, "num_attention_heads")
        and _int(m, "attention_head_size"),
        _separate("query", "key", "value", "_cleanai_out", "num_attention_heads", "attention_head_size"),
        _setter("num_attention_heads", "all_head_size")),
    AttentionAdapter(
        "distilbert", lambda m: _linears(m, ("q_lin", "k_lin", "v_lin", "out_lin")) and _int(m, "n_heads"),
        _separate("q_lin", "k_lin", "v_lin", "out_lin", "n_heads", "attention_head_size"),
        _setter("n_heads")),
    AttentionAdapter(  # ViT, and any q_proj/k_proj/v_proj/o_proj attention with equal q and k widths
        "q_proj", lambda m: _linears(m, ("q_proj", "k_proj", "v_proj", "o_proj")) and _int(m, "head_dim")
        and _int(m, "num_attention_heads") and m.q_proj.out_features == m.k_proj.out_features,
        _separate("q_proj", "k_proj", "v_proj", "o_proj", "num_attention_heads", "head_dim"),
        _setter("num_attention_heads")),
    AttentionAdapter(  # GPT-2: one fused q|k|v projection split at `split_size` (Conv1D, a Linear while pruning)
        "gpt2", lambda m: _linears(m, ("c_attn", "c_proj")) and _int(m, "num_heads") and _int(m, "split_size")
        and not getattr(m, "is_cross_attention", False),
        lambda m: AttentionParts(tuple((m.c_attn, i * m.split_size) for i in range(3)), m.c_proj,
                                 m.num_heads, m.head_dim),
        _setter("num_heads", "split_size")),
):
    register_attention_adapter(_adapter)


def _link_bert_outputs(model: nn.Module) -> None:
    """BERT-style self-attention keeps its output Linear in the parent (`attention.output.dense`): link it."""
    for module in model.modules():
        child, output = getattr(module, "self", None), getattr(module, "output", None)
        dense = getattr(output, "dense", None)
        if isinstance(child, nn.Module) and type(dense) is nn.Linear and _linears(child, ("query", "key", "value")):
            object.__setattr__(child, "_cleanai_out", dense)  # a plain reference, not a registered submodule


def structural_adapter(module: nn.Module, heads: int) -> AttentionAdapter | None:
    """An adapter for an unrecognised module with `heads` heads given by the user: its Linear children are
    q, k, v, out (in that order) or a fused 3x q|k|v Linear then out; None if they are not."""
    lin = [c for c in module.children() if type(c) is nn.Linear]
    if len(lin) == 4 and len({l.out_features for l in lin[:3]}) == 1 and lin[3].in_features == lin[0].out_features:
        inner = lin[0].out_features
        segments = lambda m: tuple((l, 0) for l in lin[:3])  # noqa: E731
    elif len(lin) == 2 and lin[0].out_features == 3 * lin[1].in_features:
        inner = lin[1].in_features
        segments = lambda m: tuple((lin[0], i * lin[1].in_features) for i in range(3))  # noqa: E731
    else:
        return None
    if inner % heads:
        return None
    head_dim = inner // heads
    state = {"heads": heads}
    ints = {a: v for a, v in vars(module).items() if isinstance(v, int) and not isinstance(v, bool)}

    def parts(m: nn.Module) -> AttentionParts:
        return AttentionParts(segments(m), lin[-1], state["heads"], head_dim)

    def set_heads(m: nn.Module, n: int) -> None:  # attributes holding the head count or the inner width follow
        for attr, first in ints.items():
            if first == heads:
                setattr(m, attr, n)
            elif first == inner:
                setattr(m, attr, n * head_dim)
        state["heads"] = n

    return AttentionAdapter(f"structural:{type(module).__name__}", lambda m: True, parts, set_heads)


def attention_adapter(module: nn.Module) -> AttentionAdapter | None:
    """The registered adapter that recognises `module`, if any."""
    return next((a for a in map(ATTENTION_ADAPTERS.get, ATTENTION_ADAPTERS.names()) if a.matches(module)), None)


def find_attention(model: nn.Module, num_heads: dict[str, int] | None = None
                   ) -> Iterator[tuple[str, nn.Module, AttentionAdapter]]:
    """Every attention module of `model` whose heads can be pruned, with its adapter; `num_heads` names modules
    the registered adapters do not recognise (module name -> heads)."""
    from cleanai.errors import CleanAIError

    _link_bert_outputs(model)
    modules = dict(model.named_modules())
    for name, heads in (num_heads or {}).items():
        module = modules.get(name)
        adapter = None if module is None else structural_adapter(module, heads)
        if adapter is None:
            found = "does not exist" if module is None else (
                f"is a {type(module).__name__} whose Linear children are not q, k, v, out (or a fused q|k|v and "
                f"out) with an inner width divisible by {heads}")
            raise CleanAIError(f"num_heads names module {name!r}, which {found}; name the attention module that "
                               "owns the projections (see model.named_modules())")
        yield name, module, adapter
    for name, module in modules.items():
        if name in (num_heads or {}):
            continue
        adapter = attention_adapter(module)
        if adapter is not None and (adapter.name != "bert" or hasattr(module, "_cleanai_out")):
            yield name, module, adapter


@dataclass(frozen=True)
class HeadLayout:
    """One attention module's heads as its weights hold them: count, size, and the widths of its q/k/v parts
    and of the output projection's input."""

    heads: int
    head_dim: int
    widths: frozenset[int]

    @property
    def whole(self) -> bool:
        """Every part is exactly heads x head size wide (no head cut in the middle, none re-split)."""
        return self.widths == {self.heads * self.head_dim}


def head_layout(model: nn.Module, num_heads: dict[str, int] | None = None) -> dict[str, HeadLayout]:
    """The head layout of every attention module of `model` (adapters' families, `num_heads` ones and
    `nn.MultiheadAttention`), read from a copy: compare it before and after pruning."""
    view = copy.deepcopy(model)
    conv1d_to_linear(view)  # GPT-2's Conv1D, as the adapters read it
    found = {}
    for name, module, adapter in find_attention(view, num_heads):
        parts = adapter.parts(module)
        fused = len({id(lin) for lin, _ in parts.segments}) == 1  # one q|k|v Linear: a third of its rows each
        widths = {parts.out.in_features} | {lin.out_features // (3 if fused else 1) for lin, _ in parts.segments}
        found[name] = HeadLayout(parts.heads, parts.head_dim, frozenset(widths))
    for name, module in view.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            found[name] = HeadLayout(module.num_heads, module.head_dim, frozenset(
                {module.embed_dim, module.in_proj_weight.shape[0] // 3, module.out_proj.in_features}))
    return found


def remove_heads(module: nn.Module, adapter: AttentionAdapter, heads: list[int]) -> None:
    """Physically remove `heads` (indices) from the q/k/v rows and output columns, then set the new head count."""
    parts = adapter.parts(module)
    d, drop = parts.head_dim, set(heads)
    keep = [h for h in range(parts.heads) if h not in drop]
    width = parts.heads * d
    rows: dict[nn.Linear, list[int]] = {}
    for linear, offset in parts.segments:
        rows.setdefault(linear, [])
        rows[linear] += [offset + h * d + j for h in keep for j in range(d)]
    for linear, kept in rows.items():
        covered = {offset + i for l, offset in parts.segments if l is linear for i in range(width)}
        kept = sorted(set(kept) | (set(range(linear.out_features)) - covered))
        _select(linear, torch.tensor(kept), dim=0)
    _select(parts.out, torch.tensor([h * d + j for h in keep for j in range(d)]), dim=1)
    adapter.set_heads(module, len(keep))


def _select(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    index = index.to(linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.detach().index_select(dim, index).contiguous(),
                                 requires_grad=linear.weight.requires_grad)
    if dim == 0:
        linear.out_features = len(index)
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.detach().index_select(0, index).contiguous(),
                                       requires_grad=linear.bias.requires_grad)
    else:
        linear.in_features = len(index)


def _conv1d_type() -> type[nn.Module] | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None
    return Conv1D


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def linear_to_conv1d(model: nn.Module, names: list[str]) -> None:
    """Turn the Linears `conv1d_to_linear` made back into HF `Conv1D`s (at their pruned widths)."""
    conv1d = _conv1d_type()
    for name in names:
        old = model.get_submodule(name)
        new = conv1d(old.out_features, old.in_features)
        new.weight = nn.Parameter(old.weight.detach().t().contiguous(), requires_grad=old.weight.requires_grad)
        new.bias = old.bias
        _replace(model, name, new.to(old.weight.device))

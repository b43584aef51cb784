"""Whole-head pruning in every registered transformer family (tiny random-weight HF models)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cleanai._hf import conv1d_to_linear
from cleanai.errors import CheckpointError, CleanAIError
from cleanai.export import export_onnx
from cleanai.models import TINY_TRANSFORMERS, tiny_transformer, tiny_transformer_inputs
from cleanai.pruning import PruneConfig, head_layout, load_pruned, prune, save_pruned
from cleanai.pruning.attention import find_attention, list_attention_adapters
from cleanai.pruning.serialization import load_pretrained_pruned

FAMILIES = list(TINY_TRANSFORMERS)


def _model(family: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return tiny_transformer(family), tiny_transformer_inputs(family)


def _heads(model: nn.Module) -> dict[str, tuple[int, int]]:
    view = copy.deepcopy(model)
    conv1d_to_linear(view)
    return {n: (a.parts(m).heads, a.parts(m).head_dim) for n, m, a in find_attention(view)}


def _ffn_widths(model: nn.Module) -> list[int]:
    names = ("intermediate.dense", "ffn.lin1", "mlp.fc1", "mlp.c_fc")
    return [(m.out_features if isinstance(m, nn.Linear) else m.nf) for n, m in model.named_modules()
            if n.endswith(names)]


@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
@pytest.mark.parametrize("family", FAMILIES)
def test_half_cut_keeps_whole_heads_and_round_trips(family: str, criterion: str, tmp_path) -> None:
    model, inputs = _model(family)
    before, ffn_before = _heads(model), _ffn_widths(model)
    calib = [(inputs, torch.tensor([0, 1]))]
    pruned, report = prune(model, inputs, PruneConfig(ratio=0.5, criterion=criterion), calib=calib)
    after = _heads(pruned)
    assert len(before) == 2 and set(after) == set(before)
    assert all(after[n] == (heads // 2, dim) for n, (heads, dim) in before.items())  # half the heads, same size
    assert _ffn_widths(pruned) == [w // 2 for w in ffn_before]  # FFN neurons pruned too
    assert report.params_after < report.params_before
    with torch.no_grad():
        out = pruned(**inputs).logits
    assert out.shape == model(**inputs).logits.shape and bool(torch.isfinite(out).all())

    pruned.save_pretrained(tmp_path / "hf")
    reloaded = load_pretrained_pruned(tmp_path / "hf")
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, out)
    save_pruned(pruned, tmp_path / "cleanai")
    again = load_pruned(tmp_path / "cleanai", base=model)
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, out)
    export_onnx(reloaded, inputs, tmp_path / "model.onnx")  # raises unless ONNX Runtime agrees with torch
    assert (tmp_path / "model.onnx").is_file()


def test_registry_lists_the_families() -> None:
    assert {"bert", "distilbert", "q_proj", "gpt2"} <= set(list_attention_adapters())


class _Custom(nn.Module):
    """An attention no adapter recognises: fused q|k|v and an output projection, heads only in forward's view."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.qkv, self.proj, self.n, self.width = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.width, dim=-1)
        shape = (*x.shape[:2], self.n, -1)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(*x.shape[:2], -1)
        return x + self.proj(out)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.att, self.head = nn.Linear(8, 32), _Custom(), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.att(self.embed(x)).mean(1))


def test_num_heads_map_prunes_an_unrecognised_attention() -> None:
    torch.manual_seed(0)
    net, x = _Net().eval(), torch.randn(2, 5, 8)
    pruned, _ = prune(net, x, PruneConfig(ratio=0.5, num_heads={"att": 4}))
    assert (pruned.att.n, pruned.att.width, pruned.att.qkv.out_features, pruned.att.proj.in_features) == (2, 16, 48, 16)
    assert pruned(x).shape == (2, 3)


def test_num_heads_map_refuses_a_module_without_projections() -> None:
    with pytest.raises(CleanAIError, match="num_heads names module 'head'"):
        prune(_Net().eval(), torch.randn(2, 5, 8), PruneConfig(ratio=0.5, num_heads={"head": 4}))


@pytest.mark.parametrize("bad", [{"att": 1}, {"": 4}, {"att": True}])
def test_num_heads_map_is_validated_at_config_time(bad: dict) -> None:
    with pytest.raises(ValueError, match="num_heads"):
        PruneConfig(num_heads=bad)


class _Encoder(nn.Module):
    """Linear embedding -> nn.TransformerEncoderLayer (4 heads of 8) -> mean over the sequence -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Linear(8, 32), nn.Linear(32, 3)
        self.layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x)).mean(1))


@pytest.mark.parametrize(("ratio", "heads"), [(0.2, 3), (0.3, 2), (0.5, 2)])
def test_multihead_attention_loses_whole_heads_with_their_stream_channels(ratio: float, heads: int,
                                                                         tmp_path) -> None:
    torch.manual_seed(0)
    net, x = _Encoder().eval(), torch.randn(2, 5, 8)
    pruned, report = prune(net, x, PruneConfig(ratio=ratio))
    att, width = pruned.layer.self_attn, heads * 8
    assert (att.num_heads, att.head_dim, att.embed_dim) == (heads, 8, width)  # never re-split into narrower heads
    assert att.in_proj_weight.shape == (3 * width, width) and att.out_proj.weight.shape == (width, width)
    assert pruned.embed.out_features == pruned.layer.norm1.normalized_shape[0] == pruned.head.in_features == width
    assert [(c.before, c.after) for c in report.layers if c.name == "layer.self_attn"] == [(4, heads)]
    assert pruned.layer.linear1.out_features == math.floor(64 * (1 - ratio))  # the feed-forward layer too
    out = pruned(x)
    assert out.shape == (2, 3) and bool(torch.isfinite(out).all())
    save_pruned(pruned, tmp_path, base=net, example_inputs=x)
    assert torch.equal(load_pruned(tmp_path, base=net)(x), out)


def test_multihead_attention_pruner_refuses_to_split_a_head() -> None:
    from cleanai.pruning.layer_pruners import MultiheadAttentionPruner

    with pytest.raises(CleanAIError, match=r"would split heads \[1\]"):
        MultiheadAttentionPruner()(nn.MultiheadAttention(32, 4), [8, 9, 10])


@pytest.mark.parametrize("family", ["gpt2", "vit"])
def test_iterative_global_head_ranking_keeps_whole_heads(family: str) -> None:
    """Two steps (the graph is rebuilt after each head cut) ranking heads across layers with a separate head ratio."""
    model, inputs = _model(family)
    calib = [(inputs, torch.tensor([0, 1]))]
    config = PruneConfig(ratio=0.25, head_ratio=0.5, scope="global", iterative_steps=2, criterion="wanda")
    pruned, report = prune(model, inputs, config, calib=calib)
    after = _heads(pruned)
    assert sum(heads for heads, _ in after.values()) == 4  # half of the 2 x 4 heads, wherever they were weakest
    assert all(dim == 8 and heads >= 1 for heads, dim in after.values())
    assert [sum(s.removed.get(n, 0) for n in after) for s in report.steps] == [2, 2]
    with torch.no_grad():
        assert pruned(**inputs).logits.shape == model(**inputs).logits.shape


def test_load_pretrained_pruned_refuses_a_model_that_was_not_pruned(tmp_path) -> None:
    tiny_transformer("bert").save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="records no pruned layout"):
        load_pretrained_pruned(tmp_path)


def test_head_layout_reads_whole_heads_and_tells_a_re_split_one() -> None:
    model = tiny_transformer("bert")
    before = head_layout(model)
    assert before and all(layout.whole for layout in before.values())
    pruned, _ = prune(model, tiny_transformer_inputs("bert"), PruneConfig(ratio=0.5))
    after = head_layout(pruned)
    assert all(after[n].whole and after[n].heads < before[n].heads and after[n].head_dim == before[n].head_dim
               for n in before)
    name = next(iter(before))
    query = dict(model.named_modules())[f"{name}.query"]
    with torch.no_grad():  # a q projection one row narrower: the heads no longer tile it
        dict(model.named_modules())[name].query = nn.Linear(query.in_features, query.out_features - 1)
    assert not head_layout(model)[name].whole
    mha = nn.Sequential(nn.MultiheadAttention(32, 4))
    layouts = {n: (layout.heads, layout.head_dim, layout.whole) for n, layout in head_layout(mha).items()}
    assert layouts == {"0": (4, 8, True)}

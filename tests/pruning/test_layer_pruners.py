"""Layers Torch-Pruning lacks: HF Conv1D (GPT-2) pruned as a Linear, recurrent layers' inputs pruned with their
producer and their hidden width reported as left whole; every result runs, is smaller and reloads identically."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2ForSequenceClassification

from cleanai.export import export_onnx
from cleanai.pruning import PruneConfig, load_pruned, prune, save_pruned


def tiny_gpt2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16, num_labels=3,
                        pad_token_id=0, bos_token_id=1, eos_token_id=1, use_cache=False)
    return GPT2ForSequenceClassification(config).eval(), {"input_ids": torch.randint(1, 100, (2, 8))}


class RecurrentClassifier(nn.Module):
    """Linear feature layer -> LSTM or GRU -> Linear -> classifier."""

    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.features, self.rnn = nn.Linear(10, 16), cell(16, 24, batch_first=True)
        self.fc, self.out = nn.Linear(24, 32), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(self.rnn(torch.relu(self.features(x)))[0][:, -1])))


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "wanda"])
def test_gpt2_mlp_conv1d_layers_are_pruned_as_linears(criterion: str, tmp_path: Path) -> None:
    model, ids = tiny_gpt2()
    calib = [(ids, torch.tensor([0, 2]))]
    pruned, report = prune(model, ids, PruneConfig(ratio=0.5, criterion=criterion), calib=calib)
    for block in pruned.transformer.h:
        assert (block.mlp.c_fc.nf, block.mlp.c_fc.weight.shape) == (64, (32, 64))
        assert (block.mlp.c_proj.nx, block.mlp.c_proj.weight.shape) == (64, (64, 32))
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    for block in pruned.transformer.h:  # the fused c_attn goes as whole heads (cleanai.pruning.attention)
        assert (block.attn.num_heads, block.attn.c_attn.nf, block.attn.c_proj.nx) == (2, 48, 16)
    assert "transformer.h.0.attn.c_attn" not in {item.name for item in report.left_as_is} and not report.warnings
    logits = pruned(**ids).logits
    assert logits.shape == model(**ids).logits.shape and bool(torch.isfinite(logits).all())
    save_pruned(pruned, tmp_path, base=model, example_inputs=ids)
    assert torch.equal(load_pruned(tmp_path, base=model)(**ids).logits, logits)


def test_gpt2_macs_of_the_report_count_the_conv1d_products() -> None:
    model, ids = tiny_gpt2()
    _, report = prune(model, ids, PruneConfig(ratio=0.5))
    conv1d = 2 * 8 * 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)  # tokens x blocks x (c_attn, c_proj, c_fc, c_proj)
    assert report.macs_before >= conv1d
    # half of each MLP and half of each attention's heads: tokens x blocks x (c_fc, c_proj; c_attn, attn.c_proj);
    # Torch-Pruning's counter adds one per bias element removed (64 of c_fc's, 48 of c_attn's in each block)
    mlp, heads = 32 * 64 + 64 * 32, 32 * 48 + 16 * 32
    assert report.macs_before - report.macs_after == 2 * 8 * 2 * (mlp + heads) + 2 * (64 + 48)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_hidden_units_and_inputs_are_pruned_and_reload(cell: type[nn.RNNBase], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = RecurrentClassifier(cell).eval(), torch.randn(2, 5, 10)
    pruned, report = prune(model, x, PruneConfig(ratio=0.5))
    assert "rnn" not in {item.name for item in report.left_as_is} and "rnn" not in " ".join(report.warnings)
    if cell is nn.LSTM:  # its input features go with the layer feeding it
        assert pruned.features.out_features == pruned.rnn.input_size == 8
    else:  # DepGraph loses the channels in the GRU's unrolled gates: that group is named, not a crash
        assert "cannot trace" in report.skipped_groups["features"] and pruned.features.out_features == 16
    assert pruned.rnn.hidden_size == pruned.fc.in_features == 12 and pruned.fc.out_features == 16
    gates = {nn.LSTM: 4, nn.GRU: 3}[cell]
    assert pruned.rnn.weight_ih_l0.shape == (gates * 12, pruned.rnn.input_size)
    assert pruned.rnn.weight_hh_l0.shape == (gates * 12, 12)
    out = pruned(x)
    assert out.shape == (2, 3) and bool(torch.isfinite(out).all())
    save_pruned(pruned, tmp_path, base=model, example_inputs=x)
    assert torch.equal(load_pruned(tmp_path, base=model)(x), out)
    export_onnx(pruned, x, tmp_path / "rnn.onnx")


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
def test_removing_hidden_units_equals_zeroing_their_effect(cell: type[nn.RNNBase]) -> None:
    """A stacked bidirectional layer without hidden units 1 and 4 computes what the whole one computes, on the kept
    units, with those units' gate rows zeroed (their state then stays 0 in every cell type): the gates, the
    recurrent columns and the next layer's inputs are sliced consistently."""
    from cleanai.pruning.layer_pruners import GATES, RecurrentPruner

    torch.manual_seed(0)
    rnn, x = cell(6, 8, num_layers=2, bidirectional=True, batch_first=True).eval(), torch.randn(2, 5, 6)
    keep = [u for u in range(8) if u not in (1, 4)]
    masked = copy.deepcopy(rnn)
    with torch.no_grad():
        for p in masked.parameters():  # weight_ih, weight_hh, bias_ih, bias_hh of each layer and direction
            p[[g * 8 + u for g in range(GATES.get(cell, 1)) for u in (1, 4)]] = 0
    pruned = RecurrentPruner().prune_out_channels(copy.deepcopy(rnn), [1, 4, 9, 12])
    assert pruned.hidden_size == 6
    with torch.no_grad():
        expected = masked(x)[0].view(2, 5, 2, 8)[..., keep].reshape(2, 5, 12)
        torch.testing.assert_close(pruned(x)[0], expected)


@pytest.mark.parametrize("attention", [False, True])
def test_a_channels_last_flatten_loses_each_pruned_channel_at_every_step(attention: bool) -> None:
    torch.manual_seed(0)  # (batch, 5 steps, 32 channels) flattened to 160 features: channel c is every t * 32 + c
    middle = (nn.TransformerEncoderLayer(32, 4, 64, batch_first=True) if attention else nn.ReLU())
    net, x = nn.Sequential(nn.Linear(8, 32), middle, nn.Flatten(), nn.Linear(5 * 32, 3)).eval(), torch.randn(2, 5, 8)
    pruned, _ = prune(net, x, PruneConfig(ratio=0.5, criterion="random"))
    kept = [next(i for i in range(32) if torch.equal(row, net[0].weight[i])) for row in pruned[0].weight]
    assert len(kept) == pruned[0].out_features < 32
    columns = [t * 32 + c for t in range(5) for c in kept]
    assert torch.equal(pruned[3].weight, net[3].weight[:, columns])  # the classifier reads the kept channels
    if attention:
        assert pruned[1].self_attn.num_heads * 8 == len(kept)  # whole heads of the stream
    out = pruned(x)
    assert out.shape == (2, 3) and bool(torch.isfinite(out).all())

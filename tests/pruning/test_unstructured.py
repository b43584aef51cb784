"""Unstructured magnitude pruning: local/global masks, the training callback, make_permanent and the sparsity
report (schedules and the sparse file have their own test modules)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.utils import prune as torch_prune

from cleanai.errors import CleanAIError, UnknownNameError
from cleanai.pruning import (
    MovementConfig, MovementPruner, PolynomialDecay, SparsityScheduler, UnstructuredConfig, make_permanent,
    prune_unstructured, save_sparse, sparsity_report,
)
from cleanai.training import Callback, Trainer, TrainConfig


def mlp(head_scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    with torch.no_grad():
        model[2].weight.mul_(head_scale)
    return model


def kept(n: int, sparsity: float) -> int:
    return round(n * (1 - sparsity))


def test_local_scope_prunes_each_layer_exactly_and_only_its_smallest_weights() -> None:
    model = mlp(head_scale=10.0)
    pruned, report = prune_unstructured(model, UnstructuredConfig(sparsity=0.7, scope="local"))
    for name in ("0", "2"):
        before, after = model.get_submodule(name).weight, pruned.get_submodule(name).weight
        zero = after == 0
        assert int((~zero).sum()) == kept(before.numel(), 0.7)
        assert before[zero].abs().max() <= before[~zero].abs().min()
        assert torch.equal(after[~zero], before[~zero])
    assert [round(layer.sparsity, 3) for layer in report.layers] == [0.7, 0.7]


def test_global_scope_uses_one_threshold_so_small_weight_layers_lose_more() -> None:
    model = mlp(head_scale=10.0)  # the head's weights are 10x larger than the first layer's
    pruned, report = prune_unstructured(model, {"sparsity": 0.7, "scope": "global"})
    before = torch.cat([model[0].weight.flatten(), model[2].weight.flatten()])
    after = torch.cat([pruned[0].weight.flatten(), pruned[2].weight.flatten()])
    zero = after == 0
    assert int((~zero).sum()) == kept(before.numel(), 0.7)
    assert before[zero].abs().max() <= before[~zero].abs().min()
    by_layer = {layer.name: layer.sparsity for layer in report.layers}
    assert by_layer["0"] > 0.75 and by_layer["2"] < 0.3
    assert report.sparsity == pytest.approx(0.7, abs=1 / before.numel())


def test_the_callers_model_is_untouched_unless_inplace() -> None:
    model = mlp()
    prune_unstructured(model, {"sparsity": 0.5})
    assert sparsity_report(model).zeros == 0
    same, _ = prune_unstructured(model, {"sparsity": 0.5, "inplace": True})
    assert same is model and sparsity_report(model).sparsity == pytest.approx(0.5, abs=1e-3)


def test_ignored_layers_and_module_types_choose_the_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Sequential(nn.Linear(8 * 36, 16), nn.Linear(16, 4)))
    _, report = prune_unstructured(model, {"sparsity": 0.5, "ignored_layers": ["2"]})
    assert {layer.name: round(layer.sparsity, 2) for layer in report.layers} == {"0": 0.5, "2.0": 0.0, "2.1": 0.0}
    linear_only, report = prune_unstructured(model, {"sparsity": 0.5, "module_types": ["linear"],
                                                     "ignored_layers": ["2.1"]})
    assert {layer.name: round(layer.sparsity, 2) for layer in report.layers} == {"2.0": 0.5, "2.1": 0.0}
    assert int((linear_only[0].weight == 0).sum()) == 0


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"'fc9'.*Valid names.*0, 2"):
        prune_unstructured(mlp(), {"ignored_layers": ["fc9"]})
    with pytest.raises(ValidationError, match=r"module_types[\s\S]*'conv9d'[\s\S]*conv2d.*linear"):
        UnstructuredConfig(module_types=["conv9d"])
    with pytest.raises(CleanAIError, match="no layer of types"):
        prune_unstructured(mlp(), {"ignored_layers": ["0", "2"]})


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_0_1_is_refused_with_the_field_name(bad: float) -> None:
    with pytest.raises(ValidationError, match=r"sparsity[\s\S]*\[0, 1\)"):
        UnstructuredConfig(sparsity=bad)
    with pytest.raises(ValidationError, match=r"initial_sparsity[\s\S]*\[0, 1\)"):
        PolynomialDecay(initial_sparsity=bad, end_step=10)


class ZeroChecker(Callback):
    """After every optimizer step, checks the scheduler's masked weights are exactly zero."""

    def __init__(self, scheduler: SparsityScheduler) -> None:
        self.scheduler, self.checked, self.violations = scheduler, 0, 0

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        for name, mask in self.scheduler.masks.items():
            self.violations += int((self.scheduler.layers[name].weight[mask == 0] != 0).sum())
        self.checked += 1


def test_scheduler_reaches_the_final_sparsity_during_fit_and_masked_weights_stay_zero(
        digits, trained_digits_mlp) -> None:
    x_train, y_train, x_test, y_test = digits
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=100,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    model = copy.deepcopy(trained_digits_mlp)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    schedule = PolynomialDecay(begin_step=0, end_step=30, frequency=10)
    scheduler = SparsityScheduler(model, UnstructuredConfig(sparsity=0.8, schedule=schedule))
    checker = ZeroChecker(scheduler)
    config = TrainConfig(epochs=3, lr=1e-3, device="cpu", seed=0)
    Trainer(model, config=config, callbacks=[scheduler, checker]).fit(loader)

    assert checker.checked == 42 and checker.violations == 0  # 14 steps per epoch
    assert scheduler.updates == [(t, pytest.approx(schedule.sparsity_at(t, 0.8))) for t in (0, 10, 20, 30)]
    for name in ("0", "2"):
        weight = model.get_submodule(name).weight
        assert int((weight != 0).sum()) == kept(weight.numel(), 0.8)
        alive = scheduler.masks[name].bool()
        assert not torch.equal(weight[alive], start[f"{name}.weight"][alive])  # the kept weights trained
    with torch.no_grad():
        assert float((model(x_test).argmax(1) == y_test).float().mean()) > 0.9  # dense: about 0.98


@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_a_resumed_fit_ends_exactly_where_an_uninterrupted_one_does(method: str, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 8, generator=g)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    schedule = PolynomialDecay(begin_step=0, end_step=15, frequency=2)

    def run(epochs: int, folder: str, resume: bool = False) -> tuple[nn.Module, Callback]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        pruner = (SparsityScheduler(model, UnstructuredConfig(sparsity=0.7, schedule=schedule)) if method == "magnitude"
                  else MovementPruner(model, MovementConfig(sparsity=0.7, schedule=schedule)))
        loader = torch.utils.data.DataLoader(data, batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(1))
        config = TrainConfig(epochs=epochs, device="cpu", seed=0, checkpoint_dir=tmp_path / folder, resume=resume)
        Trainer(model, config=config, callbacks=[pruner]).fit(loader)
        return model, pruner

    whole, whole_pruner = run(3, "whole")
    run(2, "split")  # interrupted after 2 epochs (12 steps, mid-schedule) ...
    resumed, resumed_pruner = run(3, "split", resume=True)  # ... and continued by a new process
    assert resumed_pruner.updates == whole_pruner.updates and whole_pruner.updates[-1] == (15, 0.7)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert sparsity_report(resumed).sparsity == pytest.approx(0.7, abs=0.01)


def test_make_permanent_removes_torch_prune_masks_and_keeps_outputs_identical() -> None:
    model = mlp()
    torch_prune.l1_unstructured(model[0], "weight", amount=0.6)
    torch_prune.random_unstructured(model[2], "weight", amount=0.3)
    torch_prune.l1_unstructured(model[2], "weight", amount=0.3)  # a PruningContainer of two masks
    x = torch.randn(5, 64)
    expected = model(x)
    report = sparsity_report(model)
    with pytest.raises(CleanAIError, match="make_permanent"):
        save_sparse(model, "/nonexistent/never-written.safetensors")

    assert make_permanent(model) is model
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert torch.equal(model(x), expected)
    assert sparsity_report(model).to_dict() == report.to_dict()
    assert report.layers[0].zeros == 64 * 48 - kept(64 * 48, 0.6)


def test_sparsity_report_is_json_and_a_table() -> None:
    model, _ = prune_unstructured(mlp(), {"sparsity": 0.75})
    report = sparsity_report(model)
    data = json.loads(json.dumps(report.to_dict()))
    assert [layer["name"] for layer in data["layers"]] == ["0", "2"]
    assert data["layers"][0]["zeros"] == 64 * 48 - kept(64 * 48, 0.75) and data["layers"][0]["shape"] == [48, 64]
    assert data["params"] == 64 * 48 + 48 * 10 and data["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert data["model_params"] == sum(p.numel() for p in model.parameters())
    assert data["model_zeros"] == data["zeros"]  # biases are not zero
    text = str(report)
    assert "global" in text and "75.0%" in text and "Linear" in text


# ---- layer types beyond Linear/Conv: HF Conv1D, recurrent and attention weights, tied and unknown weights
def test_gpt2_conv1d_weights_are_sparsified_and_the_tied_head_is_reported() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16,
                                       bos_token_id=1, eos_token_id=1)).eval()
    pruned, report = prune_unstructured(model, {"sparsity": 0.5})
    assert [layer.type for layer in report.layers] == ["Conv1D"] * 8 and report.sparsity == pytest.approx(0.5)
    assert float((pruned.transformer.h[0].mlp.c_fc.weight == 0).float().mean()) == pytest.approx(0.5)
    assert report.model_sparsity > 0.4  # the Conv1D weights are most of the model, not 1.5% of it
    left = {item.name: item.reason for item in report.left_as_is}
    assert left["lm_head"].startswith("tied to 'transformer.wte'") and "not in module_types" in left["transformer.wte"]
    assert int((pruned.transformer.wte.weight == 0).sum()) == 0 and not report.warnings


class Recurrent(nn.Module):
    """Embedding, LSTM, GRU, multi-head attention, a free weight matrix and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lstm, self.gru = nn.Embedding(50, 16), nn.LSTM(16, 24, batch_first=True), nn.GRU(24, 8)
        self.mha, self.out = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)
        self.mix = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gru(self.lstm(self.emb(x))[0])[0]
        return self.out((self.mha(h, h, h)[0] @ self.mix)[:, -1])


def test_recurrent_and_attention_weights_are_sparsified_and_a_free_weight_is_warned_about() -> None:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"no unstructured pruning rule covers the weights of <model> \(Recurrent\)"):
        pruned, report = prune_unstructured(Recurrent(), {"sparsity": 0.5})
    sparsity = {layer.name: layer.sparsity for layer in report.layers}
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "gru.weight_ih_l0", "gru.weight_hh_l0",
                 "mha.in_proj_weight", "mha.out_proj", "out"):
        assert sparsity[name] == pytest.approx(0.5, abs=0.01), name
    assert float((pruned.lstm.weight_hh_l0 == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert {(item.name, item.type) for item in report.left_as_is} == {("", "Recurrent"), ("emb", "Embedding")}
    assert int((pruned.mix == 0).sum()) == 0 and bool(torch.isfinite(pruned(torch.randint(0, 50, (2, 5)))).all())


def test_the_scheduler_masks_recurrent_weights_too() -> None:
    torch.manual_seed(0)
    model = Recurrent()
    scheduler = SparsityScheduler(model, {"sparsity": 0.5, "module_types": ["lstm", "multihead_attention"]})
    scheduler.update(0)
    assert set(scheduler.masks) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "mha.in_proj_weight"}
    with torch.no_grad():
        model.lstm.weight_hh_l0.add_(1.0)
    scheduler.apply_masks()
    assert float((model.lstm.weight_hh_l0 == 0).float().mean()) == pytest.approx(0.5, abs=0.01)

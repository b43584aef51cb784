"""Unstructured magnitude pruning: local/global masks, TF-MOT schedules, the training callback, make_permanent,
the sparsity report and the compressed sparse file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.nn.utils import prune as torch_prune

from cleanai.errors import CheckpointError, CleanAIError, UnknownNameError
from cleanai.io import save_safetensors
from cleanai.pruning import (
    ConstantSparsity, MovementConfig, MovementPruner, PolynomialDecay, SparsityScheduler, UnstructuredConfig,
    load_sparse, make_permanent, prune_unstructured, read_sparse, save_sparse, sparsity_report,
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


def test_schedules_with_end_before_begin_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"end_step \(5\) must be greater than begin_step \(10\)"):
        PolynomialDecay(begin_step=10, end_step=5)
    with pytest.raises(ValidationError, match=r"end_step \(10\) must be greater than begin_step \(10\)"):
        PolynomialDecay(begin_step=10, end_step=10)
    with pytest.raises(ValidationError, match=r"end_step \(3\) must be >= begin_step \(4\)"):
        ConstantSparsity(begin_step=4, end_step=3)


def test_polynomial_decay_follows_the_tfmot_formula() -> None:
    schedule = PolynomialDecay(initial_sparsity=0.1, begin_step=10, end_step=50, frequency=15)
    # s(t) = s_f + (s_i - s_f) (1 - clip((t - 10) / 40, 0, 1))^3 with s_i = 0.1, s_f = 0.9
    expected = {0: 0.1, 10: 0.1, 20: 0.9 - 0.8 * 0.75 ** 3, 30: 0.8, 40: 0.9 - 0.8 * 0.25 ** 3, 50: 0.9, 70: 0.9}
    for step, value in expected.items():
        assert schedule.sparsity_at(step, 0.9) == pytest.approx(value, abs=1e-12)
    assert PolynomialDecay(end_step=4, power=1).sparsity_at(1, 0.8) == pytest.approx(0.2)
    # updates at begin_step, every `frequency` steps, and at end_step (TF-MOT would skip 50 here)
    assert [t for t in range(80) if schedule.should_update(t)] == [10, 25, 40, 50]


def test_constant_sparsity_updates_from_begin_step_every_frequency_steps() -> None:
    forever = ConstantSparsity(begin_step=3, frequency=4)
    assert [t for t in range(20) if forever.should_update(t)] == [3, 7, 11, 15, 19]
    assert forever.sparsity_at(0, 0.6) == forever.sparsity_at(100, 0.6) == 0.6
    assert [t for t in range(20) if ConstantSparsity(begin_step=3, end_step=8, frequency=4).should_update(t)] == [3, 7]


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


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 32),
                         nn.ReLU(), nn.Linear(32, 10))


def test_sparse_file_is_much_smaller_at_90_percent_and_loads_back_exactly(tmp_path: Path) -> None:
    model = small_cnn()
    model.train()(torch.randn(8, 3, 8, 8))  # non-trivial BatchNorm statistics and counter
    model, _ = prune_unstructured(model.eval(), {"sparsity": 0.9})
    info = save_sparse(model, tmp_path / "sparse.safetensors")
    save_safetensors(model, tmp_path / "dense.safetensors")
    dense_file = (tmp_path / "dense.safetensors").stat().st_size

    assert info.file_bytes == (tmp_path / "sparse.safetensors").stat().st_size
    assert info.file_bytes * 4 < dense_file and info.ratio > 4
    assert info.compressed_tensors == 4 and info.tensors == len(model.state_dict())  # 3 weights + the zero BN bias
    assert info.dense_bytes == sum(t.numel() * t.element_size() for t in model.state_dict().values())

    restored = load_sparse(small_cnn(), tmp_path / "sparse.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
        assert restored.state_dict()[name].dtype == tensor.dtype
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(restored.eval()(x), model(x))


def test_dense_tensors_stay_dense_and_bf16_round_trips(tmp_path: Path) -> None:
    state = {"dense": torch.randn(40, 40), "half": torch.randn(64, 64).to(torch.bfloat16), "ids": torch.arange(7)}
    state["half"][torch.rand(64, 64) < 0.8] = 0
    info = save_sparse(state, tmp_path / "s.safetensors")
    assert info.compressed_tensors == 1
    back = read_sparse(tmp_path / "s.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in state.items())


def test_reading_a_file_that_is_not_a_sparse_checkpoint_fails_clearly(tmp_path: Path) -> None:
    save_safetensors(mlp(), tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="not a file written by save_sparse"):
        read_sparse(tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_sparse(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable sparse checkpoint"):
        read_sparse(tmp_path / "junk.safetensors")


def test_save_sparse_refuses_movement_layers_until_made_permanent(tmp_path: Path) -> None:
    model = mlp()
    MovementPruner(model, MovementConfig(sparsity=0.5, schedule=ConstantSparsity(frequency=1)))
    with pytest.raises(CleanAIError, match=r"layers \['0', '2'\] still carry masks.*make_permanent"):
        save_sparse(model, tmp_path / "m.safetensors")
    save_sparse(make_permanent(model), tmp_path / "m.safetensors")
    assert sorted(read_sparse(tmp_path / "m.safetensors")) == ["0.bias", "0.weight", "2.bias", "2.weight"]

"""The sparse weights file: much smaller at high sparsity, exact on load, and clear about what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cleanai.errors import CheckpointError, CleanAIError
from cleanai.io import save_safetensors
from cleanai.pruning import (
    ConstantSparsity, MovementConfig, MovementPruner, load_sparse, make_permanent, prune_unstructured, read_sparse,
    save_sparse,
)


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
    save_safetensors(small_cnn(), tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="not a file written by save_sparse"):
        read_sparse(tmp_path / "dense.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_sparse(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable sparse checkpoint"):
        read_sparse(tmp_path / "junk.safetensors")


def test_save_sparse_refuses_movement_layers_until_made_permanent(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    MovementPruner(model, MovementConfig(sparsity=0.5, schedule=ConstantSparsity(frequency=1)))
    with pytest.raises(CleanAIError, match=r"layers \['0', '2'\] still carry masks.*make_permanent"):
        save_sparse(model, tmp_path / "m.safetensors")
    save_sparse(make_permanent(model), tmp_path / "m.safetensors")
    assert sorted(read_sparse(tmp_path / "m.safetensors")) == ["0.bias", "0.weight", "2.bias", "2.weight"]

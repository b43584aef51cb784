"""HF Conv1D recognition without importing transformers, and its exact Linear equivalent."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from cleanai._hf import HFConv1D, conv1d_to_linear, conv1d_types


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.proj, self.plain = Conv1D(12, 8), Conv1D(8, 12), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain(self.proj(torch.relu(self.fc(x))))


def test_conv1d_is_recognised_and_other_layers_are_not() -> None:
    model = Block()
    assert isinstance(model.fc, HFConv1D) and not isinstance(model.plain, HFConv1D)
    assert not isinstance(nn.Conv1d(2, 2, 1), HFConv1D)
    assert conv1d_types(model) == {Conv1D}


def test_conv1d_to_linear_computes_the_same_function() -> None:
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(3, 5, 8)
    expected = model(x)
    assert conv1d_to_linear(model) == ["fc", "proj"]
    assert type(model.fc) is nn.Linear and model.fc.weight.shape == (12, 8)
    assert torch.allclose(model(x), expected, atol=1e-6) and not conv1d_types(model)

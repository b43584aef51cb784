"""Hugging Face helpers without importing transformers: Conv1D recognised and swapped for its exact Linear, decoders
traced without their key/value cache."""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from cleanai._hf import HFConv1D, conv1d_to_linear, conv1d_types, no_kv_cache
from cleanai.models import tiny_transformer, tiny_transformer_inputs


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


def test_no_kv_cache_runs_a_decoder_without_its_cache_and_restores_the_setting() -> None:
    model = tiny_transformer("gpt2").eval()
    inputs = tiny_transformer_inputs("gpt2")
    with torch.no_grad():
        assert model(**inputs).past_key_values is not None
        with no_kv_cache(model):
            assert model.config.use_cache is False and model(**inputs).past_key_values is None
    assert model.config.use_cache is True

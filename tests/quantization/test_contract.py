"""The quantization contract: every quantization config and preset x a zoo of tiny models either returns an
artifact close to fp32 or refuses with a clear message; no combination is silently wrong.

The zoo covers the input kinds a model takes (one Tensor, a tuple, a dict, integer token ids) and the
DenseNet pattern (a conv output feeding both a BatchNorm and a concatenation), on random weights.
Each artifact is run on fresh inputs (not calibration data) and compared with fp32 there too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanai.benchmark import BenchmarkConfig, Runner, benchmark
from cleanai.models import create_model
from cleanai.quantization import QuantConfig, QuantizationError, list_presets, quantize

# ---------------------------------------------------------------------- the zoo


class TwoInputCNN(nn.Module):
    """An image and a feature vector, passed positionally: model(image, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.features = nn.Linear(4, 8)
        self.head = nn.Linear(16, 5)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        pooled = self.relu(self.bn(self.conv(image))).mean((2, 3))
        return self.head(torch.cat([pooled, self.features(features)], 1))


class DictInputCNN(TwoInputCNN):
    """The same network taking keyword inputs: model(image=..., features=...), fed as a dict."""


class DenseNetPattern(nn.Module):
    """`y = conv(x); cat([y, relu(bn(y))])`: folding bn into conv would change what the concatenation reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head(torch.cat([y, self.relu(self.bn(y))], 1).mean((2, 3)))


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial statistics, as training would, so folding it wrongly shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return model.eval()


def _tiny_hf_bert() -> nn.Module:
    """A raw Hugging Face BertForSequenceClassification (2 layers, hidden 32): returns a ModelOutput with .logits."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config).eval()


def _batch(name: str, n: int, g: torch.Generator) -> Any:
    if name == "cnn":
        return torch.randn(n, 1, 8, 8, generator=g)
    if name == "two_input_cnn":
        return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 4, generator=g)
    if name == "dict_input_cnn":
        return {"image": torch.randn(n, 1, 8, 8, generator=g), "features": torch.randn(n, 4, generator=g)}
    if name == "densenet_pattern":
        return torch.randn(n, 3, 8, 8, generator=g)
    ids = torch.randint(1, 100, (n, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: create_model("small_cnn"),
    "two_input_cnn": lambda: _randomise_batchnorm(TwoInputCNN()),
    "dict_input_cnn": lambda: _randomise_batchnorm(DictInputCNN()),
    "densenet_pattern": lambda: _randomise_batchnorm(DenseNetPattern()),
    "tiny_bert": _tiny_hf_bert,
}


@pytest.fixture(scope="module")
def zoo() -> dict[str, tuple[nn.Module, list[Any], Any]]:
    """name -> (model, calibration batches of (inputs, targets), fresh inputs no calibration saw)."""
    out = {}
    for i, (name, build) in enumerate(BUILDERS.items()):
        torch.manual_seed(i)
        g = torch.Generator().manual_seed(100 + i)
        calib = [(_batch(name, 8, g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]
        out[name] = (build().eval(), calib, _batch(name, 6, g))
    return out


# ---------------------------------------------------------------------- every config

CONFIGS: dict[str, QuantConfig] = {
    **{f"preset {p}": QuantConfig.preset(p) for p in list_presets()},  # onnxruntime static QDQ
    "onnxruntime dynamic": QuantConfig.auto(is_static=False),
    "onnxruntime qat": QuantConfig.auto(mode="qat", reduce_range=True),
    "torch dynamic legacy": QuantConfig(backend="torch", mode="dynamic", torch_api="legacy"),
    "torch dynamic torchao": QuantConfig(backend="torch", mode="dynamic", torch_api="torchao"),
    "torch weight_only": QuantConfig(backend="torch", mode="weight_only"),
    "torch static": QuantConfig(backend="torch", mode="static", compile=False),
    "torch qat": QuantConfig(backend="torch", mode="qat", compile=False),
    "torch fp16": QuantConfig(backend="torch", mode="fp16"),
    "torch bf16": QuantConfig(backend="torch", mode="bf16"),
}

# Combinations that must be refused, and how the message says why (anything else must return a close artifact).
REFUSED: dict[tuple[str, str], str] = {}


def _sqnr(reference: torch.Tensor, output: torch.Tensor) -> float:
    noise = float((reference.double() - output.double()).square().sum())
    return float("inf") if noise == 0 else 10 * float(torch.log10(reference.double().square().sum() / noise))


def _logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs) if isinstance(inputs, tuple) \
            else model(inputs)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("model_name", list(BUILDERS))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_quantized_or_refused_never_silently_wrong(zoo: dict, model_name: str, config_name: str) -> None:
    model, calib, fresh = zoo[model_name]
    config = CONFIGS[config_name].model_copy(update={"strict": True})
    expected_refusal = REFUSED.get((model_name, config_name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations and saturation advice; the outcome is what is checked
        if expected_refusal is not None:
            with pytest.raises(QuantizationError, match=expected_refusal):
                quantize(model, config, calib=calib)
            return
        runner = quantize(model, config, calib=calib)
    check = runner.quant_check
    assert check.sqnr_db >= config.min_sqnr_db and check.held_out and check.samples >= 8
    assert _sqnr(_logits(model, fresh), runner(fresh)) >= config.min_sqnr_db - 3  # on inputs nothing saw


def test_the_benchmark_row_shows_the_check(zoo: dict) -> None:
    model, calib, _ = zoo["two_input_cnn"]
    runner: Runner = quantize(model, QuantConfig.avx2(), calib=calib)
    row = benchmark(runner, DataLoader(calib, batch_size=None), config=BenchmarkConfig(runs=2, warmup=0, throughput_runs=0, progress=False))
    assert row.quant_sqnr_db == runner.quant_check.sqnr_db > 15
    assert row.quant_top1_agreement == runner.quant_check.top1_agreement
    assert row.eval_samples == 32 and row.macs is not None  # the tuple batches were read as 4 x 8 samples

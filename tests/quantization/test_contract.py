"""The quantization contract: every quantization config and preset x a zoo of tiny models returns an artifact
close to fp32; the one exception allowed is a refusal naming its numbers where the CPU's int8 kernels saturate.
Refusals up front (no logits, a result that crashes, nothing to check on) are in test_check.py.

The zoo covers the input kinds a model takes (one Tensor, a tuple, a dict, integer token ids) and the
DenseNet pattern (a conv output feeding both a BatchNorm and a concatenation), on random weights.
Each artifact is run on fresh inputs (not calibration data) and compared with fp32 there too.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanai._batches import call_model, logits_of
from cleanai.benchmark import BenchmarkConfig, Runner, benchmark
from cleanai.models import create_model
from cleanai.quantization import QuantConfig, QuantizationError, list_presets, quantize
from cleanai.quantization.config import has_int8_dot

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


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial statistics, as training would, so folding it wrongly shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # as the densenet_pattern fixture's
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


MODELS = ("cnn", "two_input_cnn", "dict_input_cnn", "densenet_pattern", "tiny_bert")


@pytest.fixture(scope="module")
def zoo(densenet_pattern: nn.Module) -> dict[str, tuple[nn.Module, list[Any], Any]]:
    """name -> (model, calibration batches of (inputs, targets), fresh inputs no calibration saw)."""
    builders: dict[str, Callable[[], nn.Module]] = {
        "cnn": lambda: create_model("small_cnn"),
        "two_input_cnn": lambda: _randomise_batchnorm(TwoInputCNN()),
        "dict_input_cnn": lambda: _randomise_batchnorm(DictInputCNN()),
        "densenet_pattern": lambda: densenet_pattern,
        "tiny_bert": _tiny_hf_bert,
    }
    out = {}
    for i, name in enumerate(MODELS):
        torch.manual_seed(i)
        g = torch.Generator().manual_seed(100 + i)
        calib = [(_batch(name, 8, g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]
        out[name] = (builders[name]().eval(), calib, _batch(name, 6, g))
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


def _may_saturate(config: QuantConfig) -> bool:
    """Full-range uint8 x int8 in ONNX Runtime on an x86 CPU without VNNI/AMX: its kernels saturate int16 pair
    sums (Int8SaturationWarning), so such a combination may also be refused, with its numbers."""
    full_range = (config.activation_dtype, config.weight_dtype) == ("uint8", "int8") and not config.reduce_range
    return config.backend == "onnxruntime" and full_range and not has_int8_dot()


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_quantized_or_refused_never_silently_wrong(zoo: dict, model_name: str, config_name: str,
                                                  sqnr_db: Callable) -> None:
    model, calib, fresh = zoo[model_name]
    config = CONFIGS[config_name].model_copy(update={"strict": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations and saturation advice; the outcome is what is checked
        try:
            runner = quantize(model, config, calib=calib)
        except QuantizationError as exc:
            if not _may_saturate(config):
                raise
            assert re.search(r"output SQNR -?\d+\.\d dB < min_sqnr_db", str(exc))  # refused, with its numbers
            return
    check = runner.quant_check
    assert check.sqnr_db >= config.min_sqnr_db and check.samples >= 8
    assert check.held_out == (config.mode != "qat")  # QAT trains on all of calib (no train_data given)
    with torch.no_grad():
        reference = logits_of(call_model(model, fresh))
    assert sqnr_db(reference, runner(fresh)) >= config.min_sqnr_db - 3  # on inputs nothing saw


def test_the_benchmark_row_shows_the_check(zoo: dict) -> None:
    model, calib, _ = zoo["two_input_cnn"]
    runner: Runner = quantize(model, QuantConfig.avx2(), calib=calib)
    row = benchmark(runner, DataLoader(calib, batch_size=None), config=BenchmarkConfig(runs=2, warmup=0, throughput_runs=0, progress=False))
    assert row.quant_sqnr_db == runner.quant_check.sqnr_db > 15
    assert row.quant_top1_agreement == runner.quant_check.top1_agreement
    assert row.eval_samples == 32 and row.macs is not None  # the tuple batches were read as 4 x 8 samples

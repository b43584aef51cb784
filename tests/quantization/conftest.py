"""Fixtures of the quantization tests: tiny models built in-process, calibration batches, a CNN trained on real digits.

(Tests run with --import-mode=importlib, so shared helpers are handed out as fixtures.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from cleanai.runtime import Runner
from cleanai.data import load_dataset
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer


@pytest.fixture(scope="session")
def tiny_cnn() -> nn.Module:
    """SmallCNN for 1x8x8 digits: Conv-BN-ReLU x3, max-pool, global pool, Linear (24k parameters), random weights."""
    torch.manual_seed(0)
    return create_model("small_cnn").eval()


@pytest.fixture(scope="session")
def cnn_calib() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(3)]


@pytest.fixture(scope="session")
def densenet_pattern() -> nn.Module:
    """`y = conv(x); cat([y, relu(bn(y))])` on 3-channel images, BatchNorm with trained-looking statistics: folding
    the BatchNorm into the conv would change what the concatenation reads."""

    class DenseNetPattern(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.head = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.head(torch.cat([y, self.relu(self.bn(y))], 1).mean((2, 3)))

    torch.manual_seed(0)
    model = DenseNetPattern()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
        model.bn.bias.uniform_(-1, 1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval()


@pytest.fixture(scope="session")
def mlp_calib() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(3)]


@pytest.fixture(scope="session")
def tiny_bert() -> nn.Module:
    """cleanai.models.tiny_bert_classifier: 2 layers, hidden 32, character tokenizer, random weights."""
    torch.manual_seed(0)
    return create_model("tiny_bert_classifier", num_labels=3).eval()


@pytest.fixture(scope="session")
def bert_calib(tiny_bert: nn.Module) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    texts = ["what is the pin number for my account?", "book a table for two", "how do i reset my card",
             "play some jazz", "transfer 100 dollars to savings", "what's the weather like tomorrow"]
    return [(tiny_bert.encode(texts[i:i + 3]), torch.tensor([0, 1, 2])) for i in (0, 3)]


@pytest.fixture(scope="session")
def artifact_bytes() -> Callable[[Runner], int]:
    """Bytes of the deployable artifact a runner saves (what the benchmark reports as size)."""

    def measure(runner: Runner) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            return os.path.getsize(Path(runner.save(tmp)))

    return measure


@pytest.fixture(scope="session")
def sqnr_db() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """SQNR (dB) of quantized outputs against fp32 ones: 10 log10(sum ref^2 / sum (ref - out)^2)."""

    def sqnr(reference: torch.Tensor, output: torch.Tensor) -> float:
        reference, output = reference.detach().double(), output.detach().double()
        noise = float((reference - output).square().sum())
        return float("inf") if noise == 0 else 10 * torch.log10(reference.square().sum() / noise).item()

    return sqnr


@pytest.fixture(scope="session")
def digits() -> tuple[nn.Module, object]:
    """SmallCNN trained 3 epochs on scikit-learn's real digits (about 95% validation accuracy) and its loaders."""
    torch.manual_seed(0)
    splits = load_dataset("digits")
    loaders = splits.loaders(batch_size=32, eval_batch_size=128)
    model = create_model("small_cnn")
    Trainer(model, config=TrainConfig(epochs=3, lr=3e-3, progress=False, seed=0)).fit(loaders.train)
    return model.eval(), loaders

"""Fixtures of the pruning tests: tiny models built in-process, real digits data, a network trained on them.

(Tests run with --import-mode=importlib, so shared helpers are handed out as fixtures.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from cleanai.models import CifarResNet, InvertedResidual, create_model
from cleanai.models._layers import ConvBNAct


def residual_cnn() -> nn.Module:
    """CIFAR ResNet-8: one block per stage, two option-A PadShortcuts (a residual CNN)."""
    torch.manual_seed(0)
    return CifarResNet(depth=8).eval()


def depthwise_cnn() -> nn.Module:
    """Stem + three MobileNetV2 inverted-residual blocks (depthwise convs, one residual add) + linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        ConvBNAct(3, 8), InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 16, 2, 4), InvertedResidual(16, 16, 1, 4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


def tiny_bert() -> nn.Module:
    """A random BertForSequenceClassification (hidden 64, 2 layers, 4 heads, FFN 128) returning logits."""
    torch.manual_seed(0)
    return create_model("tiny_bert_classifier", num_labels=3, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128).eval()


def image_batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def text_batch(n: int = 4, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (n,), generator=g)


# name -> (builder, example inputs, calibration batches)
ZOO = {
    "residual_cnn": (residual_cnn, image_batch(2, 99)[0], [image_batch(8, s) for s in range(2)]),
    "depthwise_cnn": (depthwise_cnn, image_batch(2, 99)[0], [image_batch(8, s) for s in range(2)]),
    "tiny_bert": (tiny_bert, text_batch(2, 99)[0], [text_batch(8, s) for s in range(2)]),
}


@pytest.fixture(scope="session")
def zoo() -> dict[str, tuple[Callable[[], nn.Module], Any, list[Any]]]:
    """name -> (model builder, example inputs, two calibration batches) for residual, depthwise and BERT models."""
    return ZOO


@pytest.fixture(scope="session")
def accuracy() -> Callable[[nn.Module, torch.Tensor, torch.Tensor], float]:
    def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model.eval()(x).argmax(1) == y).float().mean())
    return _accuracy


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's real 8x8 handwritten digits as 64 features in [0, 1], split 1400 train / 397 test."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).reshape(-1, 64) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def trained_digits_mlp(digits: tuple[torch.Tensor, ...]) -> nn.Module:
    """64-256-10 ReLU MLP trained full-batch with a high learning rate (test accuracy ~0.98).

    The high rate leaves many hidden units dead (they never fire on the data), as happens in practice:
    the situation in which the direction of the coverage criterion decides everything.
    """
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def loaders():
    """Real digits splits (the embedded default data)."""
    from cleanai.data import load_dataset

    return load_dataset("digits").loaders(batch_size=64, eval_batch_size=128)


@pytest.fixture(scope="session")
def trained_cnn(loaders) -> nn.Module:
    """small_cnn (8-16-32 channels) trained 4 epochs on the real 8x8 digits (validation accuracy about 0.85)."""
    from cleanai.training import TrainConfig, Trainer

    torch.manual_seed(0)
    model = create_model("small_cnn", channels=(8, 16, 32))
    Trainer(model, config=TrainConfig(epochs=4, lr=0.01, seed=0, progress=False)).fit(loaders.train)
    return model.eval()

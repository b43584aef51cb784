"""Tiny random text classifiers and a tiny CNN with real (small) data, shared by the distillation tests."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cleanai.data import TextDataset, text_collate
from cleanai.models import TextClassifier, tiny_bert_classifier

LABELS = ["balance", "pin", "transfer"]
TEXTS = ["what is my balance", "how much money do i have", "what is the pin number for my account",
         "i forgot my pin", "send money to my mom", "transfer fifty dollars to savings",
         "balance of checking please", "change my pin code", "move money between accounts"]
TARGETS = [0, 0, 1, 1, 2, 2, 0, 1, 2]


@pytest.fixture()
def teacher() -> TextClassifier:
    torch.manual_seed(0)
    return tiny_bert_classifier(label_names=LABELS, num_hidden_layers=4, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0).eval()


@pytest.fixture()
def text_data() -> TextDataset:
    return TextDataset(TEXTS, TARGETS)


def text_loader(model: TextClassifier, data: TextDataset, batch_size: int = 4, shuffle: bool = True) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=text_collate(model.tokenizer, 32),
                      generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def image_data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 3, 8, 8, generator=g)
    return TensorDataset(x, (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long())

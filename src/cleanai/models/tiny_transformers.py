"""Tiny random-weight Hugging Face transformers, one per attention family, for tests and benchmarks.

`tiny_transformer("gpt2")` builds a 2-layer, hidden-32, 4-head model of that family from its HF config
(no files); `tiny_transformer_inputs("vit")` gives matching example inputs (keywords of `forward`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cleanai.errors import ConfigError

_TEXT = dict(vocab_size=100, num_labels=2)
# family -> (model class, config class, config fields); all 2 layers, hidden 32, 4 heads of 8, FFN 64
TINY_TRANSFORMERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert": ("BertForSequenceClassification", "BertConfig", dict(
        _TEXT, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)),
    "roberta": ("RobertaForSequenceClassification", "RobertaConfig", dict(
        _TEXT, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)),
    "distilbert": ("DistilBertForSequenceClassification", "DistilBertConfig", dict(
        _TEXT, dim=32, n_layers=2, n_heads=4, hidden_dim=64)),
    "vit": ("ViTForImageClassification", "ViTConfig", dict(
        num_labels=2, image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64)),
    "gpt2": ("GPT2ForSequenceClassification", "GPT2Config", dict(
        _TEXT, n_embd=32, n_layer=2, n_head=4, n_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
    "mobilebert": ("MobileBertForSequenceClassification", "MobileBertConfig", dict(
        _TEXT, hidden_size=32, embedding_size=16, intra_bottleneck_size=32, true_hidden_size=32,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_feedforward_networks=1)),
}


def tiny_transformer(family: str, seed: int = 0) -> nn.Module:
    """A randomly initialised tiny model of `family` (see TINY_TRANSFORMERS), in eval mode."""
    import transformers

    if family not in TINY_TRANSFORMERS:
        raise ConfigError(f"tiny_transformer: unknown family {family!r}; choose one of {', '.join(TINY_TRANSFORMERS)}")
    model_class, config_class, fields = TINY_TRANSFORMERS[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(transformers, model_class)(getattr(transformers, config_class)(**fields)).eval()


def tiny_transformer_inputs(family: str, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Example inputs for `tiny_transformer(family)`: 16x16 images for ViT, 8 token ids otherwise."""
    generator = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=generator)}
    return {"input_ids": torch.randint(5, 100, (batch, 8), generator=generator)}

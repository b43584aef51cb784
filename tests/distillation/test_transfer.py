"""Transfer sets: unlabelled edited variants of the training texts, taught by the teacher's soft targets only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset

from cleanai.distillation import (
    UNLABELLED, DistillationError, DistillConfig, TeacherLogitCache, augment_texts, distill, kd_loss, keep_layers,
)
from cleanai.training import TrainConfig

from .conftest import TEXTS, text_loader


def test_augment_texts_makes_new_unlabelled_variants_deterministically() -> None:
    variants = augment_texts(TEXTS, copies=3, seed=0)
    assert 0 < len(variants) <= 3 * len(TEXTS)
    assert set(variants.labels) == {UNLABELLED}
    assert not set(variants.texts) & set(TEXTS) and len(set(variants.texts)) == len(variants)
    vocabulary = {w for t in TEXTS for w in t.split()}
    assert all(v.split() and set(v.split()) <= vocabulary for v in variants.texts)  # edits of the given words
    assert augment_texts(TEXTS, copies=3, seed=0).texts == variants.texts
    assert augment_texts(TEXTS, copies=3, seed=1).texts != variants.texts


@pytest.mark.parametrize(("field", "value", "named"), [("copies", 0, "copies"), ("drop", 1.0, "drop")])
def test_augment_texts_refuses_no_copies_and_a_drop_that_deletes_everything(field: str, value: float,
                                                                          named: str) -> None:
    with pytest.raises(DistillationError, match=rf"{named} must .*got {value}"):
        augment_texts(TEXTS, **{field: value})


def test_kd_loss_gives_unlabelled_rows_only_the_kd_term() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    y = torch.tensor([1, UNLABELLED, 3, UNLABELLED])
    per_row = kd_loss(s, t, y, alpha=0.4, temperature=3.0, reduction="none")
    kl = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="none").sum(1)
    ce = F.cross_entropy(s[[0, 2]], y[[0, 2]], reduction="none")
    assert torch.allclose(per_row[[1, 3]], 0.6 * 9 * kl[[1, 3]], atol=1e-6)
    assert torch.allclose(per_row[[0, 2]], 0.4 * ce + 0.6 * 9 * kl[[0, 2]], atol=1e-6)


def test_distill_on_labelled_plus_transfer_texts_asks_the_teacher_about_every_variant(teacher, text_data,
                                                                                     tmp_path) -> None:
    variants = augment_texts(text_data.texts, copies=2)
    loader = text_loader(teacher, ConcatDataset([text_data, variants]))
    config = DistillConfig(cache_dir=tmp_path, train=TrainConfig(epochs=1, lr=1e-3, progress=False))
    _, history = distill(keep_layers(teacher, [0, 3]), teacher, loader, None, config)
    assert torch.isfinite(torch.tensor(history["train_loss"])).all()
    assert len(TeacherLogitCache(tmp_path, teacher)) == len(text_data) + len(variants)

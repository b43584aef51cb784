"""distill() on the CleanAI Trainer: vision and text students, refusals, the teacher's mode, the logit cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanai.distillation import (
    DistillationError, DistillConfig, TeacherLogitCache, TeacherModeWarning, distill, keep_layers, prune_vocabulary,
)
from cleanai.models import tiny_bert_classifier
from cleanai.training import TrainConfig, Trainer

from .conftest import LABELS, text_loader

FAST = dict(optimizer="adam", lr=1e-2, progress=False, device="cpu", seed=0)


def cnn(width: int, classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))


def trained_teacher(data) -> nn.Module:
    torch.manual_seed(0)
    teacher = cnn(16)
    Trainer(teacher, config=TrainConfig(epochs=15, **FAST)).fit(DataLoader(data, batch_size=16, shuffle=True))
    return teacher.eval()


def test_distill_trains_a_small_cnn_towards_the_teacher_and_leaves_both_inputs_alone(image_data) -> None:
    teacher = trained_teacher(image_data)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(1)
    student = cnn(4)
    student_state = {k: v.clone() for k, v in student.state_dict().items()}
    loader = DataLoader(image_data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    config = DistillConfig(alpha=0.0, temperature=2.0, train=TrainConfig(epochs=20, **FAST))
    distilled, history = distill(student, teacher, loader, DataLoader(image_data, batch_size=48), config)
    x = image_data.tensors[0]
    with torch.no_grad():
        agree_before = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
        agree_after = (distilled(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert history.records[-1]["train_loss"] < history.records[0]["train_loss"]
    assert agree_after > agree_before and agree_after >= 0.8
    assert distilled is not student
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in student_state.items())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    assert not any(k.startswith("teacher") for k in distilled.state_dict())


def test_a_teacher_in_training_mode_is_put_in_eval_mode_with_a_warning(image_data) -> None:
    teacher = cnn(8).train()
    with pytest.warns(TeacherModeWarning, match="eval mode"):
        distill(cnn(4), teacher, DataLoader(image_data, batch_size=16), None,
                DistillConfig(train=TrainConfig(epochs=1, **FAST)))
    assert not teacher.training


def test_teacher_and_student_with_different_output_widths_are_refused(image_data) -> None:
    with pytest.raises(DistillationError, match="teacher gives 4 logits per sample but the student 3"):
        distill(cnn(4, classes=3), cnn(8).eval(), DataLoader(image_data, batch_size=16), None,
                DistillConfig(train=TrainConfig(epochs=1, **FAST)))


def test_different_label_sets_and_vocabularies_are_refused_with_both_summarised(teacher, text_data) -> None:
    other = tiny_bert_classifier(label_names=["a", "b", "c", "d"])
    with pytest.raises(DistillationError, match=r"teacher 3 labels \(balance, pin, transfer\); student 4 labels"):
        distill(other, teacher, text_loader(teacher, text_data), None)
    small_vocab = prune_vocabulary(teacher, text_data.texts)
    with pytest.raises(DistillationError, match=rf"vocabularys?: teacher {len(teacher.tokenizer.get_vocab())} tokens"):
        distill(small_vocab, teacher, text_loader(teacher, text_data), None)


def test_distill_text_student_with_hidden_state_and_attention_losses(text_data) -> None:
    torch.manual_seed(0)
    teacher = tiny_bert_classifier(label_names=LABELS, num_hidden_layers=4, attn_implementation="eager").eval()
    student = keep_layers(teacher, [0, 3])
    config = DistillConfig(hidden_weight=1.0, attention_weight=1.0, projection="learned",
                           train=TrainConfig(epochs=3, **FAST))
    distilled, history = distill(student, teacher, text_loader(teacher, text_data), text_loader(teacher, text_data),
                                 config)
    assert distilled.config.num_hidden_layers == 2
    assert history.records[-1]["train_loss"] < history.records[0]["train_loss"]
    assert "val_accuracy" in history.records[-1]


def test_attention_distillation_needs_eager_attention(teacher, text_data) -> None:
    with pytest.raises(DistillationError, match="attn_implementation='eager'"):
        distill(keep_layers(teacher, [1]), teacher, text_loader(teacher, text_data), None,
                DistillConfig(attention_weight=1.0, train=TrainConfig(epochs=1, **FAST)))


def test_cached_teacher_logits_skip_the_teacher_in_later_epochs_and_runs(teacher, text_data, tmp_path) -> None:
    students = keep_layers(teacher, [0]), keep_layers(teacher, [1])  # copies made before the hook counts calls
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    loader = text_loader(teacher, text_data, batch_size=4)
    config = DistillConfig(cache_dir=tmp_path, train=TrainConfig(epochs=3, **FAST))
    distill(students[0], teacher, loader, None, config)
    assert len(calls) == len(loader)  # epoch 1 only: epochs 2 and 3 (reshuffled) read the cache
    files = list(tmp_path.glob("teacher-*.safetensors"))
    assert len(files) == 1

    calls.clear()
    distill(students[1], teacher, loader, None, config.model_copy(update={"train": TrainConfig(epochs=1, **FAST)}))
    assert calls == []  # a later run reads the file
    cache = TeacherLogitCache(tmp_path, teacher)
    assert len(cache) == len(text_data)
    batch = next(iter(loader))[0]
    with torch.no_grad():
        assert torch.allclose(cache.get(teacher, (), batch), teacher(**batch), atol=1e-5)
    assert cache.hits == len(batch["input_ids"]) and cache.misses == 0

    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)  # another teacher: another file, nothing read from the first
    assert TeacherLogitCache(tmp_path, teacher).path != files[0]


def test_distillation_resumes_from_its_checkpoint(teacher, text_data, tmp_path) -> None:
    train = TrainConfig(epochs=2, checkpoint_dir=tmp_path, **FAST)
    full, _ = distill(keep_layers(teacher, [0]), teacher, text_loader(teacher, text_data), None,
                      DistillConfig(train=train))
    distill(keep_layers(teacher, [0]), teacher, text_loader(teacher, text_data), None,  # stops after epoch 1
            DistillConfig(train=train.model_copy(update={"epochs": 1, "checkpoint_dir": tmp_path / "b"})))
    resumed, history = distill(keep_layers(teacher, [0]), teacher, text_loader(teacher, text_data), None, DistillConfig(
        train=train.model_copy(update={"checkpoint_dir": tmp_path / "b", "resume": True})))
    assert [r["epoch"] for r in history.records] == [1, 2]
    for key, value in full.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key

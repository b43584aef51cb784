"""DistillationTrainer (transformers.Trainer) with a tiny random BERT, including gradient accumulation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from cleanai.distillation import DistillationTrainer, DistillationTrainingArguments, kd_loss, keep_layers

from .conftest import TARGETS, TEXTS


class Encoded(Dataset):
    """Tokenised texts as the dicts transformers' default collator pads."""

    def __init__(self, tokenizer) -> None:
        enc = tokenizer(TEXTS, padding="max_length", max_length=16, truncation=True)
        self.rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                      "labels": TARGETS[i]} for i in range(len(TEXTS))]

    def __len__(self) -> int:
        return 8  # of the 9 texts: 8 divides into 2 x 4 and 1 x 8

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def arguments(tmp_path, **kwargs) -> DistillationTrainingArguments:
    return DistillationTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, seed=0,
                                         learning_rate=0.1, optim="sgd", lr_scheduler_type="constant",
                                         num_train_epochs=1, logging_strategy="no", save_strategy="no",
                                         dataloader_drop_last=False, **kwargs)


def test_compute_loss_is_kd_loss_on_student_and_teacher_logits(teacher, tmp_path) -> None:
    student = keep_layers(teacher, [0, 2]).hf_model
    trainer = DistillationTrainer(model=student, teacher_model=teacher.hf_model,
                                  args=arguments(tmp_path, alpha=0.3, temperature=3.0))
    batch = {k: torch.tensor([r[k] for r in Encoded(teacher.tokenizer).rows[:4]]) for k in ("input_ids", "attention_mask", "labels")}
    loss, outputs = trainer.compute_loss(student, batch, return_outputs=True)
    features = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        want = kd_loss(student(**features).logits, teacher.hf_model(**features).logits, batch["labels"], 0.3, 3.0)
    assert torch.allclose(loss, want, atol=1e-6) and outputs.logits.shape == (4, 3)
    summed = trainer.compute_loss(student, batch, num_items_in_batch=8)
    assert torch.allclose(summed, want / 2, atol=1e-6)  # half of the 8 accumulated samples


def test_gradient_accumulation_gives_the_large_batch_step(teacher, tmp_path) -> None:
    data = Encoded(teacher.tokenizer)
    results = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        student = keep_layers(teacher, [1, 3]).hf_model
        args = arguments(tmp_path / f"b{batch_size}", per_device_train_batch_size=batch_size,
                         gradient_accumulation_steps=accumulation, alpha=0.5, temperature=2.0)
        trainer = DistillationTrainer(model=student, teacher_model=teacher.hf_model, args=args, train_dataset=data)
        trainer.train()
        results.append({k: v.detach().clone() for k, v in student.state_dict().items()})
    start = keep_layers(teacher, [1, 3]).hf_model.state_dict()
    assert any(not torch.equal(results[0][k], start[k]) for k in start)  # the step moved the weights
    for key in results[0]:
        assert torch.allclose(results[0][key], results[1][key], atol=1e-5), key


@pytest.mark.parametrize("field, value", [("alpha", 2.0), ("temperature", 0.0)])
def test_arguments_refuse_bad_alpha_and_temperature(tmp_path, field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        arguments(tmp_path, **{field: value})

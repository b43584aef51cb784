"""Distillation for transformers users: `DistillationTrainer(transformers.Trainer)` with `DistillationTrainingArguments`.

    args = DistillationTrainingArguments(output_dir="runs/kd", alpha=0.5, temperature=2.0, report_to=[])
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=..., ...)
    trainer.train()

The loss is `kd_loss` on the student's and the frozen teacher's logits. With gradient accumulation it
follows transformers' contract: given `num_items_in_batch` (the labelled samples of the whole
accumulated batch) the loss is the per-sample sum divided by it, else the micro-batch mean, which the
Trainer then divides by the accumulation steps; both give the gradient of the large batch's mean.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from cleanai.distillation.config import DistillConfig
from cleanai.distillation.distiller import TeacherModeWarning, check_compatible
from cleanai.distillation.losses import kd_loss
from cleanai.errors import InputError


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the KD mix: `alpha` (hard-label weight, [0, 1]) and `temperature` (> 0)."""

    alpha: float = field(default=0.5, metadata={"help": "weight of the hard-label cross-entropy, in [0, 1]"})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature of the soft targets, > 0"})

    def __post_init__(self) -> None:
        DistillConfig(alpha=self.alpha, temperature=self.temperature)  # the same checks and messages as distill()
        super().__post_init__()


class DistillationTrainer(Trainer):
    """A `transformers.Trainer` whose training loss distils `teacher_model` into `model` (see the module docstring)."""

    def __init__(self, *args: Any, teacher_model: nn.Module, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, DistillationTrainingArguments):
            raise InputError(f"DistillationTrainer needs DistillationTrainingArguments (alpha, temperature), got "
                            f"{type(self.args).__name__}")
        check_compatible(self.model, teacher_model)
        if teacher_model.training:
            warnings.warn("the teacher was in training mode; DistillationTrainer put it in eval mode",
                          TeacherModeWarning, stacklevel=2)
        self.teacher = teacher_model.eval().to(self.args.device)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
        labels = inputs["labels"]
        features = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**features)
        with torch.no_grad():
            teacher_logits = self.teacher(**features).logits
        args = self.args
        if num_items_in_batch is None:
            loss = kd_loss(outputs.logits, teacher_logits, labels, args.alpha, args.temperature)
        else:
            total = kd_loss(outputs.logits, teacher_logits, labels, args.alpha, args.temperature, reduction="sum")
            loss = total / torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype)
        outputs["loss"] = loss
        return (loss, outputs) if return_outputs else loss

"""Knowledge distillation: one verb, `distill(student, teacher, train, val, DistillConfig(...))`, plus student builders.

    from cleanai.distillation import DistillConfig, distill, keep_layers
    student = keep_layers(teacher, [0, 2, 5])                        # 3 of the teacher's 6 layers, its weights
    student, history = distill(student, teacher, train_loader, val_loader,
                               DistillConfig(alpha=0.5, temperature=2.0, train=TrainConfig(epochs=3, lr=1e-4)))

`augment_texts(texts)` makes an unlabelled transfer set (edited variants the teacher alone labels; concatenate
it with the labelled training set). `kd_loss` is the loss itself; `DistillationTrainer` /
`DistillationTrainingArguments` bring it to `transformers.Trainer` users (imported on first use, as
transformers is slow to import).
"""

from __future__ import annotations

import importlib
from typing import Any

from cleanai.distillation.config import DistillationError, DistillConfig
from cleanai.distillation.distiller import TeacherLogitCache, TeacherModeWarning, check_compatible, distill
from cleanai.distillation.losses import IntermediateLoss, kd_loss, uniform_layer_map
from cleanai.distillation.students import keep_layers, prune_vocabulary, shrink_width, student_from_config
from cleanai.distillation.transfer import UNLABELLED, augment_texts

_LAZY = {"DistillationTrainer": "cleanai.distillation.hf", "DistillationTrainingArguments": "cleanai.distillation.hf"}

__all__ = [
    "DistillConfig",
    "DistillationError",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "IntermediateLoss",
    "TeacherLogitCache",
    "TeacherModeWarning",
    "UNLABELLED",
    "augment_texts",
    "check_compatible",
    "distill",
    "keep_layers",
    "kd_loss",
    "prune_vocabulary",
    "shrink_width",
    "student_from_config",
    "uniform_layer_map",
]


def __getattr__(name: str) -> Any:
    """Import the transformers-based names on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'cleanai.distillation' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)

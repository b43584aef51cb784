"""The book's distillation search over (epochs, alpha, T) on `distill`, with the teacher's logits cached."""

from __future__ import annotations

import torch
from torch import nn

from cleanai.distillation import DistillConfig
from cleanai.training import TrainConfig, Trainer
from cleanai.tuning import DISTILLATION_SPACE, TuneConfig, search_distillation


def test_the_book_space() -> None:
    assert DISTILLATION_SPACE == {"epochs": {"type": "int", "low": 5, "high": 10},
                                  "alpha": {"type": "float", "low": 0.0, "high": 1.0},
                                  "temperature": {"type": "int", "low": 2, "high": 20}}


def test_search_runs_the_teacher_only_in_the_first_trial(digit_loaders, tmp_path) -> None:
    train, val = digit_loaders
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    Trainer(teacher, config=TrainConfig(epochs=3, lr=0.01, progress=False)).fit(train)
    teacher.eval()
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    calls = []
    teacher.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    space = {"epochs": {"type": "int", "low": 1, "high": 2}, "alpha": {"type": "float", "low": 0.0, "high": 1.0},
             "temperature": {"type": "int", "low": 2, "high": 20}}
    result = search_distillation(student, teacher, train, val,
                                 DistillConfig(train=TrainConfig(lr=0.01, seed=0, progress=False)), space,
                                 TuneConfig(n_trials=3, seed=0, run_dir=tmp_path))
    assert len(result.completed()) == 3
    assert sum(calls) == 300  # the 300 training digits once, in the first trial's first epoch; then the cache
    assert list((tmp_path / "teacher-logits").glob("teacher-*.safetensors"))
    for trial in result.trials:
        assert 2 <= trial.params["temperature"] <= 20 and len(trial.intermediate_values) == trial.params["epochs"]
    best = result.get_best_models(1)[0]
    assert Trainer(best, config=TrainConfig(progress=False)).evaluate(val)["accuracy"] == result.best_value
    assert student[1].weight.grad is None  # every trial distils a copy; the caller's student is untouched

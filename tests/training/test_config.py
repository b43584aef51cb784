from __future__ import annotations

import pytest
from pydantic import ValidationError

from cleanai.training import TrainConfig


def test_config_round_trips_through_json(tmp_path) -> None:
    cfg = TrainConfig(epochs=3, optimizer="sgd", optimizer_kwargs={"momentum": 0.9, "nesterov": True},
                      loss="composite", loss_kwargs={"losses": {"cross_entropy": 1.0, "multi_margin": 0.1}},
                      scheduler="warmup_cosine", scheduler_kwargs={"warmup_steps": 10},
                      metrics=["accuracy", {"name": "top_k", "k": 2}], checkpoint_dir=tmp_path, resume=True,
                      amp=True, grad_clip_norm=1.0, l2=1e-4, early_stopping_patience=2, monitor="val_accuracy")
    assert TrainConfig.model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("optimizer", "adamx", "adamw"),
    ("loss", "crossentropy", "cross_entropy"),
    ("scheduler", "cosine_warmup", "warmup_cosine"),
    ("metrics", ["accuracy", "f1"], "macro_f1"),
])
def test_unknown_names_fail_at_load_time_with_field_and_valid_names(field: str, value: object, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected) as err:
        TrainConfig(**{field: value})
    assert field in str(err.value)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"optimizer": "sgd", "optimizer_kwargs": {"momentom": 0.9}}, "optimizer_kwargs: optimizer 'sgd' does not accept 'momentom'"),
    ({"loss_kwargs": {"smoothing": 0.1}}, "accepts: .*label_smoothing"),
    ({"scheduler": "step", "scheduler_kwargs": {"size": 2}}, "accepts: step_size"),
    ({"scheduler_kwargs": {"T_max": 2}}, "scheduler is None"),
    ({"metrics": [{"name": "top_k", "j": 1}]}, "does not accept 'j'"),
    ({"metrics": [{"k": 1}]}, "needs a 'name' key"),
    ({"resume": True}, "resume=True needs checkpoint_dir"),
    ({"lr": 0}, "lr"),
    ({"lr": float("inf")}, "finite"),
    ({"accumulation_steps": 0}, "accumulation_steps"),
    ({"device": "gpu0"}, "not a torch device"),
    ({"epoch": 3}, "epoch"),
])
def test_bad_values_are_named(kwargs: dict, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"scheduler": "step", "scheduler_kwargs": {"step_size": 0}},
     r"scheduler 'step' with scheduler_kwargs=\{'step_size': 0\} fails when used: ZeroDivisionError"),
    ({"scheduler": "reduce_on_plateau", "scheduler_kwargs": {"factor": 2.0}}, "Factor should be < 1.0"),
    ({"scheduler": "exponential", "scheduler_kwargs": {"gamma": "x"}}, "scheduler 'exponential'.*TypeError"),
    ({"optimizer": "sgd", "optimizer_kwargs": {"momentum": -1}}, "optimizer 'sgd'.*Invalid momentum value: -1"),
    ({"loss": "cross_entropy", "loss_kwargs": {"weight": [1.0, 2.0]}}, "loss 'cross_entropy'.*fails when used"),
])
def test_settings_that_break_only_when_used_fail_at_load_time(kwargs: dict, expected: str) -> None:
    """Optimizer, loss and scheduler are built on a dummy parameter and stepped, not first met after an epoch."""
    with pytest.raises(ValidationError, match=expected):
        TrainConfig(**kwargs)


def test_step_interval_schedulers_are_not_refused_for_a_horizon_only_the_run_knows() -> None:
    TrainConfig(epochs=2, scheduler="warmup_cosine", scheduler_kwargs={"warmup_steps": 500})


def test_a_reduce_on_plateau_stepped_per_batch_is_refused_at_load_time() -> None:
    with pytest.raises(ValidationError, match="scheduler_interval='step' is not possible"):
        TrainConfig(scheduler="reduce_on_plateau", scheduler_interval="step")


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"loss": "mse"}, r"loss 'mse' does not fit this model and data \(logits \(4, 10\) and targets a tensor of "
                      r"shape \(4,\)\)"),
    ({"metrics": [{"name": "top_k", "k": 20}]}, r"metric \{'name': 'top_k', 'k': 20\} does not fit.*C >= 20"),
    ({"monitor": "val_f1", "early_stopping_patience": 2},
     "monitor 'val_f1', watched by early_stopping_patience, is not produced by this run; choose one of: "
     "train_loss, val_loss, val_accuracy"),
    ({"device": "cuda:0"}, "no CUDA device"),
])
def test_check_run_names_a_setting_that_does_not_fit_the_model_and_data(kwargs: dict, expected: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cleanai.errors import ConfigError
    from cleanai.models import create_model
    from cleanai.training.config import check_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CUDA case is asked of a machine without one
    model = create_model("small_cnn").train()
    batch = (torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    check_run(TrainConfig(), model, batch)
    with pytest.raises(ConfigError, match=expected):
        check_run(TrainConfig(**kwargs), model, batch)
    assert model.training
    check_run(TrainConfig(monitor="val_f1"), model, batch)  # nothing watches the monitor: the Trainer ignores it

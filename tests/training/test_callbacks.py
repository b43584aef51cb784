from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cleanai.training import TensorBoardLogger, TrainConfig, Trainer


def test_tensorboard_logs_losses_metrics_lr_and_gradient_norms(tmp_path, make_loader, mlp) -> None:
    trainer = Trainer(mlp(), config=TrainConfig(epochs=3, log_dir=tmp_path / "tb", progress=False, device="cpu"))
    history = trainer.fit(make_loader(), make_loader(seed=1))
    assert any(isinstance(cb, TensorBoardLogger) for cb in trainer.callbacks)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/accuracy", "lr", "grad_norm/mean", "grad_norm/max", "seconds"} <= tags
    val_loss = events.Scalars("val/loss")
    assert [e.step for e in val_loss] == [1, 2, 3]
    assert [e.value for e in val_loss] == pytest.approx(history["val_loss"], rel=1e-6)

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cleanai.errors import CheckpointError
from cleanai.training import Callback, TrainConfig, Trainer, load_checkpoint
from cleanai.training.checkpoint import capture_rng_state, restore_rng_state



class DrawsAndStops(Callback):
    """Draws from NumPy's and Python's generators each epoch (as augmentation code would) and may stop."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at, self.draws = stop_at, []

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.draws.append((float(np.random.rand()), random.random()))

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        trainer.stop_training = epoch == self.stop_at


def without_seconds(records: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("own_generator", [False, True], ids=["global-rng-shuffle", "loader-generator"])
def test_two_epochs_plus_resume_plus_two_equals_four_straight(tmp_path, mlp, own_generator: bool, blobs) -> None:
    def loader() -> DataLoader:
        gen = torch.Generator().manual_seed(7) if own_generator else None
        return DataLoader(blobs(64), batch_size=16, shuffle=True, generator=gen)

    val = DataLoader(blobs(32, seed=1), batch_size=16)

    def config(folder: str, **kw: object) -> TrainConfig:
        return TrainConfig(epochs=4, lr=0.01, optimizer="adamw", scheduler="warmup_cosine",
                           scheduler_kwargs={"warmup_steps": 3}, seed=0, progress=False, device="cpu",
                           checkpoint_dir=tmp_path / folder, restore_best_weights=True, **kw)

    straight_cb = DrawsAndStops()
    straight = Trainer(mlp(dropout=0.3), callbacks=[straight_cb], config=config("straight"))
    straight.fit(loader(), val)

    first_cb = DrawsAndStops(stop_at=2)
    first = Trainer(mlp(dropout=0.3), callbacks=[first_cb], config=config("split"))
    assert len(first.fit(loader(), val)) == 2
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 2

    resumed_cb = DrawsAndStops()
    resumed = Trainer(mlp(dropout=0.3, seed=99), callbacks=[resumed_cb], config=config("split", resume=True))
    history = resumed.fit(loader(), val)

    assert without_seconds(history.records) == without_seconds(straight.history.records)
    assert (history.best_epoch, history.stop_reason) == (straight.history.best_epoch, "completed")
    assert first_cb.draws + resumed_cb.draws == straight_cb.draws
    assert resumed.global_step == straight.global_step == 16
    assert resumed.scheduler.state_dict()["last_epoch"] == straight.scheduler.state_dict()["last_epoch"]
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        torch.testing.assert_close(p, q)
    for s, t in zip(resumed.optimizer.state.values(), straight.optimizer.state.values()):
        torch.testing.assert_close(s["exp_avg"], t["exp_avg"])


def test_resume_true_without_a_checkpoint_starts_fresh(tmp_path, make_loader, mlp) -> None:
    config = TrainConfig(epochs=1, checkpoint_dir=tmp_path, resume=True, progress=False, device="cpu")
    history = Trainer(mlp(), config=config).fit(make_loader())
    assert len(history) == 1 and (tmp_path / "last.pt").is_file()


def test_resume_refuses_foreign_files_and_mismatched_runs(tmp_path, make_loader, mlp) -> None:
    foreign = tmp_path / "weights.pt"
    torch.save(mlp().state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a CleanAI training checkpoint"):
        Trainer(mlp(), config=TrainConfig(resume=foreign, progress=False)).fit(make_loader())
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(mlp(), config=TrainConfig(resume=tmp_path / "missing.pt", progress=False)).fit(make_loader())

    base = {"epochs": 1, "checkpoint_dir": tmp_path / "run", "progress": False, "device": "cpu"}
    Trainer(mlp(), config=TrainConfig(**base)).fit(make_loader())
    with pytest.raises(CheckpointError, match="saved without a scheduler"):
        Trainer(mlp(), config=TrainConfig(**base, resume=True, scheduler="cosine")).fit(make_loader())
    with pytest.raises(CheckpointError, match="torch.Size|shape"):
        Trainer(mlp(hidden=8), config=TrainConfig(**base, resume=True)).fit(make_loader())


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path) -> None:
    from cleanai.training.checkpoint import save_checkpoint

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.randn(), torch.rand(1))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.randn(), torch.rand(1)) == expected


class SnapshotEachEpoch(Callback):
    """Keeps a copy of the weights at the end of every epoch: the independent record of what 'best' was."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.stop_at = stop_at

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self.weights[epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.stop_training = epoch == self.stop_at


def test_a_resumed_run_restores_the_best_weights_seen_before_the_resume(tmp_path, mlp, blobs) -> None:
    """restore_best_weights must end on the best epoch's weights even when that epoch ran before the resume."""
    x, y = blobs(96).tensors
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    flipped = DataLoader(TensorDataset(x, (y + 1) % 3), batch_size=32)  # learning train makes val worse
    config = TrainConfig(epochs=4, lr=0.05, restore_best_weights=True, progress=False, device="cpu",
                         checkpoint_dir=tmp_path / "first")
    first = SnapshotEachEpoch(stop_at=2)
    Trainer(mlp(), callbacks=[first], config=config).fit(train, flipped)
    resumed_cb = SnapshotEachEpoch()
    resumed = Trainer(mlp(seed=5), callbacks=[resumed_cb], config=config.model_copy(update={"resume": True}))
    history = resumed.fit(train, flipped)

    snapshots = {**first.weights, **resumed_cb.weights}
    assert sorted(snapshots) == [1, 2, 3, 4]
    best = 1 + min(range(4), key=lambda i: history["val_loss"][i])
    assert best <= 2 and history.best_epoch == best  # the best epoch lies before the resume
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, snapshots[best][name])

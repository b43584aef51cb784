from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.errors import TrainingError
from cleanai.io import load_state_dict
from cleanai.training import Callback, CompositeLoss, TrainConfig, Trainer, load_checkpoint


QUIET = {"progress": False, "device": "cpu"}


def cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{**QUIET, **kw})


class GradSpySGD(torch.optim.SGD):
    """SGD that records the gradients it is asked to apply."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.norms: list[float] = []
        self.max_abs: list[float] = []

    def step(self, closure=None):  # type: ignore[override]
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))
        self.max_abs.append(max(float(g.abs().max()) for g in grads))
        return super().step(closure)


def test_fit_learns_a_separable_problem(make_loader, mlp) -> None:
    trainer = Trainer(mlp(), config=cfg(epochs=6, lr=0.05, metrics=["accuracy", "macro_f1"]))
    history = trainer.fit(make_loader(shuffle=True), make_loader(seed=1))
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["val_accuracy"][-1] >= 0.95
    assert set(history.last) == {"epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"}
    assert history.stop_reason == "completed" and trainer.global_step == 6 * 8
    result = trainer.evaluate(make_loader(seed=1))
    assert result["loss"] == pytest.approx(history["val_loss"][-1])
    assert result["accuracy"] == pytest.approx(history["val_accuracy"][-1])


def test_predict_returns_the_model_logits_for_every_sample(make_loader, mlp) -> None:
    model = mlp()
    trainer = Trainer(model, config=cfg())
    loader = make_loader(n=50, batch_size=16)
    x = torch.cat([b[0] for b in loader])
    torch.testing.assert_close(trainer.predict(loader), model(x).detach())
    inputs_only = DataLoader(x, batch_size=16)
    assert trainer.predict(inputs_only).shape == (50, 3)


class DictModel(nn.Module):
    """Takes keyword inputs and returns an object with `.logits`, like a transformers model."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.linear(features) * scale[:, None])


def test_dict_inputs_and_logits_attribute_outputs(blobs) -> None:
    data = blobs(64)
    batches = [({"features": data.tensors[0][i:i + 16], "scale": torch.ones(16)}, data.tensors[1][i:i + 16])
               for i in range(0, 64, 16)]
    trainer = Trainer(DictModel(), config=cfg(epochs=5, lr=0.1))
    history = trainer.fit(batches, batches)
    assert history["val_accuracy"][-1] >= 0.9
    assert trainer.predict(batches).shape == (64, 3)


def test_bad_batch_and_bad_model_output_are_explained(mlp) -> None:
    trainer = Trainer(mlp(), config=cfg(epochs=1))
    with pytest.raises(ValueError, match=r"\(inputs, targets\).*length 3"):
        trainer.fit([(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2))])
    bad = Trainer(nn.Sequential(nn.Linear(4, 3), nn.Flatten(0)), config=cfg(epochs=1))
    bad.model.forward = lambda x: {"out": x}  # type: ignore[method-assign]
    with pytest.raises(TypeError, match="expected a Tensor of logits"):
        bad.predict([torch.zeros(2, 4)])


@pytest.mark.parametrize(("n", "small", "k", "big"), [(64, 8, 4, 32), (40, 8, 2, 16)])
def test_gradient_accumulation_equals_one_big_batch(n: int, small: int, k: int, big: int, mlp, blobs) -> None:
    # (40, 8, 2, 16): groups of 16, 16 and a last group of one batch of 8, which is rescaled to a mean.
    data = blobs(n)
    models = []
    for batch_size, steps in ((small, k), (big, 1)):
        trainer = Trainer(mlp(), config=cfg(epochs=2, optimizer="sgd", lr=0.5, accumulation_steps=steps))
        trainer.fit(DataLoader(data, batch_size=batch_size))
        models.append(trainer.model)
        assert trainer.global_step == 2 * math.ceil(n / big)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def steep_loader(blobs) -> DataLoader:
    x, y = blobs(64).tensors
    return DataLoader(TensorDataset(x * 100, y), batch_size=16)  # huge inputs -> huge gradients


@pytest.mark.parametrize(("field", "bound", "measure"), [("grad_clip_norm", 1.0, "norms"),
                                                        ("grad_clip_value", 0.01, "max_abs")])
def test_clipping_bounds_the_applied_gradients(field: str, bound: float, measure: str, mlp, blobs) -> None:
    applied = {}
    for clip in (None, bound):
        model = mlp()
        spy = GradSpySGD(model.parameters(), lr=1e-4)
        Trainer(model, optimizer=spy, config=cfg(epochs=1, **{field: clip})).fit(steep_loader(blobs))
        applied[clip] = getattr(spy, measure)
    assert max(applied[None]) > 10 * bound  # without clipping the gradients are far above the bound
    assert max(applied[bound]) <= bound * (1 + 1e-5)


def test_history_records_gradient_norms_before_clipping(mlp, blobs) -> None:
    history = Trainer(mlp(), config=cfg(epochs=1, lr=1e-4, grad_clip_norm=1.0)).fit(steep_loader(blobs))
    assert history.last["grad_norm_max"] > 1.0 and history.last["grad_norm_mean"] <= history.last["grad_norm_max"]


@pytest.mark.parametrize(("field", "grad_of_penalty"), [("l1", lambda w, c: c * torch.sign(w)),
                                                        ("l2", lambda w, c: 2 * c * w)])
def test_l1_l2_penalties_add_their_gradient_to_the_update(field: str, grad_of_penalty, mlp, blobs) -> None:
    loader = DataLoader(blobs(16), batch_size=16)
    lr, strength = 0.1, 0.05
    start = mlp()
    after = {}
    for value in (0.0, strength):
        model = mlp()
        Trainer(model, config=cfg(epochs=1, optimizer="sgd", lr=lr, **{field: value})).fit(loader)
        after[value] = model
    for p0, plain, penalised in zip(start.parameters(), after[0.0].parameters(), after[strength].parameters()):
        torch.testing.assert_close(penalised - plain, -lr * grad_of_penalty(p0.detach(), strength),
                                   rtol=1e-4, atol=1e-6)


def test_early_stopping_stops_and_restores_the_best_weights(mlp, blobs) -> None:
    x, y = blobs(96).tensors
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    flipped = DataLoader(TensorDataset(x, (y + 1) % 3), batch_size=32)  # learning train makes val worse
    trainer = Trainer(mlp(), config=cfg(epochs=30, lr=0.05, early_stopping_patience=2, restore_best_weights=True))
    history = trainer.fit(train, flipped)
    assert history.stop_reason == "early_stopping"
    assert len(history) < 30 and len(history) == history.best_epoch + 2
    assert trainer.evaluate(flipped)["loss"] == pytest.approx(history.best_value)
    assert history.best_value == min(history["val_loss"])


def test_early_stopping_without_the_monitored_value_is_refused(make_loader, mlp) -> None:
    trainer = Trainer(mlp(), config=cfg(early_stopping_patience=2))
    with pytest.raises(ValueError, match="monitor 'val_loss'.*no val_loader.*train_loss"):
        trainer.fit(make_loader())


def test_bf16_autocast_runs_the_forward_in_bfloat16(make_loader, mlp) -> None:
    model = mlp()
    dtypes = set()
    model[0].register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    trainer = Trainer(model, config=cfg(epochs=3, lr=0.05, amp=True))
    history = trainer.fit(make_loader(), make_loader(seed=1))
    assert dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history["train_loss"][-1] < history["train_loss"][0] and history["val_accuracy"][-1] > 0.9
    assert trainer.predict(make_loader()).dtype == torch.float32


def test_schedulers_step_per_epoch_or_per_step_with_automatic_horizons(make_loader, mlp) -> None:
    cosine = Trainer(mlp(), config=cfg(epochs=4, lr=1.0, optimizer="sgd", scheduler="cosine"))
    history = cosine.fit(make_loader())
    assert history["lr"] == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])

    warm = Trainer(mlp(), config=cfg(epochs=2, optimizer="sgd", scheduler="warmup_cosine",
                                     scheduler_kwargs={"warmup_steps": 4}, accumulation_steps=3))
    warm.fit(make_loader())  # 8 batches -> 3 optimizer steps per epoch
    assert warm.scheduler.total_steps == 6 and warm.scheduler.last_epoch == warm.global_step == 6


def test_reduce_on_plateau_follows_the_monitored_validation_value(mlp, blobs) -> None:
    x, y = blobs(64).tensors
    flipped = DataLoader(TensorDataset(x, (y + 1) % 3), batch_size=32)
    trainer = Trainer(mlp(), config=cfg(epochs=4, lr=0.04, optimizer="sgd", scheduler="reduce_on_plateau",
                                        scheduler_kwargs={"patience": 0, "factor": 0.5}))
    history = trainer.fit(DataLoader(TensorDataset(x, y), batch_size=16), flipped)
    worse = [b > a for a, b in zip(history["val_loss"], history["val_loss"][1:])]
    expected = [0.04, 0.04]  # the first value only sets the plateau's reference
    for got_worse in worse[:-1]:
        expected.append(expected[-1] * (0.5 if got_worse else 1.0))
    assert any(worse) and history["lr"] == pytest.approx(expected)


def test_explicit_objects_override_the_config_and_names_are_folded_in(make_loader, mlp) -> None:
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = CompositeLoss({"cross_entropy": 1.0, "multi_margin": 0.5})
    trainer = Trainer(model, loss=loss, optimizer=sgd, scheduler=torch.optim.lr_scheduler.StepLR(sgd, 1, 0.5),
                      metrics=["accuracy", {"name": "top_k", "k": 2}], config=cfg(epochs=2))
    history = trainer.fit(make_loader(), make_loader(seed=1))
    assert trainer.optimizer is sgd and history["lr"] == pytest.approx([0.1, 0.05])
    assert "val_top_2" in history.last and trainer.config.metrics[1] == {"name": "top_k", "k": 2}
    named = Trainer(mlp(), loss="multi_margin", optimizer="adamw", optimizer_kwargs={"weight_decay": 0.1}, config=cfg())
    assert (named.config.loss, named.config.optimizer, named.config.optimizer_kwargs) == (
        "multi_margin", "adamw", {"weight_decay": 0.1})


class Recorder(Callback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[str] = []
        self.stop_at = stop_at

    def on_train_begin(self, trainer: Trainer) -> None:
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.events.append(f"epoch_begin {epoch}")

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        self.events.append(f"batch {batch} step {trainer.global_step}")

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self.events.append(f"epoch_end {epoch} {sorted(logs)}")
        if epoch == self.stop_at:
            trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        self.events.append("train_end")


def test_callbacks_see_each_hook_in_order_and_can_stop_training(mlp, blobs) -> None:
    recorder = Recorder(stop_at=2)
    loader = DataLoader(blobs(24), batch_size=8)
    history = Trainer(mlp(), callbacks=[recorder], config=cfg(epochs=5, accumulation_steps=2)).fit(loader)
    assert recorder.events[:6] == ["train_begin", "epoch_begin 1", "batch 0 step 0", "batch 1 step 1",
                                   "batch 2 step 2", "epoch_end 1 ['epoch', 'lr', 'seconds', 'train_loss']"]
    assert recorder.events[-1] == "train_end" and len(history) == 2 and history.stop_reason == "callback"


class PoisonAt(Callback):
    """Makes the weights NaN at the start of an epoch, as a diverged run would; notes the checkpoint's hash."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.digest = epoch, None

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if epoch == self.epoch:
            if trainer.checkpoint_path is not None:
                self.digest = hashlib.sha256(trainer.checkpoint_path.read_bytes()).hexdigest()
            with torch.no_grad():
                trainer.model[0].weight.fill_(float("nan"))


def test_nan_loss_raises_with_epoch_step_and_an_intact_checkpoint(tmp_path, make_loader, mlp) -> None:
    poison = PoisonAt(3)
    trainer = Trainer(mlp(), callbacks=[poison], config=cfg(epochs=5, checkpoint_dir=tmp_path))
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 3, batch 1 \(after 16 optimizer steps\)") as err:
        trainer.fit(make_loader())
    path = tmp_path / "last.pt"
    assert repr(str(path)) in str(err.value) and "end of epoch 2" in str(err.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == poison.digest
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and len(state["history"]["records"]) == 2
    weights = load_state_dict(path)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary files left behind


def test_nan_loss_without_checkpoints_says_so(make_loader, mlp) -> None:
    with pytest.raises(TrainingError, match="epoch 1, batch 1.*no checkpoint was written"):
        Trainer(mlp(), callbacks=[PoisonAt(1)], config=cfg(epochs=2)).fit(make_loader())


class PoisonBufferAt(Callback):
    """Sets part of a BatchNorm running variance to inf at the end of one epoch's last batch: the training loss,
    computed from batch statistics, stays finite, as when huge updates overflow the running statistics."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.digest = epoch, None

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.current = epoch
        if epoch == self.epoch:
            self.digest = hashlib.sha256(trainer.checkpoint_path.read_bytes()).hexdigest()

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        if self.current == self.epoch and batch == 7:
            trainer.model[1].running_var[:5] = float("inf")


def test_non_finite_buffers_with_a_finite_loss_stop_training_and_keep_the_last_good_checkpoint(
        tmp_path, make_loader) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    poison = PoisonBufferAt(3)
    trainer = Trainer(model, callbacks=[poison], config=cfg(epochs=5, checkpoint_dir=tmp_path))
    with pytest.raises(TrainingError, match=r"during epoch 3 .* 1\.running_var \(5 of 16 values inf\)") as err:
        trainer.fit(make_loader())  # 8 batches per epoch
    assert "end of epoch 2" in str(err.value)
    assert hashlib.sha256((tmp_path / "last.pt").read_bytes()).hexdigest() == poison.digest
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


def test_a_diverging_run_on_digits_is_stopped_although_its_loss_stays_finite() -> None:
    """The reproduction of issue 9: SGD at lr 1e6 overflows small_cnn's BatchNorm variances without a NaN loss."""
    from cleanai.data import load_dataset
    from cleanai.models import create_model

    torch.manual_seed(0)
    loaders = load_dataset("digits").loaders(batch_size=64)
    trainer = Trainer(create_model("small_cnn"), config=cfg(epochs=2, optimizer="sgd", lr=1e6))
    with pytest.raises(TrainingError, match=r"running_var \(\d+ of \d+ values inf\)"):
        trainer.fit(loaders.train)
    assert trainer.history.records == []  # stopped at the end of epoch 1, before recording it

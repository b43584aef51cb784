"""`Trainer`: a supervised training loop with the usual practitioner's features and little overhead.

A batch is `(inputs, targets)`; `inputs` is a Tensor (`model(inputs)`) or a dict of Tensors
(`model(**inputs)`); the model returns logits, or an object with `.logits`. The loss is called as
`loss(logits, targets)`.

Per optimizer step the loop adds one host sync (`loss.item()`, which also catches a NaN/inf loss
before it reaches the weights) and nothing else unless asked for: penalties, clipping, gradient-norm
statistics and callbacks cost only when configured. Per epoch it checks every weight and buffer for
NaN/inf (a finite loss can hide overflowed BatchNorm statistics) before the epoch is checkpointed.

Under `torchrun --nproc_per_node N` the same loop runs data-parallel: its process strategy
(`cleanai.training.distributed.DataParallel`, else `SingleProcess`, whose steps are no-ops) wraps the model
in DistributedDataParallel, splits the loaders, sums losses and metric counts over the processes, and only
rank 0 writes checkpoints and shows progress.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DistributedSampler

from cleanai._batches import batch_len, call_model, logits_of, split_batch, to_device
from cleanai._finite import nonfinite_tensors
from cleanai.errors import CheckpointError, ConfigError, TrainingError
from cleanai.io import PathLike, load_weights
from cleanai.training.callbacks import Callback, TensorBoardLogger
from cleanai.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from cleanai.training.config import MetricSpec, TrainConfig, metric_name_and_kwargs
from cleanai.training.distributed import SingleProcess, from_env
from cleanai.training.history import History
from cleanai.training.losses import get_loss
from cleanai.metrics import Metric, get_metric
from cleanai.training.optimizers import get_optimizer
from cleanai.training.schedulers import Scheduler, get_scheduler, scheduler_spec

CHECKPOINT_NAME = "last.pt"
_NO_AUTOCAST = contextlib.nullcontext()  # reusable; saves creating one per step


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains, evaluates and predicts with one model.

    Settings come from `config` (a `TrainConfig`); the keyword arguments override it. A name
    (`loss="mse"`, `optimizer="sgd"`, `scheduler="cosine"`, metric names) is folded into
    `trainer.config`, so the config still describes the run; an object (a loss module, a
    `torch.optim.Optimizer` built on the model's parameters, a scheduler built on that optimizer,
    `Metric` instances) is used as given and is not part of the config.

    Each `fit()` starts a new run: a fresh optimizer and scheduler (when given by name), epoch 0 and
    a new `History`, unless `config.resume` points at a checkpoint. So one Trainer can fine-tune a
    model again after pruning has changed its shapes.

    `distributed` shares the run between processes (`DataParallel`); by default it is taken from the
    environment: data-parallel when torchrun started this process with WORLD_SIZE > 1, else one process.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: str | Callable[..., torch.Tensor] | None = None,
        optimizer: str | torch.optim.Optimizer | None = None,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        scheduler: str | Scheduler | None = None,
        scheduler_kwargs: Mapping[str, Any] | None = None,
        metrics: Sequence[MetricSpec | Metric] | None = None,
        config: TrainConfig | None = None,
        callbacks: Iterable[Callback] = (),
        distributed: SingleProcess | None = None,
    ) -> None:
        config = config or TrainConfig()
        if isinstance(optimizer, torch.optim.Optimizer) and optimizer_kwargs:
            raise ConfigError("optimizer_kwargs apply to an optimizer given by name, not to an optimizer object")
        if scheduler is not None and not isinstance(scheduler, str) and scheduler_kwargs:
            raise ConfigError("scheduler_kwargs apply to a scheduler given by name, not to a scheduler object")
        names: dict[str, Any] = {k: v for k, v in (("loss", loss), ("optimizer", optimizer), ("scheduler", scheduler))
                                 if isinstance(v, str)}
        if optimizer_kwargs is not None:
            names["optimizer_kwargs"] = dict(optimizer_kwargs)
        if scheduler_kwargs is not None:
            names["scheduler_kwargs"] = dict(scheduler_kwargs)
        if metrics is not None and all(isinstance(m, (str, dict)) for m in metrics):
            names["metrics"] = list(metrics)
        self.config = TrainConfig.model_validate({**config.model_dump(), **names}) if names else config
        cfg = self.config

        self.distributed = distributed if distributed is not None else from_env()
        self.device = self.distributed.device(
            torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device))
        self.model = model.to(self.device)
        self._net = self.model  # what the training forward runs through (a DistributedDataParallel wrapper in DDP)
        # Mixed precision: fp16 with a GradScaler on CUDA, bf16 (no scaling needed) elsewhere.
        self._amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.loss_fn = get_loss(cfg.loss, **cfg.loss_kwargs) if loss is None or isinstance(loss, str) else loss
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        self.metrics = [m if isinstance(m, Metric) else _build_metric(m)
                        for m in (metrics if metrics is not None else cfg.metrics)]
        duplicates = {m.name for m in self.metrics if [n.name for n in self.metrics].count(m.name) > 1}
        if duplicates:
            raise ConfigError(f"metrics must have distinct names, got {sorted(duplicates)} more than once")
        self.callbacks: list[Callback] = list(callbacks)
        if cfg.log_dir is not None:
            self.callbacks.append(TensorBoardLogger(cfg.log_dir))

        self._given_optimizer = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
        self._given_scheduler = scheduler if scheduler is not None and not isinstance(scheduler, str) else None
        self.optimizer: torch.optim.Optimizer | None = self._given_optimizer
        self.scheduler: Scheduler | None = self._given_scheduler
        self.scaler: torch.amp.GradScaler | None = None
        self.history = History()
        self.epoch = 0
        self.global_step = 0
        self.stop_training = False

    # ------------------------------------------------------------------ public API

    @property
    def checkpoint_path(self) -> Path | None:
        """Where `fit` writes its checkpoint (`<checkpoint_dir>/last.pt`), or None without checkpoint_dir."""
        return None if self.config.checkpoint_dir is None else Path(self.config.checkpoint_dir) / CHECKPOINT_NAME

    def fit(self, train_loader: Iterable[Any], val_loader: Iterable[Any] | None = None,
            epochs: int | None = None) -> History:
        """Train for `epochs` (default `config.epochs`; the total, counting epochs done before a resume)."""
        cfg = self.config
        total_epochs = cfg.epochs if epochs is None else epochs
        self._start_run(train_loader, val_loader, total_epochs)
        train_loader = self._train_loader  # this process's share of it
        rng_state = self._resume(train_loader)
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            if rng_state is not None:
                restore_rng_state(rng_state)  # last, so nothing draws from the restored generators before epoch 1
            while self.epoch < total_epochs and not self.stop_training:
                self._run_epoch(train_loader, val_loader, total_epochs)
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
        self.history.stop_reason = self._stop_reason or "completed"
        if cfg.restore_best_weights and self._best_state is not None and self.history.best_epoch != self.epoch:
            self.model.load_state_dict(self._best_state)
        return self.history

    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """Mean loss (weighted by batch size) and every metric over the whole of `loader`."""
        for metric in self.metrics:
            metric.reset()
        total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
        with self._eval_mode():
            for batch in self.distributed.shard(loader, train=False):
                inputs, targets = self._split(batch)
                with self._autocast():
                    logits = self._forward(inputs)
                    loss = self.loss_fn(logits, targets)
                n = batch_len(targets)
                total += loss.detach().double() * n
                count += n
                logits = logits.float()
                for metric in self.metrics:
                    metric.update(logits, targets)
        total, count = self._sum(total, count)
        self.distributed.reduce_metrics(self.metrics)
        if count == 0:
            raise ConfigError("evaluate() got a loader that yielded no batches")
        return {"loss": float(total) / count, **{m.name: m.compute() for m in self.metrics}}

    def predict(self, loader: Iterable[Any]) -> torch.Tensor:
        """Logits for every sample of `loader` (float32, on the CPU); batches may omit targets."""
        outputs = []
        with self._eval_mode():
            for batch in loader:
                inputs = split_batch(batch)[0]
                with self._autocast():
                    outputs.append(self._forward(to_device(inputs, self.device)).float().cpu())
        if not outputs:
            raise ConfigError("predict() got a loader that yielded no batches")
        return torch.cat(outputs)

    def save_checkpoint(self, path: PathLike | None = None) -> Path:
        """Write everything a resume needs to `path` (default `checkpoint_path`), atomically. Data-parallel: call
        it on every process; rank 0 writes (with every process's RNG state)."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise ConfigError("save_checkpoint() needs a path, or config.checkpoint_dir to be set")
        if self.optimizer is None:
            raise ConfigError("save_checkpoint() needs an optimizer: call it during or after fit()")
        rng = self.distributed.gather(capture_rng_state())
        state = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "rng": rng[0],
            "loader_rng": [g.get_state() for g in _loader_generators(self._train_loader)],
            "history": self.history.to_dict(),
            "best_state": self._best_state,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "config": self.config.model_dump(mode="json"),
            **({"rank_rng": rng} if len(rng) > 1 else {}),
        }
        if self.distributed.is_main:
            save_checkpoint(target, state)
        self._last_checkpoint = (target, self.epoch)
        return target

    # ------------------------------------------------------------------ run setup

    def _start_run(self, train_loader: Iterable[Any], val_loader: Iterable[Any] | None, total_epochs: int) -> None:
        cfg = self.config
        self.model.to(self.device)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.distributed.check_metrics(self.metrics)
        self._net = self.model  # drop the previous run's wrapper before wrapping the model again
        self._net = self.distributed.wrap(self.model)
        self.optimizer = self._given_optimizer or get_optimizer(cfg.optimizer, self._params,
                                                                **{"lr": cfg.lr, **cfg.optimizer_kwargs})
        self.optimizer.zero_grad(set_to_none=True)
        self._train_loader = self.distributed.shard(train_loader, train=True)
        self.epoch = self.global_step = 0
        self.stop_training = False
        self._stop_reason: str | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._last_checkpoint: tuple[Path, int] | None = None
        mode = cfg.mode if cfg.mode != "auto" else ("min" if cfg.monitor.endswith("loss") else "max")
        produced = {"train_loss"} | ({"val_loss", *(f"val_{m.name}" for m in self.metrics)} if val_loader is not None else set())
        self.history = History(monitor=cfg.monitor if cfg.monitor in produced else None, mode=mode)
        self.scheduler, self._interval = self._build_scheduler(self._train_loader, total_epochs, mode)
        needs_monitor = [what for what, on in (("early_stopping_patience", cfg.early_stopping_patience),
                                               ("restore_best_weights", cfg.restore_best_weights),
                                               ("reduce_on_plateau", isinstance(self.scheduler, ReduceLROnPlateau)))
                         if on]
        if needs_monitor and self.history.monitor is None:
            hint = " (no val_loader was given)" if val_loader is None else ""
            raise ConfigError(f"monitor {cfg.monitor!r}, needed by {', '.join(needs_monitor)}, is not produced by "
                             f"this run{hint}; choose one of: {', '.join(sorted(produced))}")
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp and self.device.type == "cuda" else None
        self._track_grad_norm = cfg.grad_clip_norm is not None or cfg.log_dir is not None
        self._grad_norms: list[torch.Tensor] = []
        self._batch_callbacks = [cb for cb in self.callbacks if type(cb).on_batch_end is not Callback.on_batch_end]

    def _build_scheduler(self, train_loader: Iterable[Any], total_epochs: int, mode: str) -> tuple[Scheduler | None, str]:
        cfg = self.config
        if self._given_scheduler is not None:
            if getattr(self._given_scheduler, "optimizer", None) is not self.optimizer:
                raise ConfigError("a scheduler object must be built on the optimizer object passed to the Trainer; "
                                 "or give the scheduler by name")
            return self._given_scheduler, cfg.scheduler_interval or "epoch"
        if cfg.scheduler is None:
            return None, "epoch"
        spec = scheduler_spec(cfg.scheduler)
        interval = cfg.scheduler_interval or spec.interval
        kwargs = dict(cfg.scheduler_kwargs)
        if isinstance(spec.factory, type) and issubclass(spec.factory, ReduceLROnPlateau):
            if interval != "epoch":
                raise ConfigError(f"scheduler {cfg.scheduler!r} follows the monitored value, so it steps per epoch; "
                                 f"scheduler_interval={interval!r} is not possible")
            kwargs.setdefault("mode", mode)
        if spec.horizon is not None and spec.horizon not in kwargs:
            kwargs[spec.horizon] = total_epochs if interval == "epoch" else total_epochs * self._steps_per_epoch(train_loader)
        return get_scheduler(cfg.scheduler, self.optimizer, **kwargs), interval

    def _steps_per_epoch(self, loader: Iterable[Any]) -> int:
        try:
            batches = len(loader)  # type: ignore[arg-type]
        except TypeError:
            spec = scheduler_spec(self.config.scheduler or "")
            raise ConfigError(f"scheduler {self.config.scheduler!r} is stepped per optimizer step and needs its "
                             f"horizon, but the train loader has no len(); pass scheduler_kwargs="
                             f"{{{spec.horizon!r}: <total optimizer steps>}}") from None
        return math.ceil(batches / self.config.accumulation_steps)

    def _resume(self, train_loader: Iterable[Any]) -> dict[str, Any] | None:
        """Load the checkpoint `config.resume` names; return its RNG state, or seed a fresh run."""
        cfg = self.config
        path = self.checkpoint_path if cfg.resume is True else (Path(cfg.resume) if cfg.resume else None)
        if path is None or (cfg.resume is True and not path.is_file()):
            if cfg.seed is not None:
                seed_everything(cfg.seed + self.distributed.rank)  # each process its own dropout/augmentation draws
            return None
        state = load_checkpoint(path)
        load_weights(self.model, state["model"])
        assert self.optimizer is not None
        self.optimizer.load_state_dict(state["optimizer"])
        for what, own, saved in (("scheduler", self.scheduler, state["scheduler"]), ("GradScaler", self.scaler, state["scaler"])):
            if (own is None) != (saved is None):
                raise CheckpointError(f"{str(path)!r} was saved {'with' if saved is not None else 'without'} a "
                                      f"{what} but this run has {'one' if own is not None else 'none'}; "
                                      f"resume with the same configuration")
            if own is not None:
                own.load_state_dict(saved)
        if len(state["callbacks"]) != len(self.callbacks):
            raise CheckpointError(f"{str(path)!r} holds states of {len(state['callbacks'])} callbacks but this "
                                  f"Trainer has {len(self.callbacks)}; resume with the same callbacks")
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)
        for generator, gen_state in zip(_loader_generators(train_loader), state["loader_rng"]):
            generator.set_state(gen_state)
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.history = History.from_dict(state["history"])
        self._best_state = state["best_state"]
        self._last_checkpoint = (path, self.epoch)
        return self._rank_rng(path, state)

    def _rank_rng(self, path: Path, state: dict[str, Any]) -> dict[str, Any]:
        """This process's RNG state from a checkpoint; one of another world size resumes, but not bit for bit."""
        states = state.get("rank_rng") or [state["rng"]]
        if len(states) != self.distributed.world_size:
            warnings.warn(f"{str(path)!r} was saved by {len(states)} process(es) and is resumed by "
                          f"{self.distributed.world_size}: weights, optimizer and schedule continue, but dropout and "
                          "augmentation do not draw what an uninterrupted run would", stacklevel=3)
        return states[self.distributed.rank % len(states)]

    # ------------------------------------------------------------------ the loop

    def _run_epoch(self, train_loader: Iterable[Any], val_loader: Iterable[Any] | None, total_epochs: int) -> None:
        cfg = self.config
        self.epoch += 1
        epoch = self.epoch
        start = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])  # type: ignore[union-attr]
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        self.model.train()
        sampler = getattr(train_loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch - 1)
        loss_sum, count = self._sum(*self._train_batches(self._progress(train_loader, epoch, total_epochs), epoch))
        self.distributed.sync_buffers(self.model)
        bad = nonfinite_tensors(self.model)  # a finite loss can hide overflowed weights or BatchNorm statistics
        if bad:
            raise self._divergence_error(f"during epoch {epoch} weights or buffers became NaN or inf, though the loss "
                                         f"stayed finite: {', '.join(bad)}",
                                         "training stopped before they were checkpointed")
        logs: dict[str, float] = {"epoch": epoch, "train_loss": loss_sum / count if count else float("nan")}
        if val_loader is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(val_loader).items()})
        logs["lr"] = lr
        if self._grad_norms:
            norms = torch.stack(self._grad_norms).float()
            logs["grad_norm_mean"], logs["grad_norm_max"] = float(norms.mean()), float(norms.max())
            self._grad_norms.clear()
        logs["seconds"] = time.perf_counter() - start
        self.history.records.append(logs)

        self._track_best(logs)
        if self.scheduler is not None and self._interval == "epoch":
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(logs[self.history.monitor])  # type: ignore[index]
            else:
                self.scheduler.step()
        patience = cfg.early_stopping_patience
        if patience is not None and epoch - (self.history.best_epoch or 0) >= patience:
            self.stop_training, self._stop_reason = True, "early_stopping"
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, logs)
        self.stop_training = bool(self.distributed.all_reduce(torch.tensor(int(self.stop_training)), "max"))
        if self.stop_training and self._stop_reason is None:
            self._stop_reason = "callback"
        if self._show_progress():
            from tqdm.auto import tqdm

            tqdm.write(f"epoch {epoch}/{total_epochs}  " + "  ".join(
                f"{k} {v:.4g}" for k, v in logs.items() if k != "epoch"), file=sys.stderr)
        if cfg.checkpoint_dir is not None and (epoch % cfg.checkpoint_every == 0 or self.stop_training
                                               or epoch == total_epochs):
            self.save_checkpoint()

    def _train_batches(self, batches: Iterable[Any], epoch: int) -> tuple[float, int]:
        """One pass over the training batches; returns (sum of batch loss x batch size, sample count)."""
        k = self.config.accumulation_steps
        penalised = bool(self.config.l1 or self.config.l2)
        loss_sum, count, pending = 0.0, 0, 0
        for i, (batch, last) in enumerate(_mark_last(batches)):
            inputs, targets = self._split(batch)
            stepping = pending + 1 == k or last
            with self.distributed.no_sync(self._net, skip=not stepping):  # gradients are exchanged once per step
                with self._autocast():
                    loss = self.loss_fn(logits_of(call_model(self._net, inputs)), targets)
                value = loss.item()
                if not math.isfinite(value):
                    raise self._divergence_error(f"loss became {value} at epoch {epoch}, batch {i + 1}",
                                                 "training stopped before this update reached the weights")
                n = batch_len(targets)
                loss_sum += value * n
                count += n
                if penalised:
                    loss = loss + self._penalty()
                if k > 1:
                    loss = loss / k
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            pending += 1
            if stepping:
                if pending < k:  # the epoch's last group is smaller: rescale so its gradient is a mean too
                    for p in self._params:
                        if p.grad is not None:
                            p.grad.mul_(k / pending)
                self._optimizer_step()
                pending = 0
            for cb in self._batch_callbacks:
                cb.on_batch_end(self, i, value)
        return loss_sum, count

    def _optimizer_step(self) -> None:
        cfg, optimizer = self.config, self.optimizer
        assert optimizer is not None
        if self.scaler is not None and (self._track_grad_norm or cfg.grad_clip_value is not None):
            self.scaler.unscale_(optimizer)
        if cfg.grad_clip_value is not None:
            nn.utils.clip_grad_value_(self._params, cfg.grad_clip_value)
        if cfg.grad_clip_norm is not None:
            self._grad_norms.append(nn.utils.clip_grad_norm_(self._params, cfg.grad_clip_norm))
        elif self._track_grad_norm:
            self._grad_norms.append(nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None]))
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and self._interval == "step":
            self.scheduler.step()

    def _penalty(self) -> torch.Tensor:
        """l1 * sum|w| + l2 * sum w^2 over all trainable parameters (so L2 adds 2*l2*w to the gradient)."""
        cfg = self.config
        total = torch.zeros((), device=self.device)
        if cfg.l1:
            total = total + cfg.l1 * sum(p.abs().sum() for p in self._params)
        if cfg.l2:
            total = total + cfg.l2 * sum(p.pow(2).sum() for p in self._params)
        return total

    def _track_best(self, logs: dict[str, float]) -> None:
        history = self.history
        if history.monitor is None:
            return
        value = logs[history.monitor]
        best = history.best_value
        if best is None or (value < best if history.mode == "min" else value > best):
            history.best_value, history.best_epoch = value, self.epoch
            if self.config.restore_best_weights:
                self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _divergence_error(self, what: str, stopped: str) -> TrainingError:
        if self._last_checkpoint is not None:
            path, at = self._last_checkpoint
            where = f"the last good checkpoint is {str(path)!r} (end of epoch {at})"
        elif self.config.checkpoint_dir is not None:
            where = "no checkpoint had been written yet"
        else:
            where = "no checkpoint was written (set checkpoint_dir to keep one)"
        return TrainingError(
            f"{what} (after {self.global_step} optimizer steps); {stopped}, and {where}. "
            "A lower lr, grad_clip_norm or amp=False may help."
        )

    # ------------------------------------------------------------------ helpers

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.config.amp:
            return _NO_AUTOCAST
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    @contextlib.contextmanager
    def _eval_mode(self) -> Any:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def _split(self, batch: Any) -> tuple[Any, Any]:
        inputs, targets = split_batch(batch, require_targets=True)
        return to_device(inputs, self.device), to_device(targets, self.device)

    def _forward(self, inputs: Any) -> torch.Tensor:
        return logits_of(call_model(self.model, inputs))

    def _show_progress(self) -> bool:
        return self.config.progress and self.distributed.is_main and sys.stderr.isatty()

    def _sum(self, total: float | torch.Tensor, count: int) -> tuple[float, int]:
        """A (sum, sample count) pair added up over the processes."""
        both = self.distributed.all_reduce(torch.tensor([float(total), count], dtype=torch.float64))
        return float(both[0]), int(both[1])

    def _progress(self, loader: Iterable[Any], epoch: int, total_epochs: int) -> Iterable[Any]:
        if not self._show_progress():
            return loader
        from tqdm.auto import tqdm

        return tqdm(loader, desc=f"epoch {epoch}/{total_epochs}", leave=False, dynamic_ncols=True, file=sys.stderr)


def _build_metric(spec: MetricSpec) -> Metric:
    name, kwargs = metric_name_and_kwargs(spec)
    return get_metric(name, **kwargs)


def _mark_last(batches: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """Yield (batch, is_last), looking one batch ahead, so the epoch's last accumulation group steps in time."""
    it = iter(batches)
    try:
        current = next(it)
    except StopIteration:
        return
    for upcoming in it:
        yield current, False
        current = upcoming
    yield current, True


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch.Generators a DataLoader shuffles with (its own and its sampler's), if any."""
    found: list[torch.Generator] = []
    for g in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found

"""`TrainConfig`: every training setting as one validated, JSON-serialisable object."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai._batches import call_model, logits_of, split_batch
from cleanai._validate import describe
from cleanai.errors import ConfigError
from cleanai.registry import check_kwargs
from cleanai.training.losses import LOSSES
from cleanai.metrics import METRICS
from cleanai.training.optimizers import OPTIMIZERS
from cleanai.training.schedulers import SCHEDULERS

MetricSpec = str | dict[str, Any]


class TrainConfig(BaseModel):
    """Settings of one training run. Names refer to the optimizer/loss/scheduler/metric registries.

    - `lr` is passed to the optimizer; `optimizer_kwargs` may override it. Metrics are names or
      `{"name": "top_k", "k": 3}`.
    - `scheduler_interval` overrides the scheduler's default stepping ("epoch" or "step"); a horizon
      argument left out (`T_max`, `total_steps`, ...) is filled in from the run length.
    - `amp`: autocast to bf16 on CPU, fp16 with a GradScaler on CUDA.
    - `grad_clip_value` clips each gradient element, then `grad_clip_norm` the total L2 norm.
    - `accumulation_steps`: the loss is divided by it and the optimizer steps every that many
      batches (the epoch's last, smaller group is rescaled to a mean).
    - `l1`, `l2` add `l1 * sum|w| + l2 * sum w^2` over all trainable parameters to the loss.
    - `monitor` (a History key: `train_loss`, `val_loss` or `val_<metric>`) is the value that early
      stopping, `restore_best_weights` (load the best epoch's weights when fit ends) and
      `reduce_on_plateau` watch; `mode="auto"` minimises keys ending in `loss`, maximises others.
    - `checkpoint_dir` receives `last.pt` every `checkpoint_every` epochs and at the end;
      `resume=True` continues from it if it exists (else starts fresh), a path resumes from that file.
    - `progress` shows a tqdm bar only when stderr is a terminal; `log_dir` enables TensorBoard.
    - `seed` seeds Python, NumPy and torch when `fit` starts (a resume restores the saved RNG states
      instead); the model already exists then, so call `seed_everything(seed)` before building it to
      fix its initial weights too (the CLI does). `device="auto"` picks CUDA when available.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Annotated[str, AfterValidator(OPTIMIZERS.known)] = "adam"
    optimizer_kwargs: dict[str, Any] = Field(default_factory=dict)
    loss: Annotated[str, AfterValidator(LOSSES.known)] = "cross_entropy"
    loss_kwargs: dict[str, Any] = Field(default_factory=dict)
    scheduler: Annotated[str, AfterValidator(SCHEDULERS.known)] | None = None
    scheduler_kwargs: dict[str, Any] = Field(default_factory=dict)
    scheduler_interval: Literal["epoch", "step"] | None = None
    metrics: list[MetricSpec] = Field(default_factory=lambda: ["accuracy"])

    amp: bool = False
    grad_clip_norm: float | None = Field(None, gt=0)
    grad_clip_value: float | None = Field(None, gt=0)
    accumulation_steps: int = Field(1, ge=1)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)

    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    early_stopping_patience: int | None = Field(None, ge=1)
    restore_best_weights: bool = False

    checkpoint_dir: Path | None = None
    checkpoint_every: int = Field(1, ge=1)
    resume: bool | Path = False
    log_dir: Path | None = None
    progress: bool = True
    seed: int | None = None
    device: str = "auto"

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[MetricSpec]) -> list[MetricSpec]:
        for spec in v:
            name, kwargs = metric_name_and_kwargs(spec)
            _check_kwargs("metrics", "metric", name, METRICS.get(name), kwargs)
        return v

    @field_validator("lr", "l1", "l2", "grad_clip_norm", "grad_clip_value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ConfigError(f"must be a finite number, got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _valid_device(cls, v: str) -> str:
        if v != "auto":
            try:
                torch.device(v)
            except RuntimeError:
                raise ConfigError(f"device {v!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        _check_kwargs("optimizer_kwargs", "optimizer", self.optimizer, OPTIMIZERS.get(self.optimizer),
                      self.optimizer_kwargs, positional=1)
        _check_kwargs("loss_kwargs", "loss", self.loss, LOSSES.get(self.loss), self.loss_kwargs)
        if self.scheduler is not None:
            _check_kwargs("scheduler_kwargs", "scheduler", self.scheduler, SCHEDULERS.get(self.scheduler).factory,
                          self.scheduler_kwargs, positional=1)
        elif self.scheduler_kwargs:
            raise ConfigError(f"scheduler_kwargs {self.scheduler_kwargs} given but scheduler is None; "
                             f"choose one of: {', '.join(SCHEDULERS.names())}")
        if (self.scheduler is not None and self.scheduler_interval == "step"
                and SCHEDULERS.get(self.scheduler).factory is ReduceLROnPlateau):
            raise ConfigError(f"scheduler {self.scheduler!r} follows the monitored value, which exists once per epoch; "
                             "scheduler_interval='step' is not possible (leave it unset)")
        if self.resume is True and self.checkpoint_dir is None:
            raise ConfigError("resume=True needs checkpoint_dir (the folder holding last.pt); "
                             "or set resume to a checkpoint file path")
        _build_once(self)
        return self


def _build_once(cfg: TrainConfig) -> None:
    """Build the optimizer, loss and scheduler on a dummy parameter and step them twice, so a setting that
    only breaks when used (`scheduler_kwargs: {step_size: 0}`) fails at load time, not after an epoch."""
    param = torch.nn.Parameter(torch.zeros(1))
    what = f"optimizer {cfg.optimizer!r} with lr={cfg.lr}, optimizer_kwargs={cfg.optimizer_kwargs}"
    try:
        optimizer = OPTIMIZERS.create(cfg.optimizer, [param], **{"lr": cfg.lr, **cfg.optimizer_kwargs})
        what = f"loss {cfg.loss!r} with loss_kwargs={cfg.loss_kwargs}"
        LOSSES.create(cfg.loss, **cfg.loss_kwargs)
        if cfg.scheduler is None:
            return
        what = f"scheduler {cfg.scheduler!r} with scheduler_kwargs={cfg.scheduler_kwargs}"
        spec = SCHEDULERS.get(cfg.scheduler)
        kwargs = dict(cfg.scheduler_kwargs)
        if spec.horizon is not None:  # the Trainer fills it from the run length: any length that fits will do
            kwargs.setdefault(spec.horizon, cfg.epochs * (1 if (cfg.scheduler_interval or spec.interval) == "epoch"
                                                          else 1_000_000))
        scheduler = spec(optimizer, **kwargs)
        for _ in range(2):
            param.grad = torch.zeros_like(param)
            optimizer.step()
            scheduler.step(0.0) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()
    except Exception as exc:  # whatever the factory raises, the settings are what is wrong
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{what} fails when used: {type(exc).__name__}: {reason}") from None


def check_run(config: TrainConfig, model: nn.Module, batch: Any, *, has_val: bool = True) -> None:
    """Before any epoch: the device exists, the loss and metrics accept the model's logits and the targets of
    one batch, and the monitored value is produced when something watches it. Raises `ConfigError`."""
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={config.device!r} but this torch has no CUDA device; use 'auto' or 'cpu'")
    inputs, targets = split_batch(batch)
    was_training = model.training
    try:
        with torch.no_grad():
            logits = logits_of(call_model(model.eval(), inputs))
    finally:
        model.train(was_training)
    shapes = f"logits {tuple(logits.shape)} and targets {describe(targets)}"
    try:
        with warnings.catch_warnings():  # torch warns before it fails on shapes; the error below says it once
            warnings.simplefilter("ignore")
            LOSSES.create(config.loss, **config.loss_kwargs)(logits, targets)
    except Exception as exc:  # the loss's own complaint says what it expected
        raise ConfigError(f"loss {config.loss!r} does not fit this model and data ({shapes}): "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    names = []
    for spec in config.metrics:
        name, kwargs = metric_name_and_kwargs(spec)
        metric = METRICS.create(name, **kwargs)
        try:
            metric.reset()
            metric.update(logits, targets)
            metric.compute()
        except Exception as exc:
            raise ConfigError(f"metric {spec!r} does not fit this model and data ({shapes}): "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        names.append(metric.name)
    produced = ["train_loss", *(["val_loss", *(f"val_{n}" for n in names)] if has_val else [])]
    watchers = [what for what, on in (("early_stopping_patience", config.early_stopping_patience),
                                      ("restore_best_weights", config.restore_best_weights),
                                      ("reduce_on_plateau", config.scheduler is not None
                                       and SCHEDULERS.get(config.scheduler).factory is ReduceLROnPlateau)) if on]
    if watchers and config.monitor not in produced:
        raise ConfigError(f"monitor {config.monitor!r}, watched by {', '.join(watchers)}, is not produced by this "
                          f"run; choose one of: {', '.join(produced)}")


def _check_kwargs(field: str, kind: str, name: str, factory: Any, kwargs: dict[str, Any], positional: int = 0) -> None:
    """Check only the given names (the Trainer supplies params, optimizer and horizons later)."""
    try:
        check_kwargs(kind, name, factory, kwargs, positional=(None,) * positional, complete=False)
    except TypeError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def metric_name_and_kwargs(spec: MetricSpec) -> tuple[str, dict[str, Any]]:
    """Split a metric spec: `"accuracy"` or `{"name": "top_k", "k": 3}`."""
    if isinstance(spec, str):
        return spec, {}
    if "name" not in spec:
        raise ConfigError(f"metric spec {spec!r} needs a 'name' key, e.g. {{'name': 'top_k', 'k': 3}}")
    kwargs = dict(spec)
    return kwargs.pop("name"), kwargs

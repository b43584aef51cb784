"""Iterative prune -> fine-tune: `prune()` whose between-step callback fine-tunes with the `Trainer`.

At every one of `PruneConfig.iterative_steps` steps the model is evaluated before pruning, right
after pruning and after fine-tuning, so the history shows how much each step costs and how much
fine-tuning wins back. The pruning itself is `prune()`'s; the training is `Trainer.fit()`'s (a
fresh optimizer per step, so the new, smaller shapes are what it optimises).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch_pruning as tp
from pydantic import BaseModel, ConfigDict
from torch import nn

from cleanai._batches import Batch, model_device
from cleanai.pruning.report import PruneReport
from cleanai.pruning.structured import PruneConfig, prune
from cleanai.training import TrainConfig, Trainer
from cleanai.errors import ConfigError

if TYPE_CHECKING:
    from cleanai.distillation import DistillConfig


class IterativeStep(BaseModel):
    """Metrics of one step: before its pruning, right after it, and after its fine-tuning (None without one)."""

    model_config = ConfigDict(extra="forbid")

    step: int
    params: int
    macs: int
    before: dict[str, float]
    after_prune: dict[str, float]
    after_finetune: dict[str, float] | None = None
    prune_seconds: float
    finetune_seconds: float = 0.0
    finetune_history: dict[str, Any] | None = None  # the Trainer's History of this step


class IterativeHistory(BaseModel):
    """What `prune_and_finetune` measured: the unpruned baseline and one `IterativeStep` per step."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    baseline: dict[str, float]
    params_before: int
    macs_before: int
    steps: list[IterativeStep] = []

    @property
    def final(self) -> dict[str, float]:
        """Metrics of the model that is returned (after the last fine-tune, or the last prune without one)."""
        if not self.steps:
            return self.baseline
        last = self.steps[-1]
        return last.after_finetune if last.after_finetune is not None else last.after_prune

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def __str__(self) -> str:
        m = self.metric
        lines = [f"{'step':>4} {'params':>11} {'MACs':>14} {'before':>8} {'pruned':>8} {'tuned':>8}",
                 f"{0:>4} {self.params_before:>11,} {self.macs_before:>14,} {self.baseline[m]:>8.4f} {'':>8} {'':>8}"]
        for s in self.steps:
            tuned = f"{s.after_finetune[m]:>8.4f}" if s.after_finetune is not None else f"{'-':>8}"
            lines.append(f"{s.step:>4} {s.params:>11,} {s.macs:>14,} {s.before[m]:>8.4f} "
                         f"{s.after_prune[m]:>8.4f} {tuned}")
        return "\n".join(lines)


def prune_and_finetune(model: nn.Module, example_inputs: Any, config: PruneConfig | dict[str, Any] | None,
                       train_loader: Iterable[Batch], val_loader: Iterable[Batch],
                       train_config: TrainConfig | dict[str, Any] | None = None, calib: Iterable[Batch] | None = None,
                       *, criterion: tp.importance.Importance | None = None, metric: str = "accuracy",
                       teacher: nn.Module | None = None,
                       distill_config: DistillConfig | None = None) -> tuple[nn.Module, PruneReport, IterativeHistory]:
    """Prune in `config.iterative_steps` steps, fine-tuning for `train_config` (the budget per step) after each.

    `val_loader` is evaluated (whole) before pruning and twice per step; `metric` is the key the
    summary table shows (any metric of `train_config.metrics`). Without `train_config` the steps
    are only measured, not fine-tuned. `calib` defaults to `train_loader` for data-driven criteria.
    Evaluation and fine-tuning run on the device the model is on; TensorBoard logs and checkpoints
    of step k go to `step<k>` subfolders. With a `teacher` (e.g. the unpruned model) each fine-tune is
    `cleanai.distillation.distill` instead of cross-entropy alone, with `distill_config`'s alpha, temperature
    and intermediate losses (its `train` is replaced by `train_config`). Returns (model, report, history).
    """
    config = config if isinstance(config, PruneConfig) else PruneConfig.model_validate(config or {})
    tune = None if train_config is None else (
        train_config if isinstance(train_config, TrainConfig) else TrainConfig.model_validate(train_config))
    if tune is not None and tune.resume:
        raise ConfigError("train_config.resume must be False: every step fine-tunes a model of new shapes, "
                         "which no earlier checkpoint fits")
    device = str(model_device(model))
    eval_config = (tune or TrainConfig()).model_copy(update={"device": device, "log_dir": None, "checkpoint_dir": None})

    def step_config(step: int) -> TrainConfig:
        """The fine-tune settings of `step`: on the model's device, logs and checkpoints in a `step<k>` subfolder."""
        assert tune is not None
        update: dict[str, Any] = {"device": device}  # where prune() keeps its example inputs
        update.update({k: getattr(tune, k) / f"step{step}" for k in ("log_dir", "checkpoint_dir")
                       if getattr(tune, k) is not None})
        return tune.model_copy(update=update)

    def evaluate(target: nn.Module) -> dict[str, float]:
        scores = Trainer(target, config=eval_config).evaluate(val_loader)
        if metric not in scores:
            raise ConfigError(f"metric {metric!r} is not measured; train_config.metrics gives: {', '.join(scores)}")
        return scores

    baseline = evaluate(model)
    steps: list[IterativeStep] = []

    def after_step(step: int, pruned: nn.Module, report: PruneReport) -> None:
        record = report.steps[-1]
        before = baseline if not steps else (steps[-1].after_finetune or steps[-1].after_prune)
        entry = IterativeStep(step=step, params=record.params, macs=record.macs, before=before,
                              after_prune=evaluate(pruned), prune_seconds=record.seconds)
        if tune is not None:
            start = time.perf_counter()
            if teacher is None:
                fitted = Trainer(pruned, config=step_config(step)).fit(train_loader, val_loader)
            else:
                from cleanai.distillation import DistillConfig, distill

                kd = (distill_config or DistillConfig()).model_copy(update={"train": step_config(step), "inplace": True})
                fitted = distill(pruned, teacher, train_loader, val_loader, kd)[1]
            entry.finetune_history = fitted.to_dict()
            entry.finetune_seconds = time.perf_counter() - start
            entry.after_finetune = evaluate(pruned)
        steps.append(entry)

    pruned, report = prune(model, example_inputs, config, calib if calib is not None else train_loader,
                           criterion=criterion, callback=after_step)
    history = IterativeHistory(metric=metric, baseline=baseline, params_before=report.params_before,
                               macs_before=report.macs_before, steps=steps)
    return pruned, report, history

"""Training: `Trainer` + `TrainConfig`, and registries of optimizers, losses, schedulers and metrics.

    from cleanai.training import Trainer, TrainConfig
    trainer = Trainer(model, config=TrainConfig(epochs=5, optimizer="sgd", lr=0.1,
                                                optimizer_kwargs={"momentum": 0.9}, scheduler="cosine"))
    history = trainer.fit(train_loader, val_loader)
    trainer.evaluate(test_loader)  # {"loss": ..., "accuracy": ...}

The same script runs data-parallel under `torchrun --nproc_per_node N script.py` (see `distributed.py`).
"""

from cleanai.training.callbacks import Callback, TensorBoardLogger
from cleanai.training.checkpoint import load_checkpoint
from cleanai.training.config import TrainConfig
from cleanai.training.distributed import DataParallel, SingleProcess
from cleanai.training.history import History
from cleanai.training.losses import LOSSES, CompositeLoss, get_loss, list_losses, register_loss
from cleanai.metrics import (
    METRICS, Accuracy, MacroF1, MacroPrecision, MacroRecall, Metric, TopKAccuracy, get_metric, list_metrics,
    register_metric,
)
from cleanai.training.optimizers import OPTIMIZERS, get_optimizer, list_optimizers, register_optimizer
from cleanai.training.schedulers import (
    SCHEDULERS, PiecewiseConstantLR, SchedulerSpec, WarmupCosineLR, get_scheduler, list_schedulers,
    register_scheduler, scheduler_spec,
)
from cleanai.training.trainer import Trainer, seed_everything

__all__ = [
    "LOSSES", "METRICS", "OPTIMIZERS", "SCHEDULERS", "Accuracy", "Callback", "CompositeLoss", "DataParallel",
    "History",
    "MacroF1", "MacroPrecision", "MacroRecall", "Metric", "PiecewiseConstantLR", "SchedulerSpec", "SingleProcess",
    "TensorBoardLogger", "TopKAccuracy", "TrainConfig", "Trainer", "WarmupCosineLR", "get_loss", "get_metric",
    "get_optimizer", "get_scheduler", "list_losses", "list_metrics", "list_optimizers", "list_schedulers",
    "load_checkpoint", "register_loss", "register_metric", "register_optimizer", "register_scheduler",
    "scheduler_spec", "seed_everything",
]

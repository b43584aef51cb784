"""Callbacks: hooks the Trainer calls during `fit`, plus the TensorBoard logger built on them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cleanai.io import PathLike

if TYPE_CHECKING:
    from cleanai.training.trainer import Trainer


class Callback:
    """Override any hook. `trainer.epoch` (1-based while an epoch runs), `trainer.global_step`
    (optimizer steps so far), `trainer.model` and `trainer.optimizer` are available; setting
    `trainer.stop_training = True` ends training after the current epoch.

    A callback with state that must survive a resume returns it from `state_dict()` (tensors and
    plain Python values only); it is stored in the training checkpoint.
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resume has been loaded)."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Before the epoch's first batch."""

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None:
        """After each batch (0-based index in the epoch), after the optimizer step if this batch
        completed a gradient-accumulation group; `loss` is the batch's loss without penalties."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """After validation; `logs` is the epoch's History record."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch, also when training ends with an error (to release resources)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class TensorBoardLogger(Callback):
    """Writes every numeric value of each epoch's record (losses, metrics, lr, gradient-norm
    statistics) as TensorBoard scalars, tagged `train/loss`, `val/accuracy`, `lr`, `grad_norm/mean`, `seconds`.
    In data-parallel training only rank 0 writes (every process holds the same record)."""

    def __init__(self, log_dir: PathLike) -> None:
        self.log_dir = log_dir
        self.writer: Any = None

    def on_train_begin(self, trainer: Trainer) -> None:
        if not trainer.distributed.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: it loads tensorboard

        # After a resume, drop events a crashed run wrote past the checkpoint.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=trainer.epoch + 1 if trainer.epoch else None)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in logs.items():
            if key != "epoch":
                self.writer.add_scalar(_tag(key), value, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tag(key: str) -> str:
    """History key -> TensorBoard tag: `val_accuracy` -> `val/accuracy`, `grad_norm_max` -> `grad_norm/max`."""
    for prefix in ("train_", "val_", "grad_norm_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return key

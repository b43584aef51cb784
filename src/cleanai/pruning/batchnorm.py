"""BatchNorm recalibration: re-estimate running statistics after surgery shifted what each BatchNorm sees."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cleanai._batches import Batch, call_model, model_device, split_batch, to_device


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Batch]) -> int:
    """Re-estimate the running statistics of every BatchNorm of `model` on `batches`; return how many were reset.

    Removing channels shifts the statistics the following BatchNorms see, which costs much of the
    accuracy lost right after pruning; one pass without gradients (cumulative average, dropout off)
    measures them again. Momentum and train/eval mode are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta, was_training = [m.momentum for m in norms], model.training
    device = model_device(model)
    try:
        model.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative moving average: every batch counts the same
            norm.train()
        with torch.no_grad():
            for batch in batches:
                call_model(model, to_device(split_batch(batch)[0], device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)

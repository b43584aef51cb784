"""Optimizers by name: `get_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9, nesterov=True)`.

Every entry is a factory `(params, **kwargs) -> torch.optim.Optimizer`; the built-ins are torch's own
classes, so their keyword arguments are torch's. Add your own with `@register_optimizer("name")`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from cleanai.registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
register_optimizer = OPTIMIZERS.register

for _name, _cls in {
    "sgd": torch.optim.SGD,  # momentum=..., nesterov=True
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "adamax": torch.optim.Adamax,
}.items():
    OPTIMIZERS.register(_name, _cls)


def list_optimizers() -> list[str]:
    """Names accepted by `get_optimizer`."""
    return OPTIMIZERS.names()


def get_optimizer(name: str, params: Iterable[Any] | torch.nn.Module, **kwargs: Any) -> torch.optim.Optimizer:
    """Build the optimizer `name` over `params` (tensors, param-group dicts, or a module's parameters)."""
    if isinstance(params, torch.nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    return OPTIMIZERS.create(name, params, **kwargs)

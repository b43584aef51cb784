"""The model registry and `create_model`, the one way every other part builds a model by name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from cleanai.errors import CheckpointError
from cleanai.io import load_state_dict, load_weights
from cleanai.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
# Named weights: key "<model>.<tag>" (e.g. "resnet20.akamaster") -> function returning the checkpoint path.
PRETRAINED: Registry[Callable[[], Path]] = Registry("pretrained weights")


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return MODELS.names()


def create_model(name: str, *, pretrained: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build the model registered as `name` with `kwargs`; optionally load weights.

    `pretrained` is a checkpoint path (safetensors or a weights-only torch file, loaded strictly
    through `cleanai.io.load_weights`) or a weights tag registered for this model, such as
    `"akamaster"` for the CIFAR ResNets.
    """
    model = MODELS.create(name, **kwargs)
    if pretrained is not None:
        state = load_state_dict(_resolve_checkpoint(name, pretrained))
        load_weights(model, state, strict=True)
    return model


def _resolve_checkpoint(name: str, pretrained: str | os.PathLike[str]) -> Path:
    tag_key = f"{name}.{pretrained}"
    if isinstance(pretrained, str) and tag_key in PRETRAINED:
        return PRETRAINED.get(tag_key)()
    path = Path(pretrained)
    if path.is_file():
        return path
    holders = [k.split(".", 1)[0] for k in PRETRAINED.names() if k.split(".", 1)[1] == str(pretrained).lower()]
    if holders and not path.exists():
        raise CheckpointError(f"model {name!r} has no {str(pretrained)!r} weights; the models that have them: "
                              f"{', '.join(holders)} (or pass a .safetensors/.pt/.pth/.th file)")
    tags = sorted({tag for tag in (k.split(".", 1)[1] for k in PRETRAINED.names()) if f"{name}.{tag}" in PRETRAINED})
    what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
    raise CheckpointError(
        f"pretrained={str(pretrained)!r} for model {name!r} {what}; pass a .safetensors/.pt/.pth/.th file"
        + (f" or one of the named weights: {', '.join(tags)}" if tags else "")
    )

"""CIFAR ResNets (He et al. 2016, section 4.2) in the akamaster/pytorch_resnet_cifar10 layout.

State-dict names match the akamaster checkpoints (`conv1`, `bn1`, `layer{1,2,3}.{i}.conv1/bn1/conv2/bn2`,
`linear`), so its `.th` files load strictly. The option-A shortcut is the parameter-free `PadShortcut`
module, which ONNX export, tracing and the pruning engine can see and rewrite.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cleanai.errors import CheckpointError, ConfigError
from cleanai.models._factory import MODELS, PRETRAINED
from cleanai.models._layers import check_positive_int

AKAMASTER_DIR = "resnet-cifar10-akamaster"
DEPTHS = (20, 32, 44, 56, 110)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample space by `stride` and zero-pad channels from `in_channels` to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(f"PadShortcut: out_channels ({out_channels}) must be >= in_channels ({in_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.out_channels - self.in_channels
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, pad // 2, pad - pad // 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (two separate ReLU modules)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            PadShortcut(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
        )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: stem 16 channels, three stages of `n` blocks (16, 32, 64), linear head."""

    input_size: tuple[int, ...]

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        check_positive_int("CifarResNet", depth=depth, num_classes=num_classes, in_channels=in_channels)
        if (depth - 2) % 6:
            raise ConfigError(f"CifarResNet: depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.num_classes = depth, num_classes
        self.input_size = (in_channels, 32, 32)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        planes = 16
        for i, width in enumerate((16, 32, 64), start=1):
            blocks = [CifarBasicBlock(planes, width, 1 if i == 1 else 2)]
            blocks += [CifarBasicBlock(width, width) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            planes = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


def akamaster_checkpoint(depth: int, models_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the akamaster `resnet{depth}-*.th` file under `models_dir` (default `$CLEANAI_MODELS`)."""
    root = models_dir if models_dir is not None else os.environ.get("CLEANAI_MODELS")
    if not root:
        raise CheckpointError(
            f"cannot find the akamaster resnet{depth} checkpoint: set CLEANAI_MODELS to the folder holding "
            f"{AKAMASTER_DIR}/ (or pass models_dir)"
        )
    folder = Path(root) / AKAMASTER_DIR
    found = sorted(folder.glob(f"resnet{depth}-*.th"))
    if not found:
        present = sorted(p.name for p in folder.glob("*.th")) if folder.is_dir() else []
        raise CheckpointError(
            f"no akamaster checkpoint resnet{depth}-*.th in {str(folder)!r}; "
            + (f"available: {', '.join(present)}" if present else "that folder holds no .th files")
        )
    return found[0]


def _cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(depth, num_classes, in_channels)


for _depth in DEPTHS:
    _factory = partial(_cifar_resnet, _depth)
    _factory.__doc__ = f"CIFAR ResNet-{_depth} (akamaster layout, option-A shortcuts)."
    MODELS.register(f"resnet{_depth}", _factory)
    PRETRAINED.register(f"resnet{_depth}.akamaster", partial(akamaster_checkpoint, _depth))

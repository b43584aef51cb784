"""A small CNN for tiny images such as scikit-learn's 8x8 digits: quick to train, prune and quantize in tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cleanai.models._factory import MODELS
from cleanai.models._layers import ConvBNAct, check_positive_int, init_conv_bn
from cleanai.errors import ConfigError


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks (`features.*`, a 2x2 max-pool after the second), global average pool, linear `classifier`."""

    input_size: tuple[int, ...]

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (16, 32, 64),
                 image_size: int = 8) -> None:
        super().__init__()
        check_positive_int("small_cnn", in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        if not channels:
            raise ConfigError("small_cnn: channels must list at least one width, got an empty sequence")
        check_positive_int("small_cnn", **{f"channels[{i}]": c for i, c in enumerate(channels)})
        self.num_classes = num_classes
        self.input_size = (in_channels, image_size, image_size)
        layers: list[nn.Module] = []
        for i, width in enumerate(channels):
            layers.append(ConvBNAct(in_channels if i == 0 else channels[i - 1], width))
            if i == 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels[-1], num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@MODELS.register()
def small_cnn(in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (16, 32, 64),
              image_size: int = 8) -> SmallCNN:
    """Small CNN for 8x8 digits (about 24k parameters with the default widths)."""
    return SmallCNN(in_channels, num_classes, channels, image_size)

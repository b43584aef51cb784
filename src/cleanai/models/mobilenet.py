"""MobileNetV2 (Sandler et al. 2018) with torchvision's layout and state-dict names (`features.*`, `classifier.1`)."""

from __future__ import annotations

import torch
from torch import nn

from cleanai.models._factory import MODELS
from cleanai.models._layers import ConvBNAct, check_positive_int, init_conv_bn
from cleanai.errors import ConfigError

# (expand ratio t, output channels c, repeats n, first stride s), as in the paper's Table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `value` (torchvision rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2; `small_input=True` (32x32) makes the stem and the 24-channel stage stride 1 (8x downsampling)."""

    input_size: tuple[int, ...]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 in_channels: int = 3, small_input: bool = False) -> None:
        super().__init__()
        check_positive_int("MobileNetV2", num_classes=num_classes, in_channels=in_channels)
        if not (isinstance(width_mult, (int, float)) and width_mult > 0):
            raise ConfigError(f"MobileNetV2: width_mult must be a positive number, got {width_mult!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"MobileNetV2: dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.input_size = (in_channels, 32, 32) if small_input else (in_channels, 224, 224)
        channels = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, 1 if small_input else 2, activation=nn.ReLU6)]
        for t, c, n, s in _SETTINGS:
            out = make_divisible(c * width_mult)
            stride = 1 if small_input and c == 24 else s
            for i in range(n):
                features.append(InvertedResidual(channels, out, stride if i == 0 else 1, t))
                channels = out
        features.append(ConvBNAct(channels, last, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_conv_bn(self)
        nn.init.normal_(self.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@MODELS.register()
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2,
                 in_channels: int = 3, small_input: bool = False) -> MobileNetV2:
    """MobileNetV2 (3.5M parameters at 1000 classes, width 1.0), torchvision layout."""
    return MobileNetV2(num_classes, width_mult, dropout, in_channels, small_input)

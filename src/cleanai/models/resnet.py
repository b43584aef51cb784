"""ImageNet ResNet-18/34/50 with torchvision's module layout and state-dict names (v1.5: stride in the 3x3 conv).

torchvision's `resnet18-*.pth` style checkpoints load strictly. Unlike torchvision, every ReLU is its
own module (a module reused twice in forward breaks PT2E quantizers); ReLUs hold no weights, so the
state-dict names are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from cleanai.models._factory import MODELS
from cleanai.models._layers import check_positive_int, init_conv_bn


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.relu3(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """ResNet for 224x224 images; `small_input=True` swaps the 7x7/2 stem and max-pool for a 3x3/1 conv (32x32 inputs)."""

    input_size: tuple[int, ...]

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False) -> None:
        super().__init__()
        check_positive_int("ResNet", num_classes=num_classes, in_channels=in_channels)
        self.num_classes = num_classes
        self.input_size = (in_channels, 32, 32) if small_input else (in_channels, 224, 224)
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        in_planes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if i == 1 else 2
            downsample = None
            if stride != 1 or in_planes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            blocks = [block(in_planes, planes, stride, downsample)]
            in_planes = planes * block.expansion
            blocks += [block(in_planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@MODELS.register()
def resnet18(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> ResNet:
    """ResNet-18 (11.7M parameters at 1000 classes), torchvision layout."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, small_input)


@MODELS.register()
def resnet34(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> ResNet:
    """ResNet-34 (21.8M parameters at 1000 classes), torchvision layout."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, small_input)


@MODELS.register()
def resnet50(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> ResNet:
    """ResNet-50 (25.6M parameters at 1000 classes), torchvision layout."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, small_input)

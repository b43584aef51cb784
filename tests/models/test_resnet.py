"""ImageNet ResNets: torchvision parameter counts and state-dict names, small-input variant."""

from __future__ import annotations

import pytest
import torch

from cleanai.models import Bottleneck, create_model


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                              ("resnet50", 25_557_032)])
def test_param_counts_match_torchvision(name: str, params: int) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.input_size == (3, 224, 224)


def test_state_dict_uses_torchvision_key_names() -> None:
    r18 = set(create_model("resnet18").state_dict())
    assert {"conv1.weight", "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.1.bn2.running_mean",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias", "layer4.1.conv2.weight",
            "fc.weight", "fc.bias"} <= r18
    assert "layer1.0.downsample.0.weight" not in r18
    r50 = create_model("resnet50")
    keys = set(r50.state_dict())
    assert {"layer1.0.conv3.weight", "layer1.0.bn3.weight", "layer1.0.downsample.0.weight",
            "layer3.5.conv2.weight", "layer4.2.bn3.running_var"} <= keys
    assert isinstance(r50.layer4[0], Bottleneck) and r50.layer4[0].conv2.stride == (2, 2)  # v1.5 stride placement
    assert r50.fc.in_features == 2048


def test_small_input_variant_classifies_32x32_images() -> None:
    model = create_model("resnet18", num_classes=10, small_input=True).eval()
    assert model.input_size == (3, 32, 32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_grayscale_input_channels() -> None:
    model = create_model("resnet18", in_channels=1, num_classes=5).eval()
    assert model.conv1.in_channels == 1 and model.input_size == (1, 224, 224)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)

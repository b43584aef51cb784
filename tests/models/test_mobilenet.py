"""MobileNetV2: torchvision parameter count and key names, width multiplier, small-input variant."""

from __future__ import annotations

import pytest
import torch

from cleanai.models import InvertedResidual, create_model
from cleanai.models.mobilenet import make_divisible


def test_param_count_matches_torchvision() -> None:
    model = create_model("mobilenet_v2")
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    assert model.input_size == (3, 224, 224)


def test_state_dict_uses_torchvision_key_names() -> None:
    keys = set(create_model("mobilenet_v2").state_dict())
    assert {"features.0.0.weight", "features.0.1.running_mean",
            "features.1.conv.0.0.weight", "features.1.conv.1.weight", "features.1.conv.2.bias",
            "features.2.conv.0.0.weight", "features.2.conv.1.0.weight", "features.2.conv.2.weight",
            "features.2.conv.3.running_var", "features.17.conv.2.weight", "features.18.0.weight",
            "classifier.1.weight", "classifier.1.bias"} <= keys
    assert not any(k.startswith("features.19") for k in keys)


def test_width_multiplier_scales_channels_to_multiples_of_8() -> None:
    model = create_model("mobilenet_v2", width_mult=0.5, num_classes=10)
    assert model.features[0][0].out_channels == 16
    assert model.classifier[1].in_features == 1280  # last channel never shrinks below 1280
    widths = [m.out_channels for m in model.features if isinstance(m, InvertedResidual)]
    assert all(w % 8 == 0 for w in widths) and widths[-1] == 160
    assert make_divisible(32 * 0.35) == 16 and make_divisible(1280 * 1.4) == 1792


def test_small_input_variant_keeps_a_4x4_map_at_32x32() -> None:
    model = create_model("mobilenet_v2", num_classes=10, small_input=True).eval()
    assert model.input_size == (3, 32, 32)
    shapes: list[torch.Size] = []
    model.features.register_forward_hook(lambda m, i, out: shapes.append(out.shape))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert shapes == [(2, 1280, 4, 4)]


def test_residual_connections_only_where_shapes_match() -> None:
    blocks = [m for m in create_model("mobilenet_v2").features if isinstance(m, InvertedResidual)]
    assert sum(b.use_res_connect for b in blocks) == 10
    with pytest.raises(ValueError, match="dropout must be in"):
        create_model("mobilenet_v2", dropout=1.5)

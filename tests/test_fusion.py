"""fuse_conv_bn: folds Conv/Linear + BatchNorm anywhere in the module graph, exactly, and only where it is correct."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from cleanai.fusion import FusionError, fuse_conv_bn
from cleanai.models import create_model

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _trained_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training would."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, BATCHNORMS):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def _batchnorms(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, BATCHNORMS)]


def _out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("resnet20", {}),
    ("mobilenet_v2", {"num_classes": 10, "small_input": True, "width_mult": 0.5}),
    ("small_cnn", {}),
])
def test_every_batchnorm_of_the_zoo_models_is_folded_and_the_output_is_unchanged(name, kwargs):
    model = _trained_statistics(create_model(name, **kwargs))
    before = _batchnorms(model)
    fused = fuse_conv_bn(model)
    assert isinstance(fused, fx.GraphModule) and _batchnorms(fused) == []
    assert _batchnorms(model) == before  # the caller's model is untouched
    assert fused.input_size == model.input_size and not fused.training
    x = torch.randn(3, *model.input_size)
    reference = _out(model, x)
    assert (_out(fused, x) - reference).abs().max() <= 1e-5 * max(1.0, reference.abs().max())


def test_the_pretrained_cifar_resnet_keeps_its_logits(shared_models_dir):
    model = create_model("resnet20", pretrained="akamaster").eval()
    fused = fuse_conv_bn(model)
    x = torch.randn(16, 3, 32, 32)
    reference = _out(model, x)
    assert (_out(fused, x) - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert torch.equal(_out(fused, x).argmax(1), reference.argmax(1))
    assert fused.conv1.bias is not None and model.conv1.bias is None  # BN's shift became the conv's bias


class _Mixed(nn.Module):
    """Conv1d + BN1d and Linear + BN1d held as attributes (no Sequential), with a residual after the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.fc = nn.Linear(6 * 5, 4)
        self.fc_bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x))) + x.mean(1, keepdim=True)
        return self.fc_bn(self.fc(y.flatten(1)))


def test_conv1d_and_linear_pairs_outside_any_sequential_are_folded():
    model = _trained_statistics(_Mixed())
    fused = fuse_conv_bn(model, example_inputs=torch.randn(4, 2, 5))
    assert _batchnorms(fused) == []
    x = torch.randn(8, 2, 5)
    assert torch.allclose(_out(fused, x), _out(model, x), atol=1e-5)


class _NotFoldable(nn.Module):
    """BatchNorms that must stay: on the input, after a ReLU, after a conv whose output is also used elsewhere,
    and after a conv module that is called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv_a = nn.Conv2d(3, 3, 3, padding=1)
        self.bn_after_relu = nn.BatchNorm2d(3)
        self.conv_b = nn.Conv2d(3, 3, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(3)
        self.shared = nn.Conv2d(3, 3, 1)
        self.bn_shared = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_a(self.bn_in(x)))
        x = self.bn_after_relu(x)
        y = self.conv_b(x)
        x = self.bn_b(y) + y  # conv_b's output has two users
        return self.bn_shared(self.shared(x)) + self.shared(x)


def test_batchnorms_that_no_single_use_layer_feeds_are_left_in_place():
    model = _trained_statistics(_NotFoldable())
    fused = fuse_conv_bn(model, example_inputs=torch.randn(2, 3, 6, 6))
    assert _batchnorms(fused) == _batchnorms(model)
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(_out(fused, x), _out(model, x), atol=1e-5)


class _Branchy(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.bn(self.conv(x)) if x.mean() > 0 else x


def test_an_untraceable_forward_falls_back_to_its_sequential_children_and_says_what_stayed():
    model = _trained_statistics(_Branchy())
    with pytest.warns(UserWarning, match=r"folded 1 BatchNorm layer\(s\), but torch.fx cannot trace '<root>' "
                                         r"\(_Branchy\): TraceError: .*; BatchNorm kept: bn"):
        fused = fuse_conv_bn(model, example_inputs=torch.randn(2, 3, 5, 5))
    assert _batchnorms(fused) == ["bn"] and isinstance(fused.features, fx.GraphModule)  # the child traced alone
    x = torch.randn(4, 3, 5, 5)
    assert torch.allclose(_out(fused, x), _out(model, x), atol=1e-5)


class _Gate(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) if x.sum() > 0 else x


def test_a_sequential_that_cannot_be_traced_is_folded_pair_by_pair():
    model = _trained_statistics(nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), _Gate(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    with pytest.warns(UserWarning, match=r"folded 2 BatchNorm layer\(s\), but torch.fx cannot trace '3' \(_Gate\)"):
        fused = fuse_conv_bn(model, example_inputs=torch.randn(2, 3, 5, 5))
    assert isinstance(fused, nn.Sequential) and [type(m).__name__ for m in fused] == [
        "Conv2d", "Identity", "ReLU", "_Gate", "Conv2d", "Identity"]
    assert _batchnorms(fused) == ["3.bn"]
    x = torch.randn(4, 3, 5, 5)
    assert torch.allclose(_out(fused, x), _out(model, x), atol=1e-5)


def test_an_untraceable_model_with_nothing_foldable_is_refused_with_its_name():
    with pytest.raises(FusionError, match=r"no BatchNorm could be folded: torch.fx cannot trace '<root>' \(_Gate\): "
                                          r"TraceError: .*BatchNorm kept: bn"):
        fuse_conv_bn(_Gate(3).eval())


def test_a_fold_that_changes_the_result_is_refused():
    class TokenMLP(nn.Module):
        """Linear over the last axis of (N, L, F) input, BatchNorm1d over axis 1 (L): with L == F the sizes match,
        but the BatchNorm normalises positions, not the Linear's features, so folding would be wrong."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.fc(x))

    model = _trained_statistics(TokenMLP())
    with pytest.raises(FusionError, match=r"folding changed the result of TokenMLP after folding 1 BatchNorm layer\(s\), "
                                          r"on the example inputs: max abs diff"):
        fuse_conv_bn(model, example_inputs=torch.randn(2, 4, 4))


def test_inplace_folds_the_models_own_layers_and_without_it_the_training_flag_is_kept():
    model = _trained_statistics(create_model("small_cnn")).train()
    copy = fuse_conv_bn(model)
    assert model.training and copy.classifier is not model.classifier
    inplace = fuse_conv_bn(model, inplace=True)
    assert inplace.classifier is model.classifier and not model.training


def test_a_fused_model_exports_to_onnx_with_parity(shared_models_dir, tmp_path):
    from cleanai.export import export_onnx

    fused = fuse_conv_bn(create_model("resnet20", pretrained="akamaster"))
    result = export_onnx(fused, torch.randn(2, 3, 32, 32), tmp_path / "fused.onnx")
    assert result.max_abs_diff < 1e-4 and result.input_names == ["input"]


def test_a_model_without_batchnorm_comes_back_unchanged_even_when_untraceable():
    text = create_model("tiny_bert_classifier", num_labels=2).eval()  # Hugging Face models do not fx-trace
    fused = fuse_conv_bn(text)
    assert type(fused) is type(text) and fused is not text
    with pytest.raises(TypeError, match="needs a torch.nn.Module, got str"):
        fuse_conv_bn("resnet20")

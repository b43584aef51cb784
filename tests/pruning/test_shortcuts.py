"""Option-A shortcuts: rewritten into ChannelSelect they are exact, coupled by DepGraph, and prunable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from torch import nn

from cleanai.models import CifarResNet, PadShortcut, create_model
from cleanai.pruning import CUSTOMIZED_PRUNERS, ChannelSelect, PruneConfig, prune, rewrite_pad_shortcuts


def test_channel_select_is_exactly_the_pad_shortcut() -> None:
    x = torch.randn(2, 16, 9, 9)
    pad = PadShortcut(16, 32, 2)
    select = ChannelSelect.from_pad_shortcut(pad)
    torch.testing.assert_close(select(x), pad(x), rtol=0, atol=0)
    assert sum(p.numel() for p in select.parameters()) == 0


def test_rewrite_keeps_the_function_and_names() -> None:
    model = CifarResNet(depth=8).eval()
    x = torch.randn(2, 3, 16, 16)
    before = model(x)
    assert rewrite_pad_shortcuts(model) == ["layer2.0.shortcut", "layer3.0.shortcut"]
    assert isinstance(model.layer2[0].shortcut, ChannelSelect)
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_torch_pruning_alone_breaks_option_a_resnets() -> None:
    """Why the rewrite exists: DepGraph mis-couples the zero-padded channels, and forward fails."""
    model = CifarResNet(depth=8).eval()
    x = torch.randn(1, 3, 16, 16)
    pruner = tp.pruner.BasePruner(model, x, tp.importance.GroupMagnitudeImportance(), pruning_ratio=0.5,
                                  ignored_layers=[model.linear])
    pruner.step()
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(x)


def test_rewritten_resnet20_prunes_with_torch_pruning_and_runs() -> None:
    """The custom pruner keeps residual groups coupled across the stage transitions."""
    model = create_model("resnet20").eval()
    rewrite_pad_shortcuts(model)
    x = torch.randn(1, 3, 16, 16)
    pruner = tp.pruner.BasePruner(model, x, tp.importance.GroupMagnitudeImportance(), pruning_ratio=0.5,
                                  ignored_layers=[model.linear], customized_pruners=CUSTOMIZED_PRUNERS)
    pruner.step()
    assert model(x).shape == (1, 10)
    shortcut = model.layer2[0].shortcut
    assert shortcut.in_channels == model.layer1[2].conv2.out_channels == 8
    assert shortcut.out_channels == model.layer2[0].conv2.out_channels == 16


def test_prune_resnet20_end_to_end_keeps_selection_a_subset_of_the_identity() -> None:
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 16, 16)
    pruned, report = prune(model, x, PruneConfig(ratio=0.4, scope="global"))
    assert pruned(x).shape == (2, 10)
    assert report.rewritten_modules == ["layer2.0.shortcut", "layer3.0.shortcut"]
    assert isinstance(model.layer2[0].shortcut, PadShortcut)  # the caller's model was not rewritten
    for block in (pruned.layer2[0], pruned.layer3[0]):
        sel = block.shortcut.selection.squeeze(-1).squeeze(-1)
        assert set(sel.unique().tolist()) <= {0.0, 1.0}
        assert bool((sel.sum(0) <= 1).all()) and bool((sel.sum(1) <= 1).all())  # each channel copied at most once
    assert report.macs_ratio < 0.6


def test_a_model_without_pad_shortcuts_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert rewrite_pad_shortcuts(model) == []


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export internals (LeafSpec deprecation)
def test_pruned_resnet_with_channel_select_exports_with_the_default_onnx_exporter(tmp_path: Path) -> None:
    """The dynamo exporter (torch's default, what cleanai ships) handles ChannelSelect after pruning."""
    model = CifarResNet(depth=8).eval()
    x = torch.randn(2, 3, 16, 16)
    pruned, _ = prune(model, x, PruneConfig(ratio=0.5))
    path = tmp_path / "resnet8_pruned.onnx"
    torch.onnx.export(pruned, (x,), str(path), input_names=["x"], external_data=False)
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, pruned(x).numpy(), rtol=1e-4, atol=1e-4)

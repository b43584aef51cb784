"""prune() on grouped convolutions (ResNeXt) and GroupNorm: every group keeps an equal share of channels,
`groups` / `num_groups` stay valid, and the cut matches plain Torch-Pruning's."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

from cleanai.export import export_onnx
from cleanai.pruning import PruneConfig, prune


class ResNeXtBlock(nn.Module):
    """Stem, one ResNeXt bottleneck (1x1 -> 3x3 with groups=4 -> 1x1, residual add), classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.reduce = nn.Sequential(nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32),
                                     nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(torch.relu(x + self.expand(self.grouped(self.reduce(x)))))


def groupnorm_cnn() -> nn.Module:
    """conv GN(4) ReLU conv GN(8) ReLU conv GN(2) ReLU pool linear."""
    layers: list[nn.Module] = []
    for cin, cout, groups in ((3, 16, 4), (16, 32, 8), (32, 24, 2)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))


X = torch.randn(2, 3, 8, 8)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torch_pruning_cut(model: nn.Module, ratio: float, scope: str) -> nn.Module:
    """Plain Torch-Pruning at `ratio`: MetaPruner with magnitude importance, the classifier ignored."""
    model = copy.deepcopy(model)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    tp.pruner.MetaPruner(model, X, importance=tp.importance.GroupMagnitudeImportance(), pruning_ratio=ratio,
                         global_pruning=scope == "global", ignored_layers=[last]).step()
    return model


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("build", [ResNeXtBlock, groupnorm_cnn], ids=["resnext", "groupnorm"])
def test_grouped_layers_are_pruned_like_torch_pruning_and_still_run_and_export(build, scope: str,
                                                                              tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build().eval()
    pruned, report = prune(model, X, PruneConfig(ratio=0.3, scope=scope))
    reference = torch_pruning_cut(model, 0.3, scope)
    removed, tp_removed = 1 - params(pruned) / params(model), 1 - params(reference) / params(model)
    assert removed > 0.3 and abs(removed - tp_removed) < 0.03, (removed, tp_removed, report.skipped_groups)
    assert not report.skipped_groups.keys() - {"head.2", "11"}  # only the classifier is left whole
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d):
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
            assert m.weight.shape[1] == m.in_channels // m.groups
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.weight.shape == (m.num_channels,)
    out = pruned(X)
    assert out.shape == model(X).shape and bool(torch.isfinite(out).all())
    result = export_onnx(pruned, X, tmp_path / "pruned.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4


def test_a_grouped_convolution_keeps_its_groups_and_loses_the_same_slots_in_each() -> None:
    torch.manual_seed(0)
    model = ResNeXtBlock().eval()
    with torch.no_grad():  # tag each channel of the grouped conv's output by its BatchNorm bias
        model.grouped[1].bias.copy_(torch.arange(32.0))
    pruned, report = prune(model, X, PruneConfig(ratio=0.25, scope="local"))
    conv = pruned.grouped[0]
    assert (conv.groups, conv.out_channels, conv.in_channels) == (4, 24, 24)
    assert report.steps[0].removed["grouped.0"] == 8  # 2 slots x 4 groups
    kept = pruned.grouped[1].bias.detach().long().tolist()
    slots = [{i % 8 for i in kept if i // 8 == g} for g in range(4)]
    assert all(len(s) == 6 for s in slots) and all(s == slots[0] for s in slots)


def test_groupnorm_with_one_channel_per_group_is_reported_not_skipped_in_silence() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(8, 8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    pruned, report = prune(model, X, PruneConfig(ratio=0.5))
    assert "1 (num_groups=8)" in report.skipped_groups["0"] and pruned[0].out_channels == 8
    assert pruned[3].out_channels == 4

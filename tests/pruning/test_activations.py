"""ActivationRecorder: exact running per-channel sums, bounded passes, hooks always removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cleanai.pruning import ActivationRecorder, ChannelStats


def _expected(values: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    v = values.double()
    return {"sum": v.sum(0), "abs_sum": v.abs().sum(0), "sq_sum": v.square().sum(0),
            "above": (v > threshold).sum(0).double(), "max": v.amax(0)}


def _check(stats: ChannelStats, rows: torch.Tensor, threshold: float) -> None:
    for key, value in _expected(rows, threshold).items():
        torch.testing.assert_close(getattr(stats, key), value, msg=key)
    assert stats.count == rows.shape[0]


def test_conv_and_linear_statistics_are_exact_per_channel() -> None:
    """(N,C,H,W) outputs reduce over N,H,W per channel; (N,C) and (N,T,C) over everything but the last dim."""
    torch.manual_seed(0)
    conv, lin2, lin3 = nn.Conv2d(3, 5, 3), nn.Linear(4, 6), nn.Linear(6, 7)
    model = nn.ModuleDict({"conv": conv, "lin2": lin2, "lin3": lin3})
    x_img, x_vec, x_seq = torch.randn(2, 3, 6, 6), torch.randn(3, 4), torch.randn(2, 5, 6)
    with ActivationRecorder(model, threshold=0.1) as rec:
        out_img, out_vec, out_seq = conv(x_img), lin2(x_vec), lin3(x_seq)
    _check(rec.outputs["conv"], out_img.permute(0, 2, 3, 1).reshape(-1, 5), 0.1)
    _check(rec.inputs["conv"], x_img.permute(0, 2, 3, 1).reshape(-1, 3), 0.1)
    _check(rec.outputs["lin2"], out_vec, 0.1)
    _check(rec.outputs["lin3"], out_seq.reshape(-1, 7), 0.1)
    _check(rec.inputs["lin3"], x_seq.reshape(-1, 6), 0.1)
    assert rec.outputs["conv"].sum.shape == (5,)  # O(channels): nothing of the activation is kept


def test_layer_input_is_the_activation_after_batchnorm_and_relu() -> None:
    """The input recorded at a conv is what its producer's BN + ReLU emit (where activations act)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(3, 3, 8, 8)
    with ActivationRecorder(model) as rec:
        model(x)
    act = model[2](model[1](model[0](x)))
    _check(rec.inputs["3"], act.permute(0, 2, 3, 1).reshape(-1, 4), 0.0)
    assert float(rec.inputs["3"].mean().min()) >= 0.0  # after ReLU
    assert float(rec.outputs["0"].mean().min()) < 0.0  # the raw conv output is signed


def test_max_batches_bounds_the_pass_and_derived_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    batches = [(torch.randn(4, 3), torch.zeros(4)) for _ in range(5)]
    rec = ActivationRecorder(model, where="output", max_batches=2)
    with rec:
        rec.run(batches)
        model(torch.randn(4, 3))  # past the bound: not recorded
    stats = rec.outputs["0"]
    assert stats.count == 8 and rec.inputs == {}
    seen = torch.cat([model(b[0]) for b in batches[:2]]).detach().double()
    torch.testing.assert_close(stats.mean(), seen.mean(0))
    torch.testing.assert_close(stats.mean_abs(), seen.abs().mean(0))
    torch.testing.assert_close(stats.frequency(), (seen > 0).double().mean(0))
    torch.testing.assert_close(stats.l2(), seen.norm(dim=0))
    torch.testing.assert_close(stats.normalized_mean(), seen.mean(0) / seen.max())


def test_hooks_are_removed_even_when_the_forward_fails() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(RuntimeError), ActivationRecorder(model):
        model(torch.randn(2, 5))  # wrong width
    assert not model[0]._forward_hooks and not model._forward_pre_hooks


def test_run_restores_training_mode_and_drop_follows_pruning() -> None:
    model = nn.Sequential(nn.Linear(3, 4)).train()
    with ActivationRecorder(model) as rec:
        rec.run([torch.randn(2, 3)])
    assert model.training
    stats = rec.outputs["0"]
    kept = stats.drop([0, 2])
    assert kept.channels == 2 and kept.count == stats.count
    torch.testing.assert_close(kept.sum, stats.sum[[1, 3]])


@pytest.mark.parametrize("kwargs", [{"where": "inside"}, {"where": ()}, {"max_batches": 0}])
def test_bad_arguments_name_what_is_allowed(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="where|max_batches"):
        ActivationRecorder(nn.Linear(2, 2), **kwargs)

"""kd_loss against a hand computation, its limits, and the intermediate losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cleanai.distillation import DistillConfig, IntermediateLoss, kd_loss, uniform_layer_map


def test_kd_loss_matches_a_hand_computation() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.0, 3.0, 1.0]])
    alpha, temp = 0.3, 2.0
    ps = [math.exp(v / temp) for v in (1.0, 2.0, 0.5)]
    pt = [math.exp(v / temp) for v in (0.0, 3.0, 1.0)]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
    z = [math.exp(v) for v in (1.0, 2.0, 0.5)]
    ce = -math.log(z[1] / sum(z))
    want = alpha * ce + (1 - alpha) * temp**2 * kl
    assert kd_loss(s, t, torch.tensor([1]), alpha, temp).item() == pytest.approx(want, rel=1e-6)


def test_kd_loss_mean_is_cross_entropy_plus_batchmean_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.randint(0, 4, (5,), generator=g)
    kl = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1))
    want = 0.5 * F.cross_entropy(s, y) + 0.5 * 9 * kl
    assert torch.allclose(kd_loss(s, t, y, 0.5, 3.0), want, atol=1e-6)
    assert torch.allclose(kd_loss(s, t, y, 0.5, 3.0, reduction="sum"), want * 5, atol=1e-5)


def test_kd_loss_limits_are_cross_entropy_and_zero_for_a_perfect_copy() -> None:
    s, y = torch.randn(3, 5), torch.tensor([0, 4, 2])
    assert torch.allclose(kd_loss(s, torch.randn(3, 5), y, alpha=1.0), F.cross_entropy(s, y))
    assert kd_loss(s, s.clone(), y, alpha=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_is_finite_for_huge_logits_and_low_temperature() -> None:
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    loss = kd_loss(s, torch.tensor([[-1e4, 1e4, 0.0]]), torch.tensor([0]), 0.5, 0.05)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("field, value", [("alpha", -0.1), ("alpha", 1.5), ("temperature", 0.0), ("temperature", -1)])
def test_config_refuses_alpha_outside_unit_interval_and_non_positive_temperature(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        DistillConfig(**{field: value})


def test_config_refuses_a_logit_cache_with_intermediate_losses(tmp_path) -> None:
    with pytest.raises(ValueError, match="cache_dir"):
        DistillConfig(cache_dir=tmp_path, hidden_weight=1.0)


def test_uniform_layer_map_spreads_and_ends_at_the_last_layer() -> None:
    assert uniform_layer_map(3, 6) == [1, 3, 5]
    assert uniform_layer_map(6, 6) == list(range(6))
    with pytest.raises(ValueError):
        uniform_layer_map(4, 2)


def test_intermediate_loss_is_zero_for_identical_states_and_trains_its_projection() -> None:
    h = [torch.randn(2, 3, 4) for _ in range(3)]
    attn = [torch.softmax(torch.randn(2, 2, 3, 3), -1) for _ in range(2)]
    same = IntermediateLoss(4, 4, [0, 1], "identity", hidden_weight=1.0, attention_weight=1.0)
    assert same(h, h, attn, attn).item() == pytest.approx(0.0)
    learned = IntermediateLoss(4, 8, [1], "learned", hidden_weight=1.0)
    teacher = [torch.randn(2, 3, 8) for _ in range(3)]
    loss = learned(h[:2], teacher, attention_mask=torch.tensor([[1, 1, 0], [1, 0, 0]]))
    loss.backward()
    assert loss.item() > 0 and learned.projections[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="identity"):
        IntermediateLoss(4, 8, [0], "identity")

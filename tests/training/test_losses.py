from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from cleanai.errors import UnknownNameError
from cleanai.training import LOSSES, CompositeLoss, get_loss, list_losses, register_loss

N, C = 6, 4
g = torch.Generator().manual_seed(0)
LOGITS = torch.randn(N, C, generator=g)
LABELS = torch.randint(0, C, (N,), generator=g)
MULTI_HOT = (torch.rand(N, C, generator=g) > 0.5).float()
SIGNS = torch.where(torch.rand(N, generator=g) > 0.5, 1.0, -1.0)
EMB = [torch.randn(N, 8, generator=g) for _ in range(3)]

# Suitable tiny inputs for each loss: name -> (kwargs, args). Every registered built-in must have a case.
CASES: dict[str, tuple[dict, Callable[[], tuple]]] = {
    "cross_entropy": ({"label_smoothing": 0.1}, lambda: (LOGITS, LABELS)),
    "bce": ({}, lambda: (torch.sigmoid(LOGITS), MULTI_HOT)),
    "bce_with_logits": ({}, lambda: (LOGITS, MULTI_HOT)),
    "nll": ({}, lambda: (F.log_softmax(LOGITS, dim=1), LABELS)),
    "poisson_nll": ({}, lambda: (LOGITS, torch.poisson(torch.ones(N, C), generator=g))),
    "kl_div": ({}, lambda: (F.log_softmax(LOGITS, dim=1), F.softmax(torch.randn(N, C, generator=g), dim=1))),
    "hinge_embedding": ({}, lambda: (LOGITS[:, 0], SIGNS)),
    "multi_margin": ({}, lambda: (LOGITS, LABELS)),
    "multilabel_margin": ({}, lambda: (LOGITS, torch.tensor([[0, 2, -1, 0]] * N))),
    "soft_margin": ({}, lambda: (LOGITS[:, 0], SIGNS)),
    "multilabel_soft_margin": ({}, lambda: (LOGITS, MULTI_HOT)),
    "mse": ({}, lambda: (LOGITS, MULTI_HOT)),
    "l1": ({}, lambda: (LOGITS, MULTI_HOT)),
    "smooth_l1": ({"beta": 0.5}, lambda: (LOGITS, MULTI_HOT)),
    "huber": ({"delta": 0.5}, lambda: (LOGITS, MULTI_HOT)),
    "ctc": ({}, lambda: (F.log_softmax(torch.randn(10, 2, 5, generator=g), dim=2),
                         torch.tensor([[1, 2, 3], [2, 4, 4]]), torch.tensor([10, 10]), torch.tensor([3, 2]))),
    "margin_ranking": ({"margin": 0.1}, lambda: (LOGITS[:, 0], LOGITS[:, 1], SIGNS)),
    "triplet_margin": ({}, lambda: tuple(EMB)),
    "triplet_margin_with_distance": ({"distance_function": torch.nn.PairwiseDistance()}, lambda: tuple(EMB)),
    "composite": ({"losses": {"cross_entropy": 1.0, "multi_margin": 0.5}}, lambda: (LOGITS, LABELS)),
}


def test_every_registered_loss_has_a_case() -> None:
    assert set(list_losses()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_loss_gives_a_finite_value_and_gradient(name: str) -> None:
    kwargs, make_args = CASES[name]
    args = [a.clone().requires_grad_(True) if i == 0 else a for i, a in enumerate(make_args())]
    value = get_loss(name, **kwargs)(*args)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(args[0].grad).all()


def test_composite_loss_is_the_weighted_sum_of_its_parts() -> None:
    targets = MULTI_HOT
    composite = CompositeLoss({"bce_with_logits": 1.0, "mse": 0.1, "l1": 2.5})
    expected = (F.binary_cross_entropy_with_logits(LOGITS, targets) + 0.1 * F.mse_loss(LOGITS, targets)
                + 2.5 * F.l1_loss(LOGITS, targets))
    torch.testing.assert_close(composite(LOGITS, targets), expected)


def test_composite_loss_takes_pairs_of_objects_or_names() -> None:
    smooth = get_loss("cross_entropy", label_smoothing=0.2)
    composite = CompositeLoss([(smooth, 0.5), ("multi_margin", 2.0), (lambda o, t: o.sum() * 0, 3.0)])
    expected = 0.5 * F.cross_entropy(LOGITS, LABELS, label_smoothing=0.2) + 2.0 * F.multi_margin_loss(LOGITS, LABELS)
    torch.testing.assert_close(composite(LOGITS, LABELS), expected)
    assert composite.names[:2] == ["CrossEntropyLoss", "multi_margin"]


@pytest.mark.parametrize("bad", [{}, {"mse": float("nan")}, [("mse", "heavy")]])
def test_composite_loss_rejects_empty_or_non_numeric_weights(bad: object) -> None:
    with pytest.raises(ValueError, match="CompositeLoss"):
        CompositeLoss(bad)  # type: ignore[arg-type]


def test_unknown_loss_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'cross_entropy'") as err:
        get_loss("cross_entropi")
    assert "triplet_margin_with_distance" in str(err.value)
    with pytest.raises(UnknownNameError, match="valid|Valid"):
        CompositeLoss({"no_such_loss": 1.0})


def test_user_loss_registers_and_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))

    @register_loss("abs_sum")
    class AbsSum(torch.nn.Module):
        def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return (outputs - targets).abs().sum()

    assert isinstance(get_loss("ABS-SUM"), AbsSum)

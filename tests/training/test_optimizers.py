from __future__ import annotations

import pytest
import torch
from torch import nn

from cleanai.errors import UnknownNameError
from cleanai.training import OPTIMIZERS, get_optimizer, list_optimizers, register_optimizer

BUILT_IN = {"sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax"}


def test_every_requested_optimizer_is_registered() -> None:
    assert BUILT_IN <= set(list_optimizers())


@pytest.mark.parametrize("name", list_optimizers())
def test_each_optimizer_takes_a_step_that_lowers_a_quadratic(name: str) -> None:
    w = nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = get_optimizer(name, [w], lr=0.1)
    before = (w.detach() ** 2).sum()
    for _ in range(3):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert torch.isfinite(w).all()
    assert (w.detach() ** 2).sum() < before


def test_sgd_nesterov_momentum_matches_torch() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ours = get_optimizer("sgd", a, lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(5, 3)
    for model, opt in ((a, ours), (b, ref)):
        for _ in range(3):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_unknown_optimizer_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="adamw") as err:
        get_optimizer("adamx", [nn.Parameter(torch.zeros(1))])
    assert all(name in str(err.value) for name in BUILT_IN)


def test_unknown_keyword_names_the_accepted_ones() -> None:
    with pytest.raises(TypeError, match=r"'momentom'.*accepts: .*momentum"):
        get_optimizer("sgd", [nn.Parameter(torch.zeros(1))], momentom=0.9)


def test_user_optimizer_registers_with_the_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OPTIMIZERS, "_items", dict(OPTIMIZERS._items))

    @register_optimizer("plain_sgd")
    def plain_sgd(params, lr: float = 0.01) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr)

    assert "plain_sgd" in list_optimizers()
    opt = get_optimizer("plain_sgd", [nn.Parameter(torch.zeros(1))], lr=0.5)
    assert opt.param_groups[0]["lr"] == 0.5

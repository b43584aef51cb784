"""TF-MOT sparsity schedules: the formula, the update steps, and refused orderings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cleanai.pruning import ConstantSparsity, PolynomialDecay


def test_schedules_with_end_before_begin_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"end_step \(5\) must be greater than begin_step \(10\)"):
        PolynomialDecay(begin_step=10, end_step=5)
    with pytest.raises(ValidationError, match=r"end_step \(10\) must be greater than begin_step \(10\)"):
        PolynomialDecay(begin_step=10, end_step=10)
    with pytest.raises(ValidationError, match=r"end_step \(3\) must be >= begin_step \(4\)"):
        ConstantSparsity(begin_step=4, end_step=3)


def test_polynomial_decay_follows_the_tfmot_formula() -> None:
    schedule = PolynomialDecay(initial_sparsity=0.1, begin_step=10, end_step=50, frequency=15)
    # s(t) = s_f + (s_i - s_f) (1 - clip((t - 10) / 40, 0, 1))^3 with s_i = 0.1, s_f = 0.9
    expected = {0: 0.1, 10: 0.1, 20: 0.9 - 0.8 * 0.75 ** 3, 30: 0.8, 40: 0.9 - 0.8 * 0.25 ** 3, 50: 0.9, 70: 0.9}
    for step, value in expected.items():
        assert schedule.sparsity_at(step, 0.9) == pytest.approx(value, abs=1e-12)
    assert PolynomialDecay(end_step=4, power=1).sparsity_at(1, 0.8) == pytest.approx(0.2)
    # updates at begin_step, every `frequency` steps, and at end_step (TF-MOT would skip 50 here)
    assert [t for t in range(80) if schedule.should_update(t)] == [10, 25, 40, 50]


def test_constant_sparsity_updates_from_begin_step_every_frequency_steps() -> None:
    forever = ConstantSparsity(begin_step=3, frequency=4)
    assert [t for t in range(20) if forever.should_update(t)] == [3, 7, 11, 15, 19]
    assert forever.sparsity_at(0, 0.6) == forever.sparsity_at(100, 0.6) == 0.6
    assert [t for t in range(20) if ConstantSparsity(begin_step=3, end_step=8, frequency=4).should_update(t)] == [3, 7]

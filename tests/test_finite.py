"""Non-finite detection: the tensors holding NaN or inf are named, with how many of their values are bad."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cleanai._finite import NonFiniteWarning, check_finite, nonfinite_tensors
from cleanai.errors import DataError


def test_parameters_and_buffers_are_named_with_their_bad_value_counts():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    assert nonfinite_tensors(model) == []
    with torch.no_grad():
        model[0].weight[0, :2] = float("nan")
        model[1].running_var[1] = float("inf")
        model[1].num_batches_tracked += 1  # integer buffers cannot be non-finite and are skipped
    assert nonfinite_tensors(model) == ["0.weight (2 of 12 values nan)", "1.running_var (1 of 3 values inf)"]


def test_arrays_batches_and_the_limit():
    arrays = {"a": np.array([1.0, np.inf, -np.inf, np.nan], dtype=np.float32), "ids": np.array([1, 2])}
    assert nonfinite_tensors(arrays) == ["a (3 of 4 values nan/inf)"]
    batches = [torch.ones(2, 2), {"input_ids": torch.tensor([1]), "pixels": torch.tensor([0.0, float("nan")])}]
    assert nonfinite_tensors(batches) == ["batch 1 pixels (1 of 2 values nan)"]
    many = {f"t{i}": torch.tensor([float("nan")]) for i in range(5)}
    assert len(nonfinite_tensors(many, limit=2)) == 2


def test_check_finite_raises_the_given_error_or_warns():
    bad = {"w": torch.tensor([float("inf")])}
    with pytest.raises(DataError, match=r"the data hold NaN or inf: w \(1 of 1 values inf\); use finite data"):
        check_finite(bad, "the data", DataError, "use finite data")
    with pytest.warns(NonFiniteWarning, match=r"the data hold NaN or inf: w"):
        check_finite(bad, "the data")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_finite({"w": torch.zeros(3)}, "the data")  # finite: silent

"""Calibration batches: data-driven pruning and quantization refuse NaN or infinite inputs by batch."""

import pytest
import torch

from cleanai._batches import non_finite, take_batches
from cleanai.errors import DataError


def test_calibration_batches_with_non_finite_inputs_are_refused_by_index():
    good = torch.zeros(4, 1, 8, 8)
    bad = good.clone()
    bad[0, 0, 0, 0], bad[1, 0, 0, 0], bad[2, 0, 0, 0] = float("nan"), float("nan"), float("inf")
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(DataError, match=r"wanda: calibration batch 1 holds 2 NaN and 1 infinite value\(s\)"):
        take_batches([(good, labels), (bad, labels)], 8, "wanda")
    assert len(take_batches([(good, labels)] * 3, 2, "wanda")) == 2
    ids = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    assert non_finite(ids) is None and non_finite((good, bad)) == "2 NaN and 1 infinite value(s)"

"""The one batch convention: (inputs, targets), inputs a Tensor, a tuple or a dict of Tensors, batch on axis 0."""

from __future__ import annotations

import pytest
import torch

from cleanai._batches import batch_len, dynamic_dims, is_tensor_tuple, map_inputs, split_batch
from cleanai.errors import DataError


def test_a_tuple_of_tensors_is_one_batch_of_several_inputs() -> None:
    image, features, targets = torch.randn(8, 1, 4, 4), torch.randn(8, 3), torch.zeros(8)
    inputs, got = split_batch(((image, features), targets))
    assert is_tensor_tuple(inputs) and got is targets
    assert batch_len(inputs) == 8  # samples, not the 2 inputs
    assert batch_len({"input_ids": torch.zeros(5, 7), "attention_mask": torch.ones(5, 7)}) == 5
    assert batch_len(["a text", "another"]) == 2
    with pytest.raises(DataError, match="of type int are not supported"):
        batch_len(3)


def test_map_inputs_keeps_the_structure() -> None:
    doubled = map_inputs((torch.ones(2, 3), {"mask": torch.ones(2)}), lambda t: t * 2)
    assert isinstance(doubled, tuple) and float(doubled[0].sum()) == 12 and float(doubled[1]["mask"].sum()) == 4


def test_only_integer_token_inputs_of_rank_two_have_a_sequence_axis() -> None:
    assert dynamic_dims(torch.zeros(2, 7, dtype=torch.long)) == (0, 1)  # input_ids, attention_mask
    assert dynamic_dims(torch.randn(2, 3, 16, 16)) == (0,)  # an image keeps its channels and size
    assert dynamic_dims(torch.randn(2, 16)) == (0,)  # float features are not a sequence
    assert dynamic_dims(torch.zeros(2, 4, 5, dtype=torch.long)) == (0,)

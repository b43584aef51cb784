from __future__ import annotations

import json

import pytest

from cleanai.training import History


def test_history_serialises_and_indexes_by_key(tmp_path) -> None:
    h = History(records=[{"epoch": 1, "train_loss": 0.9, "lr": 0.1}, {"epoch": 2, "train_loss": 0.5, "lr": 0.05}],
                monitor="train_loss", mode="min", best_epoch=2, best_value=0.5, stop_reason="completed")
    assert h["train_loss"] == [0.9, 0.5]
    assert h.last["epoch"] == 2 and len(h) == 2
    text = h.to_json(tmp_path / "history.json")
    assert json.loads((tmp_path / "history.json").read_text()) == json.loads(text) == h.to_dict()
    assert History.from_dict(json.loads(text)) == h


def test_missing_key_lists_the_recorded_ones() -> None:
    with pytest.raises(KeyError, match="train_loss"):
        History(records=[{"epoch": 1, "train_loss": 1.0}])["val_loss"]

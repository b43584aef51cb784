"""CLINC150 on the real shared oos-eval files, plus its configuration and file errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cleanai.data import load_clinc150, load_dataset
from cleanai.errors import DataError, UnknownNameError


@pytest.fixture(scope="module")
def full(shared_data_dir):
    return load_dataset("clinc150", root=shared_data_dir / "clinc150")


def _write(folder: Path, data: object, name: str = "data_full.json") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_full_config_counts_match_the_readme(full):
    assert (len(full.train), len(full.val), len(full.test)) == (15100, 3100, 5500)
    assert full.name == "clinc150-full" and full.task == "text" and full.input_shape is None


def test_labels_are_150_sorted_intents_then_oos(full):
    assert len(full.label_names) == 151 and full.label_names[-1] == "oos"
    assert full.label_names[:150] == sorted(full.label_names[:150])
    oos = full.label_names.index("oos")
    train = Counter(label for _, label in full.train)
    assert train[oos] == 100 and all(train[i] == 100 for i in range(150))
    assert Counter(label for _, label in full.val)[oos] == 100
    assert Counter(label for _, label in full.test)[oos] == 1000


def test_items_are_text_and_int_label(full, shared_data_dir):
    text, label = full.train[0]
    raw = json.loads((shared_data_dir / "clinc150" / "data_full.json").read_text())["train"][0]
    assert (text, full.label_names[label]) == tuple(raw)
    assert isinstance(text, str) and isinstance(label, int)


@pytest.mark.parametrize(("config", "train"), [("plus", 15250), ("small", 7600), ("imbalanced", 10625)])
def test_other_configs(config, train):
    s = load_clinc150(config=config)  # default directory: $CLEANAI_DATA/clinc150
    assert (len(s.train), len(s.val), len(s.test)) == (train, 3100, 5500) and len(s.label_names) == 151


def test_without_oos_only_the_150_intents_remain(shared_data_dir):
    s = load_clinc150(shared_data_dir, include_oos=False)  # the parent folder is accepted too
    assert (len(s.train), len(s.val), len(s.test)) == (15000, 3000, 4500)
    assert len(s.label_names) == 150 and "oos" not in s.label_names


def test_default_loaders_give_raw_text_batches(full):
    texts, labels = next(iter(full.loaders(batch_size=8).train))
    assert isinstance(texts, list) and len(texts) == 8 and all(isinstance(t, str) for t in texts)
    assert labels.shape == (8,)


def test_unknown_config_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown CLINC150 config 'tiny'.*full.*plus.*small.*imbalanced"):
        load_clinc150(config="tiny")


def test_missing_file_names_directory_file_and_variable(tmp_path):
    with pytest.raises(DataError) as err:
        load_clinc150(tmp_path, config="small")
    msg = str(err.value)
    assert f"{tmp_path} (missing data_small.json)" in msg and "CLEANAI_DATA" in msg


def test_malformed_json_names_the_file(tmp_path):
    (tmp_path / "data_full.json").write_text('{"train": [', encoding="utf-8")
    with pytest.raises(DataError, match=r"data_full.json is not valid JSON"):
        load_clinc150(tmp_path)


def test_missing_split_and_bad_rows_are_named(tmp_path):
    pair = [["hi", "greeting"]]
    folder = _write(tmp_path / "a", {"train": pair, "val": pair, "test": pair})
    with pytest.raises(DataError, match="lacks the split\\(s\\) oos_train, oos_val, oos_test"):
        load_clinc150(folder)
    assert len(load_clinc150(folder, include_oos=False).train) == 1
    folder = _write(tmp_path / "b", {"train": [["hi"]], "val": pair, "test": pair})
    with pytest.raises(DataError, match="split 'train' must be a list of \\[text, intent\\] string pairs"):
        load_clinc150(folder, include_oos=False)

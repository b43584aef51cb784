"""CLINC150 intent classification (oos-eval JSON files), with its out-of-scope ("oos") queries.

Each `data_*.json` maps split names (`train`, `val`, `test`, `oos_train`, `oos_val`, `oos_test`)
to lists of `[text, intent]`. Labels are the 150 intents sorted alphabetically, then "oos".
"""

from __future__ import annotations

import json
from pathlib import Path

from cleanai.data.base import DATASETS, DataSplits, resolve_data_dir
from cleanai.data.text import TextDataset
from cleanai.errors import DataError, UnknownNameError

CONFIGS = {
    "full": "data_full.json",
    "plus": "data_oos_plus.json",
    "small": "data_small.json",
    "imbalanced": "data_imbalanced.json",
}
OOS = "oos"
SPLITS = ("train", "val", "test")


@DATASETS.register("clinc150")
def load_clinc150(root: str | Path | None = None, config: str = "full", include_oos: bool = True) -> DataSplits:
    """CLINC150 splits with items (text, label); `config` is full, plus, small or imbalanced.

    With `include_oos` the out-of-scope queries join each split under the last label, "oos"
    (full: 15,100 train, 3,100 val, 5,500 test); without it only the 150 intents remain.
    """
    if config not in CONFIGS:
        raise UnknownNameError(f"unknown CLINC150 config {config!r}; valid configs: "
                               + ", ".join(f"{k} ({v})" for k, v in CONFIGS.items()))
    folder = resolve_data_dir(root, ("clinc150",), [CONFIGS[config]], "CLINC150")
    pairs = _read(folder / CONFIGS[config], include_oos)
    intents = sorted({intent for split in pairs.values() for _, intent in split} - {OOS})
    label_names = intents + [OOS] if include_oos else intents
    index = {name: i for i, name in enumerate(label_names)}

    def part(split: str) -> TextDataset:
        rows = [(text, index[intent]) for text, intent in pairs[split] if intent in index]
        return TextDataset([t for t, _ in rows], [y for _, y in rows])

    return DataSplits(name=f"clinc150-{config}", train=part("train"), val=part("val"), test=part("test"),
                      label_names=label_names, task="text", input_shape=None)


def _read(path: Path, include_oos: bool) -> dict[str, list[tuple[str, str]]]:
    """The train/val/test [text, intent] pairs of one file (plus its oos_* lists if asked), validated."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    wanted = [*SPLITS, *(f"oos_{s}" for s in SPLITS)] if include_oos else list(SPLITS)
    missing = [k for k in wanted if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"{path} lacks the split(s) {', '.join(missing)}; an oos-eval file maps "
                        f"{', '.join(wanted)} to lists of [text, intent]")
    pairs: dict[str, list[tuple[str, str]]] = {}
    for key in wanted:
        rows = data[key]
        if not isinstance(rows, list) or not all(_is_pair(r) for r in rows):
            raise DataError(f"{path}: split {key!r} must be a list of [text, intent] string pairs")
        pairs.setdefault(key.removeprefix("oos_"), []).extend((text, intent) for text, intent in rows)
    return pairs


def _is_pair(row: object) -> bool:
    return isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) for v in row)

"""`History`: what happened in each epoch of a run, serialisable to a dict or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cleanai.io import PathLike, write_json


@dataclass
class History:
    """One record per epoch with `epoch`, `train_loss`, `val_loss`, `val_<metric>`, `lr` (of the first
    parameter group at the start of the epoch), `seconds`, and `grad_norm_mean`/`grad_norm_max` when
    gradient norms were measured (clipping by norm or TensorBoard logging). `history["val_loss"]`
    lists one key across epochs."""

    records: list[dict[str, float]] = field(default_factory=list)
    monitor: str | None = None
    mode: str | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    stop_reason: str | None = None  # "completed", "early_stopping" or "callback"

    def __getitem__(self, key: str) -> list[float]:
        if not any(key in r for r in self.records):
            known = sorted({k for r in self.records for k in r})
            raise KeyError(f"history has no {key!r}; it records: {', '.join(known) or '(no epochs yet)'}")
        return [r[key] for r in self.records if key in r]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, float]:
        """The most recent epoch's record."""
        return self.records[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(**{**data, "records": [dict(r) for r in data.get("records", [])]})

    def to_json(self, path: PathLike | None = None) -> str:
        """Return the history as JSON text; also write it (atomically) when `path` is given."""
        if path is not None:
            write_json(path, self.to_dict())
        return json.dumps(self.to_dict(), indent=2)

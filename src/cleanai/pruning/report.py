"""What a structured prune did: widths per layer, params and MACs before/after, per-step totals, warnings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class LayerChange(BaseModel):
    """Width of one layer before and after: output channels/features, or attention heads (`unit="heads"`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    unit: str = "channels"
    before: int
    after: int

    @property
    def removed_ratio(self) -> float:
        return 1.0 - self.after / self.before if self.before else 0.0


class LeftLayer(BaseModel):
    """A layer with parameters that pruning left as it was, its type, and why."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    reason: str


class StepRecord(BaseModel):
    """Totals after one iterative step, and how many channels/heads each pruned group lost in it."""

    model_config = ConfigDict(extra="forbid")

    step: int
    params: int
    macs: int
    seconds: float
    removed: dict[str, int]


class PruneReport(BaseModel):
    """JSON-serialisable summary of one `prune()` call (`model_dump(mode="json")`, `str()` gives a table)."""

    model_config = ConfigDict(extra="forbid")

    criterion: str
    config: dict[str, Any]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: list[LayerChange]
    steps: list[StepRecord] = []
    rewritten_modules: list[str] = []
    skipped_groups: dict[str, str] = {}
    left_as_is: list[LeftLayer] = []
    capped_layers: list[str] = []
    warnings: list[str] = []

    @property
    def params_ratio(self) -> float:
        """params after / before (0.6 means 40% fewer parameters)."""
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float:
        """MACs after / before."""
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def macs_speedup(self) -> float:
        """MACs before / after (the theoretical speed-up)."""
        return self.macs_before / self.macs_after if self.macs_after else float("inf")

    def changed_layers(self) -> list[LayerChange]:
        return [layer for layer in self.layers if layer.after != layer.before]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with the derived ratios included."""
        data = self.model_dump(mode="json")
        data.update(params_ratio=self.params_ratio, macs_ratio=self.macs_ratio, macs_speedup=self.macs_speedup)
        return data

    def __str__(self) -> str:
        lines = [
            f"pruned with {self.criterion!r}: params {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_ratio:.1%}), MACs {self.macs_before:,} -> {self.macs_after:,} "
            f"({self.macs_ratio:.1%}, {self.macs_speedup:.2f}x fewer)",
        ]
        changed = self.changed_layers()
        if changed:
            width = max(len(layer.name) for layer in changed)
            lines.append(f"{'layer':<{width}}  {'type':<14} {'before':>7} {'after':>7} {'removed':>8}")
            lines += [f"{c.name:<{width}}  {c.type + ('/' + c.unit if c.unit != 'channels' else ''):<14} "
                      f"{c.before:>7} {c.after:>7} {c.removed_ratio:>8.1%}" for c in changed]
        else:
            lines.append("no layer changed width")
        lines += [f"left as is: {left.name} ({left.type}): {left.reason}" for left in self.left_as_is]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

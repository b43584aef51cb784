"""Per-layer sensitivity: prune one group at a time at several ratios and measure what it costs.

`sensitivity_scan` prunes each prunable group (`prunable_groups`) alone, at each ratio, on a copy
of the model, and measures the accuracy (or any score) on a fixed validation subset and the MACs
left. `suggest_ratios` turns the scan into a per-layer `ratio_dict` that reaches a MAC target
while pruning sensitive layers lightly:

Greedy rule. Every layer starts at ratio 0. A move raises one layer to any higher scanned ratio;
its cost is the increase in that layer's accuracy drop (each layer's drops are first made
non-decreasing in the ratio and at least 0, so measurement noise cannot make a move pay), its
gain the MACs it saves. The move with the lowest cost per MAC saved is taken (ties: the larger
saving) until the per-layer savings add up to the target; then, because scanned ratios are
coarse, single layers are lowered again, largest drop relief first, while the savings still
reach the target. Savings of neighbouring layers overlap (a conv whose input and output both
shrink saves less than the sum of the two), so the sum is optimistic: given the model,
`suggest_ratios` prunes it with the suggestion, measures the real MACs and keeps adding moves
until the real reduction reaches the target.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from torch import nn

from cleanai._batches import (
    Batch,
    model_device,
    split_batch,
)

from cleanai.errors import CleanAIError, ConfigError, DataError
from cleanai.io import PathLike, atomic_path
from cleanai.pruning.structured import PruneConfig, prunable_groups, prune
from cleanai.training import TrainConfig, Trainer

EvalFn = Callable[[nn.Module], float]


class SensitivityPoint(BaseModel):
    """One layer pruned alone at `ratio`: the score, its drop from the baseline, the model's MACs and params."""

    model_config = ConfigDict(extra="forbid")

    ratio: float
    width: int  # channels (or heads) the layer kept
    score: float
    drop: float
    macs: int
    params: int


class LayerSensitivity(BaseModel):
    """The scan of one prunable group: its width and one point per ratio."""

    model_config = ConfigDict(extra="forbid")

    name: str
    width: int
    points: list[SensitivityPoint]


class SensitivityResult(BaseModel):
    """What `sensitivity_scan` measured; `str()` gives a table of drops, `plot()` a PNG."""

    model_config = ConfigDict(extra="forbid")

    criterion: str
    metric: str
    ratios: list[float]
    baseline: float
    macs_before: int
    params_before: int
    eval_batches: int | None  # batches of the validation subset (None for a custom eval_fn)
    config: dict[str, Any]  # the PruneConfig settings the scan used (ignored_layers, round_to, ...)
    layers: list[LayerSensitivity]

    def layer(self, name: str) -> LayerSensitivity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"layer {name!r} was not scanned; scanned: {', '.join(x.name for x in self.layers)}")

    def drop(self, name: str, ratio: float) -> float:
        """Score drop when `name` alone is pruned at `ratio` (one of the scanned ratios)."""
        for point in self.layer(name).points:
            if abs(point.ratio - ratio) < 1e-9:
                return point.drop
        raise KeyError(f"ratio {ratio} was not scanned; scanned: {self.ratios}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def __str__(self) -> str:
        width = max([len("layer"), *(len(x.name) for x in self.layers)])
        head = f"{'layer':<{width}} {'width':>6} " + " ".join(f"{f'drop@{r:g}':>9}" for r in self.ratios)
        lines = [f"{self.metric} baseline {self.baseline:.4f}, criterion {self.criterion!r}", head]
        for layer in self.layers:
            lines.append(f"{layer.name:<{width}} {layer.width:>6} " + " ".join(f"{p.drop:>9.4f}" for p in layer.points))
        return "\n".join(lines)

    def plot(self, path: PathLike) -> Path:
        """Write a PNG of the score drop against the ratio, one line per layer (atomically)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import (
            Figure,  # no pyplot: no global state, no display needed
        )

        fig = Figure(figsize=(8, 5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for layer in self.layers:
            ax.plot([p.ratio for p in layer.points], [p.drop for p in layer.points], marker="o", label=layer.name)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("fraction of the layer's channels removed")
        ax.set_ylabel(f"{self.metric} drop")
        ax.set_title(f"Sensitivity per layer ({self.criterion}, baseline {self.baseline:.4f})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6 if len(self.layers) > 12 else 8, ncol=1 + len(self.layers) // 20,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0))
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        return Path(path)


def sensitivity_scan(model: nn.Module, example_inputs: Any, data: Iterable[Batch] | EvalFn,
                     ratios: Sequence[float] = (0.1, 0.3, 0.5, 0.7), criterion: str = "magnitude", *,
                     layers: Sequence[str] | None = None, max_batches: int | None = 8,
                     calib: Iterable[Batch] | None = None, config: PruneConfig | None = None,
                     progress: bool = True) -> SensitivityResult:
    """Prune each group of `layers` (default: all `prunable_groups`) alone at each ratio and measure the drop.

    `data` is a validation loader (accuracy on its first `max_batches` batches, the same batches
    every time) or `eval_fn(model) -> score` (higher is better). `config` supplies the other
    pruning settings (criterion_kwargs, ignored_layers, round_to, calib_batches, seed); `calib`
    feeds data-driven criteria. The model is never modified. Costs one `prune()` and one
    evaluation per layer and ratio.
    """
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise ConfigError(f"ratios must be a non-empty list of fractions in (0, 1), got {list(ratios)}")
    ratios = sorted(float(r) for r in ratios)
    base = (config or PruneConfig()).model_copy(update={"criterion": criterion})
    base = PruneConfig.model_validate(base.model_dump())  # validates the criterion name
    groups = prunable_groups(model, example_inputs, base)
    names = list(groups) if layers is None else list(layers)
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise CleanAIError(f"layers {unknown} are not prunable groups of {type(model).__name__}; "
                           f"valid: {', '.join(groups)}")
    evaluate, metric, n_batches = _evaluator(data, max_batches)
    baseline = float(evaluate(model))

    results, counts = [], None
    for name in _progress(names, progress):
        points = []
        for ratio in ratios:
            cfg = base.model_copy(update={"ratio": 0.0, "head_ratio": None, "ratio_dict": {name: ratio},
                                          "iterative_steps": 1, "inplace": False})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # caps at high ratios are expected here
                pruned, report = prune(model, example_inputs, cfg, calib)
            counts = counts or (report.macs_before, report.params_before)
            score = float(evaluate(pruned))
            kept = next((c.after for c in report.layers if c.name == name), groups[name])
            points.append(SensitivityPoint(ratio=ratio, width=kept, score=score, drop=baseline - score,
                                           macs=report.macs_after, params=report.params_after))
        results.append(LayerSensitivity(name=name, width=groups[name], points=points))
    if counts is None:
        raise CleanAIError(f"{type(model).__name__} has no prunable group to scan")
    return SensitivityResult(criterion=criterion, metric=metric, ratios=ratios, baseline=baseline,
                             macs_before=counts[0], params_before=counts[1], eval_batches=n_batches,
                             config=base.model_dump(mode="json"), layers=results)


def _progress(names: list[str], show: bool) -> Iterable[str]:
    if not (show and sys.stderr.isatty()):
        return names
    from tqdm.auto import tqdm

    return tqdm(names, desc="sensitivity", unit="layer", dynamic_ncols=True, file=sys.stderr)


def _evaluator(data: Iterable[Batch] | EvalFn, max_batches: int | None) -> tuple[EvalFn, str, int | None]:
    """A score function: `data` itself, or top-1 accuracy on a fixed list of batches taken from it."""
    if callable(data) and not hasattr(data, "__iter__"):
        return data, getattr(data, "__name__", "score"), None
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"max_batches must be >= 1 or None (all batches), got {max_batches}")
    batches = list(itertools.islice(iter(data), max_batches))  # type: ignore[arg-type]
    if not batches or any(split_batch(b)[1] is None for b in batches):
        raise DataError("sensitivity_scan needs validation batches of (inputs, targets) to measure accuracy, "
                        "or an eval_fn(model) -> score")

    def accuracy(model: nn.Module) -> float:
        config = TrainConfig(metrics=["accuracy"], progress=False, device=str(model_device(model)))
        return Trainer(model, config=config).evaluate(batches)["accuracy"]

    return accuracy, "accuracy", len(batches)


def suggest_ratios(result: SensitivityResult, target_macs_reduction: float, *, max_ratio: float | None = None,
                   model: nn.Module | None = None, example_inputs: Any = None) -> dict[str, float]:
    """A `ratio_dict` (every scanned layer -> ratio, 0.0 = untouched) removing `target_macs_reduction` of the MACs.

    Use it as `PruneConfig(ratio=0.0, ratio_dict=suggested, ...)` (ratio 0 leaves unscanned groups
    alone). `max_ratio` caps any layer's ratio. See the module docstring for the greedy rule; with
    `model` and `example_inputs` the reduction is measured on the really pruned model, not estimated.
    """
    if not 0.0 < target_macs_reduction < 1.0:
        raise ConfigError(f"target_macs_reduction must be a fraction in (0, 1) of the MACs to remove, "
                         f"got {target_macs_reduction!r}")
    if (model is None) != (example_inputs is None):
        raise ConfigError("pass both model and example_inputs to measure the reduction, or neither to estimate it")
    options = {x.name: _options(result, x, max_ratio) for x in result.layers}
    level = {name: 0 for name in options}  # index into options[name]; 0 is (ratio 0, no drop, no saving)
    target = target_macs_reduction * result.macs_before
    wanted = target
    while True:
        while sum(options[n][i][2] for n, i in level.items()) < wanted:
            move = _cheapest_move(options, level)
            if move is None:
                reachable = sum(opts[-1][2] for opts in options.values()) / result.macs_before
                raise CleanAIError(
                    f"a {target_macs_reduction:.1%} MAC reduction is out of reach: pruning every scanned layer at its "
                    f"highest ratio ({max_ratio or max(result.ratios)}) saves about {reachable:.1%}; scan higher "
                    "ratios or more layers, or lower the target")
            level[move[0]] = move[1]
        _trim(options, level, wanted)
        suggested = {name: options[name][i][0] for name, i in level.items()}
        if model is None:
            return suggested
        saved = result.macs_before - _measured_macs(model, example_inputs, result, suggested)
        if saved >= target - 1e-9 * result.macs_before:
            return suggested
        wanted = sum(options[n][i][2] for n, i in level.items()) + (target - saved)


def _options(result: SensitivityResult, layer: LayerSensitivity,
             max_ratio: float | None) -> list[tuple[float, float, int]]:
    """(ratio, effective drop, MACs saved) per allowed level, starting with (0, 0, 0); drops made non-decreasing."""
    options, worst = [(0.0, 0.0, 0)], 0.0
    for point in sorted(layer.points, key=lambda p: p.ratio):
        worst = max(worst, point.drop)
        if max_ratio is None or point.ratio <= max_ratio + 1e-9:
            options.append((point.ratio, worst, result.macs_before - point.macs))
    return options


def _cheapest_move(options: dict[str, list[tuple[float, float, int]]],
                   level: dict[str, int]) -> tuple[str, int] | None:
    best: tuple[tuple[float, float], str, int] | None = None
    for name, opts in options.items():
        _, drop, saved = opts[level[name]]
        for j in range(level[name] + 1, len(opts)):
            gain = opts[j][2] - saved
            if gain <= 0:
                continue
            key = ((opts[j][1] - drop) / gain, -gain)
            if best is None or key < best[0]:
                best = (key, name, j)
    return None if best is None else (best[1], best[2])


def _trim(options: dict[str, list[tuple[float, float, int]]], level: dict[str, int], wanted: float) -> None:
    """Undo overshoot: lower single layers while the savings still reach `wanted`, largest drop relief first."""
    while True:
        total = sum(options[n][i][2] for n, i in level.items())
        best: tuple[tuple[float, int], str, int] | None = None
        for name, opts in options.items():
            _, drop, saved = opts[level[name]]
            for j in range(level[name]):
                loss = saved - opts[j][2]
                relief = drop - opts[j][1]
                if total - loss >= wanted and relief > 0:
                    key = (-relief, loss)
                    if best is None or key < best[0]:
                        best = (key, name, j)
        if best is None:
            return
        level[best[1]] = best[2]


def _measured_macs(model: nn.Module, example_inputs: Any, result: SensitivityResult, ratios: dict[str, float]) -> int:
    """MACs of `model` pruned with `ratios` (widths do not depend on the criterion, so magnitude is used)."""
    cfg = PruneConfig.model_validate({**result.config, "criterion": "magnitude", "criterion_kwargs": {},
                                      "ratio": 0.0, "head_ratio": None, "ratio_dict": ratios,
                                      "iterative_steps": 1, "inplace": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = prune(model, example_inputs, cfg)
    return report.macs_after

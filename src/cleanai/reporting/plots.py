"""Report figures as PNG bytes (matplotlib without pyplot: no global state, no display)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def curves_png(series: Mapping[str, Sequence[float]], title: str, xlabel: str = "epoch") -> bytes:
    """Line chart of named series over epochs: losses on the left axis, other values (accuracy) on the right."""
    fig = Figure(figsize=(7, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    right = None
    for name, values in series.items():
        epochs = range(1, len(values) + 1)
        if "loss" in name:
            ax.plot(epochs, values, marker="o", markersize=3, label=name)
        else:
            right = right or ax.twinx()
            right.plot(epochs, values, marker="s", markersize=3, linestyle="--", label=name, color="tab:green")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel("score")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def widths_png(layers: Sequence[tuple[str, int, int]], title: str) -> bytes:
    """Grouped bars of each layer's width before and after pruning: (name, before, after)."""
    fig = Figure(figsize=(7, max(2.4, 0.32 * len(layers) + 1.2)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = range(len(layers))
    ax.barh([p + 0.2 for p in positions], [before for _, before, _ in layers], height=0.4, label="before",
            color="lightgray", edgecolor="k")
    ax.barh([p - 0.2 for p in positions], [after for _, _, after in layers], height=0.4, label="after",
            color="tab:blue")
    ax.set_yticks(list(positions), [name for name, _, _ in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("channels / features")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def pareto_png(points: Sequence[tuple[float, float, float, bool]], title: str, *, xlabel: str, ylabel: str,
               floor: float | None = None, chosen: tuple[float, float] | None = None) -> bytes:
    """Scatter of candidates (x, y, bubble area, on the Pareto front): the front drawn as a step line, an
    accuracy `floor` as a dashed line and the `chosen` point starred."""
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for on_front, color, label in ((False, "lightgray", "candidate"), (True, "tab:blue", "Pareto front")):
        chosen_points = [p for p in points if p[3] == on_front]
        if chosen_points:
            ax.scatter([p[0] for p in chosen_points], [p[1] for p in chosen_points],
                       s=[max(12.0, p[2]) for p in chosen_points], color=color, edgecolor="k", alpha=0.8, label=label)
    front = sorted((p[0], p[1]) for p in points if p[3])
    if len(front) > 1:
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="tab:blue", linewidth=0.8)
    if floor is not None:
        ax.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label="accuracy floor (budget)")
    if chosen is not None:
        ax.scatter([chosen[0]], [chosen[1]], marker="*", s=260, color="gold", edgecolor="k", zorder=5, label="chosen")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    return _png(fig)

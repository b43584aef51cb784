from __future__ import annotations

import io

from PIL import Image

from cleanai.reporting import curves_png, widths_png


def test_curves_and_widths_are_png_figures_with_one_bar_pair_per_layer():
    curves = Image.open(io.BytesIO(curves_png({"train_loss": [1.0, 0.5], "val_accuracy": [0.5, 0.9]}, "t")))
    assert curves.format == "PNG" and curves.width > 300
    short = Image.open(io.BytesIO(widths_png([("a", 4, 2)], "t")))
    tall = Image.open(io.BytesIO(widths_png([(f"layer{i}", 8, 4) for i in range(20)], "t")))
    assert tall.height > short.height  # the chart grows with the layers it lists

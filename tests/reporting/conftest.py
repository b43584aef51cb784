from __future__ import annotations

import pytest

from cleanai.reporting import Code, Document, Figure, Paragraph, Section, Table, curves_png, widths_png


@pytest.fixture(scope="module")
def document() -> Document:
    """Two figures, a long table and code: enough for more than one PDF page."""
    curves = curves_png({"train_loss": [2.0, 1.2, 0.8], "val_loss": [2.1, 1.4, 1.0], "val_accuracy": [0.3, 0.6, 0.8]},
                        "train")
    widths = widths_png([("conv1", 16, 11), ("conv2", 32, 22), ("fc", 64, 45)], "magnitude")
    rows = [[f"variant {i}", f"{90 - i / 10:.2f}", f"{0.1 + i / 100:.3f}"] for i in range(60)]
    return Document("Report title", "a subtitle", [
        Section("Summary", [Paragraph("Plain text with <angle> & ampersand."), Code("name: demo\nsteps: []")]),
        Section("Variants", [Table(["variant", "accuracy %", "size MB"], rows, "a caption")]),
        Section("Figures", [Figure(curves, "curves caption"), Figure(widths, "widths caption")]),
    ])

"""`render_pdf`: a `Document` as a PDF (reportlab platypus), written atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Image, Paragraph, Preformatted, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.lib.utils import ImageReader

from cleanai.io import atomic_path
from cleanai.reporting.document import Code, Document, Figure
from cleanai.reporting.document import Paragraph as Text
from cleanai.reporting.document import Table as Grid

_WIDTH = A4[0] - 3 * cm  # the frame between the margins


def _table(grid: Grid, styles: dict) -> Table:
    cell = styles["BodyText"].clone("cell", fontSize=6.5, leading=8)
    head = cell.clone("head", fontName="Helvetica-Bold")
    data = [[Paragraph(escape(h), head) for h in grid.header]]
    data += [[Paragraph(escape(v), cell) for v in row] for row in grid.rows]
    table = Table(data, repeatRows=1, colWidths=[_WIDTH / len(grid.header)] * len(grid.header))
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    return table


def _image(figure: Figure) -> Image:
    width, height = ImageReader(io.BytesIO(figure.png)).getSize()
    scale = min(_WIDTH / width, 17 * cm / height)
    return Image(io.BytesIO(figure.png), width=width * scale, height=height * scale)


def render_pdf(document: Document, path: str | os.PathLike[str]) -> Path:
    """Write `document` as a PDF at `path` (A4: sections, tables with repeated headers, figures scaled to fit)."""
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10, textColor=colors.grey)
    code = styles["Code"].clone("code", fontSize=6.5, leading=8)
    story: list = [Paragraph(escape(document.title), styles["Title"])]
    if document.subtitle:
        story.append(Paragraph(escape(document.subtitle), small))
    for section in document.sections:
        story.append(Paragraph(escape(section.title), styles["Heading2"]))
        for block in section.blocks:
            if isinstance(block, Text):
                story.append(Paragraph(escape(block.text), styles["BodyText"]))
            elif isinstance(block, Code):
                story.append(Preformatted(block.text, code, maxLineLength=130))
            elif isinstance(block, Grid):
                story.append(_table(block, styles))
                if block.caption:
                    story.append(Paragraph(escape(block.caption), small))
            elif isinstance(block, Figure):
                story += [_image(block), Paragraph(escape(block.caption), small)]
            story.append(Spacer(1, 0.25 * cm))
    path = Path(path)
    with atomic_path(path) as tmp:
        SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=1.5 * cm, rightMargin=1.5 * cm, topMargin=1.5 * cm,
                          bottomMargin=1.5 * cm, title=document.title, author="CleanAI").build(story)
    return path

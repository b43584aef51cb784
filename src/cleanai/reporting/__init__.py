"""Reports: a `Document` of sections (paragraphs, tables, code, PNG figures) rendered as PDF (reportlab) or as
one self-contained HTML page, plus the figures reports share (training curves, widths before/after)."""

from cleanai.reporting.document import Code, Document, Figure, Paragraph, Section, Table
from cleanai.reporting.html import render_html
from cleanai.reporting.pdf import render_pdf
from cleanai.reporting.plots import curves_png, pareto_png, widths_png

__all__ = ["Code", "Document", "Figure", "Paragraph", "Section", "Table", "curves_png", "pareto_png", "render_html",
           "render_pdf", "widths_png"]

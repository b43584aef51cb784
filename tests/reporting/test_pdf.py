from __future__ import annotations

import subprocess
from pathlib import Path

from cleanai.reporting import render_pdf


def test_every_page_of_the_pdf_has_content_and_holds_the_table_and_every_figure(document, pdf_pages, ink, tmp_path):
    pdf = render_pdf(document, tmp_path / "report.pdf")
    pages = pdf_pages(pdf)
    assert len(pages) >= 2  # 60 table rows do not fit one page
    assert all(ink(page) > 0.005 for page in pages), [ink(p) for p in pages]
    images = subprocess.run(["pdfimages", "-list", str(pdf)], check=True, capture_output=True, text=True).stdout
    kinds = [line.split()[2] for line in images.strip().splitlines()[2:]]  # "image", or "smask" (its alpha channel)
    assert kinds.count("image") == len(document.figures())
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    for expected in ("Report title", "Variants", "accuracy %", "variant 59", "Plain text with <angle> & ampersand.",
                     "curves caption", "widths caption"):
        assert expected in text


def test_the_pdf_is_written_atomically_and_replaces_an_earlier_one(document, tmp_path):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"old")
    render_pdf(document, target)
    assert target.read_bytes().startswith(b"%PDF")
    assert [p.name for p in Path(tmp_path).iterdir()] == ["report.pdf"]

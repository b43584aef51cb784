from __future__ import annotations

import re

from cleanai.reporting import render_html


def test_the_html_page_is_self_contained_and_chromium_shows_the_table_and_every_figure(document, html_page, ink, tmp_path):
    html = render_html(document, tmp_path / "report.html")
    text = html.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"(?!data:)", text)  # nothing fetched: every image is a data URI
    shot, dom = html_page(html)
    assert ink(shot) > 0.02
    assert f'data-images-decoded="{len(document.figures())}"' in dom
    assert dom.count("<table>") == len(document.tables()) and "variant 59" in dom
    assert "Plain text with &lt;angle&gt; &amp; ampersand." in dom

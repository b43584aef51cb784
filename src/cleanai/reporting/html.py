"""`render_html`: a `Document` as one self-contained HTML page (inline CSS, images as base64 data URIs)."""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path

from cleanai.io import atomic_open
from cleanai.reporting.document import Code, Document, Figure, Paragraph, Table

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { margin-bottom: 0.2em; } .subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: left; } th { background: #e8eef7; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption, .caption { color: #666; font-size: 0.85em; }
"""


def _block(block: Paragraph | Table | Code | Figure) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Code):
        return f"<pre>{escape(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{escape(h)}</th>" for h in block.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in block.rows)
        caption = f'<p class="caption">{escape(block.caption)}</p>' if block.caption else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}"
    data = base64.b64encode(block.png).decode("ascii")
    return (f'<figure><img alt="{escape(block.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(block.caption)}</figcaption></figure>")


def render_html(document: Document, path: str | os.PathLike[str]) -> Path:
    """Write `document` as one HTML file at `path` that needs nothing else (no network, no side files)."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(document.title)}"
             f"</title><style>{_STYLE}</style></head><body><h1>{escape(document.title)}</h1>"]
    if document.subtitle:
        parts.append(f'<p class="subtitle">{escape(document.subtitle)}</p>')
    for section in document.sections:
        parts.append(f"<section><h2>{escape(section.title)}</h2>")
        parts += [_block(b) for b in section.blocks]
        parts.append("</section>")
    parts.append("</body></html>\n")
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    return path

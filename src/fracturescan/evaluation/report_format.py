"""Rendering of a report's blocks as Markdown and as one self-contained HTML page (figures embedded).

A report is a list of blocks, each ``(kind, *args)`` with kind ``h1``/``h2``/``h3``, ``warning``
(title, text), ``note`` (title, text), ``p``, ``img`` (path, alt) or ``table`` (header, rows).
Both renderers read the same blocks, so the Markdown and HTML versions never drift apart.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Block = tuple[Any, ...]


def md_cell(text: Any) -> str:
    """Keep a value from breaking a Markdown table row or being read as HTML."""
    text = str(text).replace("\n", " ")
    for char in "\\|<>":
        text = text.replace(char, "\\" + char)
    return text


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render blocks as GitHub-flavoured Markdown."""
    out: list[str] = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {args[0]}")
        elif kind == "warning":
            out.append(f"> **WARNING: {args[0]}**\n>\n> **{args[1]}**")
        elif kind == "note":
            out.append(f"> **{args[0]}** {args[1]}")
        elif kind == "p":
            out.append(args[0])
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
        elif kind == "table":
            header, rows = args
            lines = ["| " + " | ".join(md_cell(h) for h in header) + " |",
                     "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;
padding:.3em .7em;text-align:left}th{background:#eee}
.warning{background:#b00020;color:#fff;padding:1em 1.2em;font-size:1.15em;border-radius:4px}
.note{background:#fff4d6;border-left:5px solid #e0a000;padding:.6em 1em}
img{max-width:100%;border:1px solid #ddd}"""


def _image_source(path: str, base: Path | None) -> str:
    """A figure as a base64 ``data:`` URI read from ``base / path`` (so the page travels as one
    file), or the relative path itself when no base directory is given."""
    if base is None:
        return path
    data = (Path(base) / path).read_bytes()
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def to_html(blocks: Sequence[Block], title: str, *, base: Path | None = None) -> str:
    """Render blocks as one HTML page. With ``base`` (the directory the ``img`` paths are
    relative to) every figure is embedded, so the page is self-contained and can be mailed as
    one file; without it figures are linked by their relative path."""
    e = html.escape
    body: list[str] = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(args[0])}</{kind}>")
        elif kind == "warning":
            body.append(f'<div class="warning" role="alert"><strong>WARNING: {e(args[0])}</strong>'
                        f"<br>{e(args[1])}</div>")
        elif kind == "note":
            body.append(f'<p class="note"><strong>{e(args[0])}</strong> {e(args[1])}</p>')
        elif kind == "p":
            body.append(f"<p>{e(args[0])}</p>")
        elif kind == "img":
            body.append(f'<p><img src="{e(_image_source(args[0], base))}" alt="{e(args[1])}"></p>')
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{e(str(h))}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                            for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")

"""A report as a list of blocks (headings, paragraphs, tables, images), written out both as
Markdown and as a self-contained HTML page from the same blocks, so the two never disagree."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import List, Sequence, Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: Sequence[str]
    rows: List[Sequence[str]] = field(default_factory=list)


@dataclass
class Image:
    path: str  # relative to the report
    alt: str


Block = Union[Heading, Paragraph, Table, Image]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: List[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows)
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path})")
        out.append("")
    return "\n".join(out)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
          "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
          "td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f3f3f3}")


def to_html(blocks: Sequence[Block], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in b.header) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append("</table>")
        elif isinstance(b, Image):
            out.append(f"<p><img src='{html.escape(b.path)}' alt='{html.escape(b.alt)}'></p>")
    out.append("</body></html>")
    return "\n".join(out)

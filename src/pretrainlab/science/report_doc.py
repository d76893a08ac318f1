"""The report as a list of blocks (headings, text, notices, tables, images), rendered twice: as Markdown
(images linked as files) and as one self-contained HTML page (images inlined as base64 PNG, inline CSS,
no scripts, no external references), so both files always say the same thing.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from pretrainlab.science.plots import is_png


@dataclass
class Heading:
    """A section title; level 1 is the report title, 2 a section, 3 a subsection."""

    text: str
    level: int = 2


@dataclass
class Para:
    """A paragraph of plain text."""

    text: str


@dataclass
class Notice:
    """Something the reader must not miss: an incomplete run, a failed point, an unreadable file."""

    text: str


@dataclass
class Table:
    """Rows of already formatted cells; rows whose index is in `marked` are emphasised (e.g. the best)."""

    headers: list[str]
    rows: list[list[str]]
    marked: set[int] = field(default_factory=set)


@dataclass
class Image:
    """A PNG: `file` is read now (HTML inlines it); `href` is how report.md links it."""

    file: Path
    href: str
    caption: str


Block = Union[Heading, Para, Notice, Table, Image]


@dataclass
class PlotTarget:
    """Where generated plots go while the report is written, and how the report refers to them.

    `dir` is the temporary plots folder (moved into place at the end); `prefix` namespaces the file
    names of one part of the report (a sweep nested in a replication) so parts never collide.
    """

    dir: Path
    href: str = "plots"
    prefix: str = ""

    def file(self, name: str) -> Path:
        """The path a plot called `name` (without .png) is written to."""
        return self.dir / f"{slug(self.prefix + name)}.png"

    def block(self, written: Path | None, caption: str) -> Block:
        """An Image for a plot that was written, or a line saying there was nothing to plot."""
        if written is None:
            return Para(f"{caption}: no finite values to plot.")
        return Image(written, f"{self.href}/{written.name}", caption)

    def nested(self, prefix: str) -> PlotTarget:
        """The same folder with a longer file-name prefix."""
        return PlotTarget(self.dir, self.href, self.prefix + prefix)


def slug(text: str) -> str:
    """A safe file-name fragment: runs of anything but letters, digits, '.', '_' and '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "plot"


def fmt(value: Any) -> str:
    """One table cell: integers with thousands separators, floats to 4 decimals (or 3 significant
    digits in scientific notation when very large or small), NaN/inf spelled out, None as '—'."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        if value.is_integer() and 100 <= abs(value) < 1e15:  # token counts and sizes stored as floats
            return f"{int(value):,}"
        if 1e-2 <= abs(value) < 1e5:
            return f"{value:.4f}"
        return f"{value:.3e}"
    return str(value)


# ---------------------------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, blocks: list[Block]) -> str:
    """report.md: GitHub-flavoured Markdown; images are relative links to the PNG files."""
    lines = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * max(2, min(b.level, 6)) + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Notice):
            lines += [f"> **Note:** {b.text}", ""]
        elif isinstance(b, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            for i, row in enumerate(b.rows):
                cells = [_md_cell(c) for c in row]
                if i in b.marked:
                    cells = [f"**{c}**" if c else c for c in cells]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        elif isinstance(b, Image):
            lines += [f"![{b.caption}]({b.href})", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.35em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
tr.marked td { background: #dafbe1; font-weight: 600; }
.notice { border-left: 4px solid #d4a72c; background: #fff8c5; padding: .4em .8em; margin: .8em 0; }
figure { margin: .8em 0 1.4em; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .85em; color: #57606a; }
"""


def _img_html(b: Image) -> str:
    caption = html.escape(b.caption)
    if not is_png(b.file):
        return f'<p class="notice">{caption}: {html.escape(str(b.file))} is missing or not a valid PNG.</p>'
    data = base64.b64encode(b.file.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_html(title: str, blocks: list[Block]) -> str:
    """report.html: one file that opens anywhere; every PNG inlined, no scripts, no external assets."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            level = max(2, min(b.level, 6))
            out.append(f"<h{level}>{html.escape(b.text)}</h{level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{html.escape(b.text)}</p>")
        elif isinstance(b, Notice):
            out.append(f'<p class="notice"><strong>Note:</strong> {html.escape(b.text)}</p>')
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
            for i, row in enumerate(b.rows):
                cls = ' class="marked"' if i in b.marked else ""
                out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(b, Image):
            out.append(_img_html(b))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def relative_href(file: Path, out_dir: Path) -> str:
    """How report.md in `out_dir` links to `file` (a path relative to it, with forward slashes)."""
    return Path(os.path.relpath(file.resolve(), out_dir.resolve())).as_posix()

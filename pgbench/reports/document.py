"""The report's document model: headings, paragraphs, tables and figures as blocks of inline runs
(plain, bold, code), rendered to Markdown and to self-contained HTML, and the number formats every
section uses. Report sections (:mod:`pgbench.reports.report` and the sections of other families,
e.g. :mod:`pgbench.reports.llm`) build a :class:`Doc` from these."""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np


# ----------------------------------------------------------------------------- document model

@dataclass
class Inline:
    """A run of text: ``kind`` is ``t`` (plain), ``b`` (bold), ``c`` (code) or ``bc``."""
    text: str
    kind: str = "t"


def B(text) -> Inline:
    return Inline(str(text), "b")


def C(text) -> Inline:
    return Inline(str(text), "c")


class Doc:
    """Blocks rendered to Markdown and HTML alike."""

    def __init__(self):
        self.blocks = []

    def h(self, level: int, text, anchor: Optional[str] = None):
        self.blocks.append(("h", level, text, anchor))

    def p(self, *parts):
        self.blocks.append(("p", parts))

    def ul(self, items):
        self.blocks.append(("ul", list(items)))

    def table(self, headers, rows, numeric=(), key=()):
        """``numeric``: right-aligned columns; ``key``: columns that must stay readable on a narrow
        screen (the verdicts: kept near the left, never wrapped)."""
        self.blocks.append(("table", list(headers), [list(r) for r in rows], set(numeric), set(key)))

    def img(self, rel: str, alt: str, data: bytes):
        self.blocks.append(("img", rel, alt, data))

    def toc(self):
        """Where the table of contents goes (HTML: folded; Markdown viewers make their own)."""
        self.blocks.append(("toc",))

    def fold(self, summary):
        """Start a folded part (HTML ``<details>``; Markdown shows it as it is) up to :meth:`end_fold`."""
        self.blocks.append(("fold", summary))

    def end_fold(self):
        self.blocks.append(("end_fold",))


def _parts(x) -> list:
    if isinstance(x, Inline):
        return [x]
    if isinstance(x, (list, tuple)):
        out = []
        for y in x:
            out += _parts(y)
        return out
    return [Inline(str(x))]


def _md_escape(t: str, in_table: bool) -> str:
    """Escape only what Markdown would misread: backslash, backtick, '*', '_' at a word edge,
    '<' opening a tag, a leading '#', and '|' inside tables."""
    t = re.sub(r"([\\`*])", r"\\\1", t)
    t = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", t)
    t = re.sub(r"<(?=[A-Za-z/!?])", r"\\<", t)
    t = re.sub(r"^#", r"\\#", t)
    return t.replace("|", "\\|") if in_table else t


def _md_inline(x, in_table: bool = False) -> str:
    out = []
    for part in _parts(x):
        t = part.text
        if "c" in part.kind:
            t = t.replace("`", "'")
            s = f"`{t}`"
            if in_table:
                s = s.replace("|", "\\|")
        else:
            s = _md_escape(t, in_table).replace("\n", " ")
        if "b" in part.kind:
            s = f"**{s}**"
        out.append(s)
    return "".join(out)


def _html_inline(x) -> str:
    out = []
    for part in _parts(x):
        s = html.escape(part.text, quote=True)
        if "c" in part.kind:
            # break opportunities after / , : so long ids wrap on a narrow screen (copying is unchanged)
            s = "<code>" + re.sub(r"([/,:])(?=.)", r"\1<wbr />", s) + "</code>"
        if "b" in part.kind:
            s = f'<strong class="flag">{s}</strong>' if part.text == "BIAS DETECTED" else f"<strong>{s}</strong>"
        out.append(s)
    return "".join(out)


def render_markdown(doc: Doc) -> str:
    lines = []
    for blk in doc.blocks:
        kind = blk[0]
        if kind == "h":
            lines += ["#" * blk[1] + " " + _md_inline(blk[2]), ""]
        elif kind == "p":
            lines += [_md_inline(list(blk[1])), ""]
        elif kind == "ul":
            lines += ["- " + _md_inline(it) for it in blk[1]] + [""]
        elif kind == "table":
            headers, rows, numeric = blk[1], blk[2], blk[3]
            lines.append("| " + " | ".join(_md_inline(h, True) for h in headers) + " |")
            lines.append("|" + "|".join("---:" if i in numeric else "---" for i in range(len(headers))) + "|")
            for r in rows:
                lines.append("| " + " | ".join(_md_inline(c, True) for c in r) + " |")
            lines.append("")
        elif kind == "img":
            lines += [f"![{_md_inline(blk[2])}]({blk[1]})", ""]
        elif kind == "fold":  # Markdown has no fold, and its viewers make their own contents
            lines += [_md_inline(blk[1]), ""]
    return "\n".join(lines).rstrip() + "\n"


def _toc(doc: Doc) -> list:
    return [(blk[2], blk[3]) for blk in doc.blocks if blk[0] == "h" and blk[1] == 2 and blk[3]]


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #aaa; margin-top: 2.2em; }
h3 { margin-top: 1.6em; }
h4 { margin-top: 1.4em; color: #333; }
table { border-collapse: collapse; margin: .6em 0 1.2em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.verdict, th.verdict { min-width: 7.5em; }
code { font-family: Menlo, Consolas, monospace; font-size: 0.95em; background: #f4f4f4; padding: 0 2px; }
strong.flag { color: #b00000; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0 1.6em 0; border: 1px solid #eee; }
nav ul { columns: 2; }
details { margin: .6em 0; }
summary { cursor: pointer; color: #333; font-weight: 600; }
@media (max-width: 1000px) { body { margin: 1em auto; padding: 0 .5em; } table { font-size: 0.78em; }
  th, td { padding: 2px 4px; } nav ul { columns: 1; } }
p.note { color: #555; font-size: 0.9em; }
div.scroll { overflow-x: auto; max-width: 100%; }
"""


def render_html(doc: Doc, title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8" />',
           '<meta name="viewport" content="width=device-width, initial-scale=1" />',
           f"<title>{html.escape(title)}</title>", "<style>" + CSS + "</style>", "</head>", "<body>"]
    toc = _toc(doc)
    open_folds = 0
    for blk in doc.blocks:
        kind = blk[0]
        if kind == "h":
            anchor = f' id="{html.escape(blk[3], quote=True)}"' if blk[3] else ""
            out.append(f"<h{blk[1]}{anchor}>{_html_inline(blk[2])}</h{blk[1]}>")
        elif kind == "toc" and toc:
            items = "".join(f'<li><a href="#{html.escape(a, quote=True)}">{_html_inline(t)}</a></li>'
                            for t, a in toc)
            out.append(f'<details class="toc"><summary>Contents ({len(toc)} sections)</summary>'
                       f"<nav><ul>{items}</ul></nav></details>")
        elif kind == "fold":
            out.append(f'<details class="fold"><summary>{_html_inline(blk[1])}</summary>')
            open_folds += 1
        elif kind == "end_fold" and open_folds:
            out.append("</details>")
            open_folds -= 1
        elif kind == "p":
            out.append(f"<p>{_html_inline(list(blk[1]))}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(it)}</li>" for it in blk[1]) + "</ul>")
        elif kind == "table":
            headers, rows, numeric = blk[1], blk[2], blk[3]
            key = blk[4] if len(blk) > 4 else set()
            out.append('<div class="scroll"><table>')
            out.append("<thead><tr>" + "".join(f'<th class="verdict">{_html_inline(h)}</th>' if i in key else
                                               f"<th>{_html_inline(h)}</th>" for i, h in enumerate(headers))
                       + "</tr></thead>")
            out.append("<tbody>")
            for r in rows:
                cells = "".join((f'<td class="num">{_html_inline(c)}</td>' if i in numeric
                                 else f'<td class="verdict">{_html_inline(c)}</td>' if i in key
                                 else f"<td>{_html_inline(c)}</td>") for i, c in enumerate(r))
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table></div>")
        elif kind == "img":
            b64 = base64.b64encode(blk[3]).decode("ascii")
            out.append(f'<img src="data:image/png;base64,{b64}" alt="{html.escape(blk[2], quote=True)}" />')
    out += ["</details>"] * open_folds
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- formatting

def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt(x, digits: int = 3) -> str:
    """A number in ``digits`` significant figures; ``-`` when missing or not finite."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if not _finite(x):
        return "-"
    return f"{float(x):.{digits}g}"


def fmt_ci(v, lo, hi) -> str:
    s = fmt(v)
    if _finite(lo) or _finite(hi):
        s += f" [{fmt(lo)}, {fmt(hi)}]"
    return s


def fmt_p(p) -> str:
    if not _finite(p):
        return "-"
    p = float(p)
    if p == 0.0:
        return "< 1e-300"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"

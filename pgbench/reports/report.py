"""``pgbench report RUN_DIR``: a Markdown and a self-contained HTML report of a run directory.

:func:`write_report` reads ``meta.json`` and ``cells/*.json`` (so a partial or interrupted run
reports too) and writes, each file atomically:

- ``figures/*.png``: the figures each suite lists in ``Suite.figures`` (:mod:`.figures`);
- ``report.md``: the report, linking the PNGs relatively (``figures/NAME.png``);
- ``report.html``: the same report in one file: inline CSS, figures embedded as base64
  ``data:`` URIs, no scripts and no external links; well-formed (XHTML-style void tags), so
  it parses as XML too.

Content: the run's metadata; a summary (per cell, the winners of each estimator class:
practical, biased by design, and oracle as a reference; and every estimator claimed unbiased
whose test of ``mean = exact gradient`` gives ``p < ALPHA``); then per suite its description,
per cell a table (class, claimed unbiasedness, bias norm, variance and MSE with their 95%
intervals, exact values beside them when the rows carry ``exact_variance`` / ``exact_mse``,
cosine, the verdict's p-value and the test it comes from, verdict, cost), the paired
comparisons against the cell's reference estimator, and the suite's figures.

The p-value shown is the one the verdict uses (:func:`pgbench.stats.metrics.verdict_p`).
Verdicts (``ALPHA = 0.001``): claimed unbiased and ``p < ALPHA`` -> **BIAS DETECTED**;
claimed unbiased otherwise -> ``consistent``; claimed biased and ``p < ALPHA`` ->
``biased (expected)``; claimed biased otherwise -> ``bias not resolved`` (too small to see
with these K trials).
"""
from __future__ import annotations

import base64
import html
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from pgbench.errors import PGBenchError
from pgbench.suites.store import FORMAT_VERSION, atomic_write_bytes, atomic_write_text, check_cell, read_json

ALPHA = 1e-3
"""Level of the per-estimator test of ``mean = exact gradient`` behind the verdicts."""

REQUIRED_CELL_KEYS = ("suite", "cell", "N", "rows")


# ----------------------------------------------------------------------------- loading

def load_run(run_dir) -> tuple[dict, list[dict]]:
    """``(meta, cells)`` of a run directory, validated; :class:`PGBenchError` naming the file
    when the directory, ``meta.json`` or a cell record is missing or malformed."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise PGBenchError(f"a run directory must be a path; got {run_dir!r}")
    path = os.fspath(run_dir)
    if not os.path.isdir(path):
        raise PGBenchError(f"no run directory at {path}" + (" (it is a file)" if os.path.exists(path) else ""))
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_path):
        raise PGBenchError(f"{path} is not a pgbench run directory: it has no meta.json")
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise PGBenchError(f"malformed {meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_VERSION:
        raise PGBenchError(f"{meta_path} has format {meta.get('format')!r}; this pgbench reads {FORMAT_VERSION}")
    if not isinstance(meta.get("suites", []), list):
        raise PGBenchError(f"malformed {meta_path}: 'suites' must be a list of suite ids")
    cells_dir = os.path.join(path, "cells")
    cells = []
    if os.path.isdir(cells_dir):
        for f in sorted(os.listdir(cells_dir)):
            if f.endswith(".json") and not f.startswith(".tmp-"):
                rec = _check_cell(read_json(os.path.join(cells_dir, f)), os.path.join(cells_dir, f))
                check_cell(meta, rec, os.path.join(cells_dir, f))  # provenance: no cell of another run
                cells.append(rec)
    elif os.path.exists(cells_dir):
        raise PGBenchError(f"malformed run directory {path}: 'cells' is not a directory")
    return meta, cells


def _check_cell(rec, where: str) -> dict:
    if not isinstance(rec, dict):
        raise PGBenchError(f"malformed cell record {where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED_CELL_KEYS if k not in rec]
    if missing:
        raise PGBenchError(f"malformed cell record {where}: missing {', '.join(missing)}")
    if not isinstance(rec["suite"], str) or not isinstance(rec["cell"], str):
        raise PGBenchError(f"malformed cell record {where}: 'suite' and 'cell' must be strings")
    if not isinstance(rec["N"], int) or isinstance(rec["N"], bool):
        raise PGBenchError(f"malformed cell record {where}: 'N' must be an integer, got {rec['N']!r}")
    rows = rec["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("estimator"), str)
                                             for r in rows):
        raise PGBenchError(f"malformed cell record {where}: 'rows' must be a list of objects with an 'estimator'")
    for key in ("paired",):
        if key in rec and not (isinstance(rec[key], list) and all(isinstance(p, dict) for p in rec[key])):
            raise PGBenchError(f"malformed cell record {where}: '{key}' must be a list of objects")
    figs = rec.get("figures")
    if figs is not None and not (isinstance(figs, list) and all(isinstance(f, str) for f in figs)):
        raise PGBenchError(f"malformed cell record {where}: 'figures' must be a list of figure names")
    for key in ("exact", "proxy", "scatter"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            raise PGBenchError(f"malformed cell record {where}: '{key}' must be an object")
    return rec


def results_frame(cells: list[dict]) -> pd.DataFrame:
    """Tidy results of validated cell records (the same table as ``RunDir.tables()[0]``)."""
    rows = []
    for c in cells:
        for r in c["rows"]:
            rows.append({"suite": c["suite"], "cell": c["cell"], "tags": ",".join(c.get("tags", []) or []),
                         **r, "N": r.get("N", c["N"]), "K": r.get("K", c.get("K"))})
    return pd.DataFrame(rows)


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

    def table(self, headers, rows, numeric=()):
        self.blocks.append(("table", list(headers), [list(r) for r in rows], set(numeric)))

    def img(self, rel: str, alt: str, data: bytes):
        self.blocks.append(("img", rel, alt, data))


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
            s = f"<code>{s}</code>"
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
    return "\n".join(lines).rstrip() + "\n"


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
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: Menlo, Consolas, monospace; font-size: 0.95em; background: #f4f4f4; padding: 0 2px; }
strong.flag { color: #b00000; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0 1.6em 0; border: 1px solid #eee; }
nav ul { columns: 2; }
p.note { color: #555; font-size: 0.9em; }
div.scroll { overflow-x: auto; max-width: 100%; }
"""


def render_html(doc: Doc, title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8" />',
           '<meta name="viewport" content="width=device-width, initial-scale=1" />',
           f"<title>{html.escape(title)}</title>", "<style>" + CSS + "</style>", "</head>", "<body>"]
    toc = [(blk[2], blk[3]) for blk in doc.blocks if blk[0] == "h" and blk[1] == 2 and blk[3]]
    for blk in doc.blocks:
        kind = blk[0]
        if kind == "h":
            anchor = f' id="{html.escape(blk[3], quote=True)}"' if blk[3] else ""
            out.append(f"<h{blk[1]}{anchor}>{_html_inline(blk[2])}</h{blk[1]}>")
            if blk[1] == 1 and toc:
                items = "".join(f'<li><a href="#{html.escape(a, quote=True)}">{_html_inline(t)}</a></li>'
                                for t, a in toc)
                out.append(f"<nav><ul>{items}</ul></nav>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(list(blk[1]))}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(it)}</li>" for it in blk[1]) + "</ul>")
        elif kind == "table":
            headers, rows, numeric = blk[1], blk[2], blk[3]
            out.append('<div class="scroll"><table>')
            out.append("<thead><tr>" + "".join(f"<th>{_html_inline(h)}</th>" for h in headers) + "</tr></thead>")
            out.append("<tbody>")
            for r in rows:
                cells = "".join((f'<td class="num">{_html_inline(c)}</td>' if i in numeric
                                 else f"<td>{_html_inline(c)}</td>") for i, c in enumerate(r))
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table></div>")
        elif kind == "img":
            b64 = base64.b64encode(blk[3]).decode("ascii")
            out.append(f'<img src="data:image/png;base64,{b64}" alt="{html.escape(blk[2], quote=True)}" />')
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


def _claim(v) -> Optional[bool]:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return bool(v)


def _p_and_test(r: dict) -> tuple:
    """``(p, test name)``: the p-value the verdict uses and the test it comes from
    (:func:`pgbench.stats.metrics.verdict_p`; recomputed for rows written before ``p_test``)."""
    from pgbench.stats.metrics import BOOTSTRAP, verdict_p
    if isinstance(r.get("p_test"), str) and _finite(r.get("p_robust")):
        return float(r["p_robust"]), r["p_test"]
    if not _finite(r.get("p_value")):
        return None, "-"
    return verdict_p(float(r["p_value"]), str(r.get("test") or "?"),
                     float(r["p_bootstrap"]) if _finite(r.get("p_bootstrap")) else math.nan, BOOTSTRAP)


def _p(r: dict):
    """The p-value verdicts use (see :func:`_p_and_test`)."""
    return _p_and_test(r)[0]


def _class(r: dict) -> str:
    c = r.get("class")
    if isinstance(c, str) and c:
        return c
    from pgbench.estimators.catalogue import estimator_class
    return estimator_class(str(r.get("estimator")), _claim(r.get("unbiased")))


def verdict(unbiased, p, alpha: float = ALPHA) -> Inline:
    """The verdict on one estimator from its claim and the p-value of ``mean = exact``."""
    claim = _claim(unbiased)
    if not _finite(p):
        return Inline("no test")
    detected = float(p) < alpha
    if claim is None:
        return Inline("bias detected" if detected else "no bias detected")
    if claim:
        return B("BIAS DETECTED") if detected else Inline("consistent")
    return Inline("biased (expected)") if detected else Inline("bias not resolved")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", s).strip("_") or "x"


def _anchor(s: str) -> str:
    return "suite-" + re.sub(r"[^A-Za-z0-9-]+", "-", s).strip("-").lower()


def _val(r: dict, k: str):
    v = r.get(k)
    return v if _finite(v) else None


# ----------------------------------------------------------------------------- sections

def _has_exact(rows: list[dict], col: str) -> bool:
    return any(_finite(r.get(col)) for r in rows)


def _cost_key(rows: list[dict]) -> Optional[str]:
    """The column that ranks estimators by error per unit of their own compute: ``own_mse_x_seconds``
    where rows carry each estimator's own time; ``None`` when every estimator of the cell is
    charged the same (shared) time, where such a ranking would only repeat the MSE one."""
    if any(_finite(r.get("own_mse_x_seconds")) for r in rows):
        return "own_mse_x_seconds"
    return None


def _winners(rows: list[dict], cls: Optional[str] = None) -> dict:
    """Ascending ``(value, estimator)`` lists by MSE and by cost, over the rows of class ``cls``
    (all rows when ``None``)."""
    sel = [r for r in rows if cls is None or _class(r) == cls]

    def best(key):
        if key is None:
            return []
        c = [(float(r[key]), r["estimator"]) for r in sel if _finite(r.get(key))]
        c.sort()
        return c
    return {"mse": best("mse"), "cost": best(_cost_key(rows))}


MC_ONLY = "MC only"
"""Shown in the exact-variance column for an estimator whose exact moments are not available:
its Monte-Carlo interval (the measured column) is all there is."""


def _why_no_exact(label: str) -> str:
    """Why a row has no exact variance: the moment DP's reason for that estimator (in-batch ratio
    baselines, a critic fitted on the same batch, the natural gradient's pseudo-inverse...), else
    that this cell's exact moments were not computed (over the DP / enumeration budget, or not an MDP)."""
    try:
        from pgbench.estimators.catalogue import parse
        from pgbench.exact.dp import DP_UNSUPPORTED, why_not
        sp = parse(label)
        reason = DP_UNSUPPORTED.get(sp.name) or why_not(sp)
    except Exception:  # a label this pgbench cannot parse (another version's, a custom one)
        reason = None
    return reason or "exact moments not computed for this cell (over the DP / enumeration budget, or not an MDP)"


OUTSIDE = "outside the interval"
"""Marks an exact variance or MSE that the measured 95% interval does not contain."""


def _outside(r: dict, what: str) -> bool:
    """Whether the exact ``what`` (variance or mse) lies outside the row's measured interval."""
    ex, lo, hi = r.get(f"exact_{what}"), r.get(f"{what}_lo"), r.get(f"{what}_hi")
    return _finite(ex) and _finite(lo) and _finite(hi) and not float(lo) <= float(ex) <= float(hi)


def _exact_cell(r: dict, what: str):
    if not _finite(r.get(f"exact_{what}")):
        return MC_ONLY
    v = fmt(r.get(f"exact_{what}"))
    return [Inline(v + " ("), B(OUTSIDE), Inline(")")] if _outside(r, what) else v


def _cell_table(doc: Doc, rec: dict) -> None:
    rows = rec["rows"]
    ex_var, ex_mse = _has_exact(rows, "exact_variance"), _has_exact(rows, "exact_mse")
    # bold: the lowest MSE (and cost) of each class, so a practical winner is never hidden by an oracle
    best_mse, best_cost = set(), set()
    for cls in ("practical", "biased", "oracle"):
        win = _winners(rows, cls)
        best_mse |= {win["mse"][0][1]} if win["mse"] else set()
        best_cost |= {win["cost"][0][1]} if win["cost"] else set()
    cost_key = _cost_key(rows)
    ex_bias = _has_exact(rows, "exact_bias_norm")  # the exact mean in closed form (practice estimators)
    headers = ["estimator", "class", "unbiased (claimed)", "bias norm [95% CI]"] + (["exact bias norm"] if ex_bias else [])
    headers += ["variance [95% CI]"]
    headers += ["exact variance"] if ex_var else []
    headers += ["MSE [95% CI]"] + (["exact MSE"] if ex_mse else [])
    headers += ["cosine", "p (mean = exact)", "test of that p", "verdict", "cell seconds", "episodes/s"]
    headers += ["own seconds", "MSE x own seconds"] if cost_key else []
    numeric = {i for i, h in enumerate(headers)
               if h not in ("estimator", "class", "unbiased (claimed)", "verdict", "test of that p")}
    out = []
    for r in rows:
        claim = _claim(r.get("unbiased"))
        line = [C(r["estimator"]), _class(r), "-" if claim is None else ("yes" if claim else "no"),
                fmt_ci(r.get("bias_norm"), r.get("bias_norm_lo"), r.get("bias_norm_hi"))]
        line += [fmt(r.get("exact_bias_norm"))] if ex_bias else []
        line += [fmt_ci(r.get("variance"), r.get("variance_lo"), r.get("variance_hi"))]
        if ex_var:
            line.append(_exact_cell(r, "variance"))
        mse = fmt_ci(r.get("mse"), r.get("mse_lo"), r.get("mse_hi"))
        line.append(B(mse) if r["estimator"] in best_mse else mse)
        if ex_mse:
            line.append(_exact_cell(r, "mse"))
        p, test = _p_and_test(r)
        line += [fmt(r.get("cosine")), fmt_p(p), test, verdict(r.get("unbiased"), p),
                 fmt(r.get("seconds")), fmt(r.get("episodes_per_second"))]
        if cost_key:
            cost = fmt(r.get(cost_key))
            line += [fmt(r.get("own_seconds")), B(cost) if r["estimator"] in best_cost else cost]
        out.append(line)
    doc.table(headers, out, numeric)
    mc_only = [r["estimator"] for r in rows if ex_var and not _finite(r.get("exact_variance"))]
    if mc_only:
        doc.p(Inline(f"{MC_ONLY}: no exact variance; the Monte-Carlo interval is the only one shown. "
                     + "; ".join(f"{e}: {_why_no_exact(e)}" for e in mc_only) + "."))
    missed = [(r["estimator"], [w for w in ("variance", "mse") if _outside(r, w)]) for r in rows]
    missed = [(e, w) for e, w in missed if w]
    if missed:
        doc.p(B(OUTSIDE[0].upper() + OUTSIDE[1:] + ":"), Inline(" the exact value lies outside the measured 95% interval ("
                     + "; ".join(f"{e}: {' and '.join('MSE' if x == 'mse' else x for x in w)}" for e, w in missed)
                     + "). The exact values are computed, not sampled; an interval that misses them is too "
                     "narrow, as happens by chance for one interval in twenty, and more often when the trials are "
                     "heavy-tailed (rare long or rewarding episodes) and K trials have not yet seen the tail."))


def _paired_table(doc: Doc, rec: dict) -> None:
    pairs = rec.get("paired") or []
    if not pairs:
        doc.p(Inline("No paired comparisons in this cell (one estimator, or estimators with different targets)."))
        return
    ref = pairs[0].get("reference", rec["rows"][0]["estimator"] if rec["rows"] else "?")
    doc.p("Paired against the reference ", C(ref), " on the same episodes (common random numbers): "
          "MSE difference (estimator - reference) and variance ratio (estimator / reference).")
    headers = ["estimator", "class", "MSE diff [95% CI]", "p (MSE diff)", "variance ratio [95% CI]", "p (ratio)",
               "p (means agree)", "MSE vs reference"]
    classes = {r["estimator"]: _class(r) for r in rec["rows"]}
    out = []
    for p in pairs:
        ci = p.get("mse_diff_ci") if isinstance(p.get("mse_diff_ci"), (list, tuple)) else [None, None]
        rci = p.get("variance_ratio_ci") if isinstance(p.get("variance_ratio_ci"), (list, tuple)) else [None, None]
        lo, hi = (ci + [None, None])[:2]
        rlo, rhi = (rci + [None, None])[:2]
        if _finite(hi) and float(hi) < 0:
            v = B("lower")
        elif _finite(lo) and float(lo) > 0:
            v = Inline("higher")
        elif _finite(lo) and _finite(hi):
            v = Inline("no clear difference")
        else:
            v = Inline("-")
        if p.get("reference") not in (None, ref):
            v = [v, Inline(f" (vs {p.get('reference')})")]
        est = p.get("estimator", "?")
        cls = classes.get(est) or _class({"estimator": est})
        out.append([C(est), cls, fmt_ci(p.get("mse_diff"), lo, hi), fmt_p(p.get("mse_diff_p")),
                    fmt_ci(p.get("variance_ratio"), rlo, rhi), fmt_p(p.get("variance_ratio_p")),
                    fmt_p(p.get("p_value")), v])
    doc.table(headers, out, {2, 3, 4, 5, 6})


def _cell_header(doc: Doc, rec: dict) -> None:
    doc.h(4, [C(rec["cell"])])
    bits = [f"N = {rec['N']} episodes per estimate"]
    if rec.get("K") is not None:
        bits.append(f"K = {rec['K']} trials")
    if rec.get("problem"):
        bits.append(f"problem {rec['problem']}")
    ex = rec.get("exact") or {}
    if _finite(ex.get("J")):
        bits.append(f"exact J = {fmt(ex['J'], 4)}")
    gn = ex.get("grad_norm")
    if not _finite(gn) and rec["rows"]:
        gn = rec["rows"][0].get("exact_grad_norm")
    if _finite(gn):
        bits.append(f"exact ||grad J|| = {fmt(gn, 4)}")
    note = truncation_note(ex)
    if note:
        bits.append(note)
    if _finite(rec.get("wall_seconds")):
        bits.append(f"wall time {fmt(rec['wall_seconds'])} s")
    doc.p("; ".join(bits) + ".")


TRUNCATION_SILENT = 1e-9
"""A sampling cap whose lost J is below this fraction of |J| is not mentioned."""


def truncation_note(ex: dict) -> str:
    """What the sampling cap of an unbounded problem costs, or ``""`` when it is negligible.

    Episodes still running at the cap lose the rest of their return: ``truncated_J`` (exact) is
    the J they lose. Said when it exceeds :data:`TRUNCATION_SILENT` of ``|J|``; a chain that never
    terminates has probability 1 of reaching the cap, which alone says nothing about the loss."""
    tj, J, mass = ex.get("truncated_J"), ex.get("J"), ex.get("truncated_mass")
    if _finite(tj):
        ref = abs(float(J)) if _finite(J) and float(J) != 0 else 1.0
        if abs(float(tj)) <= TRUNCATION_SILENT * ref:
            return ""
        txt = f"the sampling cap loses J = {fmt(tj, 2)} ({fmt(abs(float(tj)) / ref, 2)} of |J|"
        if _finite(mass):
            txt += f"; probability {fmt(mass, 2)} of still running at the cap"
        return txt + ")"
    if _finite(mass) and float(mass) > TRUNCATION_SILENT:  # older records: only the mass is known
        return f"probability {fmt(mass, 2)} of still running at the sampling cap (J lost not recorded)"
    return ""


def _proxy_table(doc: Doc, rec: dict) -> None:
    px = rec.get("proxy")
    if not px:
        return
    labels = {"corr_W_znorm2": "corr(W, ||z||^2)", "mean_W": "mean W", "mean_znorm2": "mean ||z||^2",
              "predicted_var_ratio_w_vs_rloo": "predicted var(w_baseline) / var(rloo)",
              "measured_var_ratio_w_vs_rloo": "measured var(w_baseline) / var(rloo)"}
    rows = [[labels.get(k, k), fmt(v, 4)] for k, v in px.items() if not isinstance(v, (list, dict))]
    if rows:
        doc.p("W(tau) proxy diagnostics:")
        doc.table(["quantity", "value"], rows, {1})


def _suite_description(sid: str) -> tuple[str, Optional[object]]:
    from pgbench.suites.registry import SUITES
    s = SUITES.get(sid)
    if s is None:
        return "(not a suite of this pgbench's registry: no description)", None
    return s.description or "(no description)", s


def _figures_for_suite(doc: Doc, renderer: "_Renderer", sid: str, recs: list[dict], df: pd.DataFrame,
                       df_all: Optional[pd.DataFrame] = None, suites: Optional[list] = None) -> None:
    from pgbench.reports import figures as F
    names = []
    for r in recs:
        for f in r.get("figures") or []:
            if f not in names:
                names.append(f)
    if not names:
        return
    doc.h(3, "Figures")
    styles = F.estimator_styles(list(df["estimator"]))
    for name in names:
        jobs = []
        if name == "proxy":
            for r in recs:
                if r.get("scatter"):
                    corr = (r.get("proxy") or {}).get("corr_W_znorm2")
                    jobs.append((f"{_slug(r['cell'])}-proxy.png", f"{r['cell']}: W(tau) against exact ||z||^2",
                                 F.proxy_scatter, (r["scatter"], corr, sid, r["cell"]), {}))
            if not jobs:
                doc.p(Inline(f"Figure 'proxy': no per-episode scatter data in this suite's cells."))
        elif name == "variance_decomposition":
            for r in recs:
                if r.get("variance_decomposition"):
                    jobs.append((f"{_slug(r['cell'])}-variance_decomposition.png",
                                 f"{r['cell']}: exact variance decomposition",
                                 F.variance_decomposition, (r["variance_decomposition"], sid, r["cell"]), {}))
            if not jobs:
                doc.p(Inline("Figure 'variance_decomposition': no exact decomposition in this suite's cells "
                             "(cells run before it existed, or no per-step estimator the moment DP covers)."))
        elif name in F.FAMILY_FIGURES:
            fam = sid.rsplit("/", 1)[0]
            members = [s for s in (suites or [sid]) if s.rsplit("/", 1)[0] == fam]
            if members and sid != members[-1]:
                doc.p(Inline(f"Figure '{name}': drawn with the family's last suite, {members[-1]}."))
                continue
            fdf = df_all[df_all["suite"].isin(members)] if df_all is not None else df
            fn = F.FAMILY_FIGURES[name]
            jobs.append((f"{_slug(fam)}-{name}.png", f"{fam}: {name}", fn, (fdf, fam),
                         {"styles": F.estimator_styles(list(fdf["estimator"]))}))
        elif name in F.FIGURES:
            fn = F.FIGURES[name]
            kw = {} if name == "gae_lambda" else {"styles": styles}
            jobs.append((f"{_slug(sid)}-{name}.png", f"{sid}: {name}", fn, (df, sid), kw))
        else:
            doc.p(Inline(f"Unknown figure '{name}' (known: {', '.join(F.FIGURES)})."))
        for fname, alt, fn, args, kwargs in jobs:
            doc.img(f"figures/{fname}", alt, renderer.submit(fn, args, kwargs))


REPORT_WORKERS_ENV = "PGBENCH_REPORT_WORKERS"
"""Worker processes that draw the report's figures (default: 2 where there are 2 CPUs or more;
1 draws them in this process)."""


class _Done:
    """A figure already drawn in this process (or the error that stopped it)."""

    def __init__(self, fn, args, kwargs):
        from pgbench.reports.figures import render
        self.data, self.exc = None, None
        try:
            self.data = render(fn, args, kwargs)
        except Exception as exc:  # reported with the figure's name when the report resolves it
            self.exc = exc

    def result(self) -> bytes:
        if self.exc is not None:
            raise self.exc
        return self.data


class _Renderer:
    """Draws figures while the tables are built: matplotlib's layout and rendering are most of a
    report's time (about 0.65 s a figure), and figures are independent, so they go to worker
    processes (spawned: no forked numba threads); each figure is the same PNG wherever it is drawn."""

    def __init__(self):
        try:
            self.workers = int(os.environ.get(REPORT_WORKERS_ENV, "") or min(2, os.cpu_count() or 1))
        except ValueError:
            raise PGBenchError(f"{REPORT_WORKERS_ENV} must be an integer; got {os.environ[REPORT_WORKERS_ENV]!r}")
        self.pool = None

    def submit(self, fn, args, kwargs):
        if self.workers > 1 and self.pool is None:
            try:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor
                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            except (OSError, ImportError, NotImplementedError):  # no process pool here: draw in this process
                self.workers = 1
        if self.pool is None:
            return _Done(fn, args, kwargs)
        from pgbench.reports.figures import render
        return self.pool.submit(render, fn, args, kwargs)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def _resolve_figures(doc: Doc, run_dir: str, written: list, problems: list) -> None:
    """Wait for every figure, write its PNG, and put a 'Figure missing' note where one failed
    (one bad figure must not cost the whole report)."""
    from concurrent.futures.process import BrokenProcessPool
    for i, blk in enumerate(doc.blocks):
        if blk[0] != "img" or isinstance(blk[3], bytes):
            continue
        rel, alt, job = blk[1], blk[2], blk[3]
        try:
            data = job.result()
        except BrokenProcessPool as exc:
            data, msg = None, f"figure {os.path.basename(rel)} could not be drawn: the worker process died ({exc})"
        except Exception as exc:
            data, msg = None, f"figure {os.path.basename(rel)} could not be drawn: {type(exc).__name__}: {exc}"
        if data is None:
            problems.append(msg)
            doc.blocks[i] = ("p", (B("Figure missing:"), Inline(" " + msg)))
            continue
        atomic_write_bytes(os.path.join(run_dir, rel), data)
        written.append(rel)
        doc.blocks[i] = ("img", rel, alt, data)


def _planned_missing(meta: dict, cells: list[dict]) -> list[str]:
    from pgbench.suites.registry import SUITES
    have = {c["cell"] for c in cells}
    missing = []
    for sid in meta.get("suites") or []:
        s = SUITES.get(sid)
        if s is None:
            continue
        for N in s.cells(bool(meta.get("quick"))):
            cid = f"{s.id}/N={N}"
            if cid not in have:
                missing.append(cid)
    return missing


def _suites_and_figures(doc: Doc, renderer: _Renderer, cells: list, meta: dict, progress) -> None:
    """One section per suite: its cells' tables, then its figures (handed to ``renderer``)."""
    df_all = results_frame(cells)
    suites = list(dict.fromkeys([s for s in (meta.get("suites") or []) if any(c["suite"] == s for c in cells)]
                                + [c["suite"] for c in cells]))
    for i, sid in enumerate(suites):
        if progress is not None:
            progress(f"report: suite {i + 1}/{len(suites)} {sid}")
        recs = sorted([c for c in cells if c["suite"] == sid], key=lambda c: c["N"])
        desc, suite = _suite_description(sid)
        doc.h(2, f"Suite {sid}", _anchor(sid))
        doc.p(Inline(desc))
        if suite is not None:
            bits = [f"problem {suite.problem}"]
            if suite.theta:
                bits.append(f"theta {suite.theta}")
            if suite.tags:
                bits.append("tags " + ", ".join(suite.tags))
            doc.p(Inline("; ".join(bits) + "."))
        for rec in recs:
            _cell_header(doc, rec)
            if rec["rows"]:
                _cell_table(doc, rec)
            else:
                doc.p(Inline("No estimator rows in this cell."))
            _paired_table(doc, rec)
            _proxy_table(doc, rec)
        df = df_all[df_all["suite"] == sid] if not df_all.empty else df_all
        if not df.empty:
            _figures_for_suite(doc, renderer, sid, recs, df, df_all, suites)


def build_report(run_dir, progress=None) -> tuple[Doc, list[str], list[str]]:
    """The report of a run directory as a :class:`Doc`; writes the figure PNGs on the way.
    Returns ``(doc, figure paths relative to run_dir, problems)``. ``progress``: a callable
    given one line per suite as its tables and figures are made (e.g. to print on stderr)."""
    meta, cells = load_run(run_dir)
    order = {s: i for i, s in enumerate(meta.get("suites") or [])}
    cells.sort(key=lambda c: (order.get(c["suite"], len(order)), c["suite"], c["N"]))  # N numerically
    run_dir = os.fspath(run_dir)
    env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    doc = Doc()
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    doc.h(1, f"pgbench report: {name}")
    quick = meta.get("quick")
    machine = ", ".join(str(x) for x in (env.get("system"), env.get("machine"), env.get("processor")) if x)
    if env.get("cpu_count"):
        machine += f"; {env['cpu_count']} CPUs"
    if env.get("numba_threads"):
        machine += f", {env['numba_threads']} numba threads"
    versions = ", ".join(f"{k} {env[k]}" for k in ("pgbench", "python", "numpy", "numba", "scipy", "pandas")
                         if env.get(k))
    meta_rows = [["started", str(meta.get("started") or "-")], ["ended", str(meta.get("ended") or "-")],
                 # "finishing": every cell is done and this report is what the run writes last
                 ["status", B(meta.get("status")) if meta.get("status") not in ("complete", "finishing") else "complete"],
                 ["mode", "quick (CI subset)" if quick else ("full" if quick is not None else "-")],
                 ["seed", str(meta.get("seed", "-"))], ["git commit", C(meta.get("git_commit") or "unknown")],
                 ["sampler fingerprint", C((meta.get("provenance") or {}).get("sampler") or "not recorded")],
                 ["machine", machine or "-"], ["versions", versions or "-"],
                 ["source", str(meta.get("source") or "-")],
                 ["suites", ", ".join(meta.get("suites") or []) or "-"],
                 ["cells finished", str(len(cells))],
                 ["report written", time.strftime("%Y-%m-%dT%H:%M:%S%z") + f" on {platform.node() or '?'}"]]
    doc.h(2, "Run", "run")
    doc.table(["field", "value"], meta_rows)
    missing = _planned_missing(meta, cells)
    if missing:
        doc.p(B("Partial run:"), Inline(f" {len(missing)} planned cell(s) not finished: "), C(", ".join(missing)))

    doc.h(2, "Summary", "summary")
    if not cells:
        doc.p(Inline("This run has no finished cells yet: nothing to report."))
    flagged = [(c["cell"], r) for c in cells for r in c["rows"]
               if _claim(r.get("unbiased")) and _finite(_p(r)) and float(_p(r)) < ALPHA]
    if cells:
        if flagged:
            doc.p(B("BIAS DETECTED"), Inline(f": {len(flagged)} estimator(s) claimed unbiased fail the test of "
                                             f"mean = exact gradient at p < {ALPHA:g}:"))
            doc.table(["cell", "estimator", "p", "test", "bias norm [95% CI]", "relative bias"],
                      [[C(cid), C(r["estimator"]), fmt_p(_p(r)), _p_and_test(r)[1],
                        fmt_ci(r.get("bias_norm"), r.get("bias_norm_lo"), r.get("bias_norm_hi")),
                        fmt(r.get("rel_bias"))] for cid, r in flagged], {2, 4, 5})
        else:
            doc.p(Inline(f"No estimator claimed unbiased fails the test of mean = exact gradient at p < {ALPHA:g}."))
        with_exact = [r for c in cells for r in c["rows"] if _finite(r.get("exact_variance"))
                      and _finite(r.get("variance_lo")) and _finite(r.get("variance_hi"))]
        if with_exact:
            n_out = sum(_outside(r, "variance") for r in with_exact)
            doc.p(Inline(f"Exact variances against the measured 95% intervals: {n_out} of {len(with_exact)} "
                         f"({100.0 * n_out / len(with_exact):.1f}%) lie outside their interval (about 5% would "
                         f"by chance; estimators of a cell share its episodes, so misses come in groups). Each "
                         f"is marked '{OUTSIDE}' in its cell's table."))
        any_cost = any(_cost_key(c["rows"]) for c in cells)
        doc.p(Inline("Winners per cell and estimator class (lowest MSE). Practical: unbiased and computable "
                     "from sampled episodes alone; biased: biased by design; oracle: reads an exact quantity "
                     "(V, Q, A or b*) no agent has, shown as a reference, not a contender."
                     + (" Cost: MSE x the estimator's own seconds (its kernel alone on the cell's shape)."
                        if any_cost else " Estimators of a cell share its episodes and its time, so a ranking "
                        "by MSE x seconds would repeat the MSE one; it is left out.")))

        def _win(m):
            if not m:
                return "-"
            out = [C(m[0][1]), Inline(f" ({fmt(m[0][0])})")]
            return out + ([Inline("; runner-up "), C(m[1][1]), Inline(f" ({fmt(m[1][0])})")] if len(m) > 1 else [])

        srows = []
        for c in cells:
            wp, wb, wo = (_winners(c["rows"], k) for k in ("practical", "biased", "oracle"))
            line = [C(c["cell"]), str(c["N"]), _win(wp["mse"]), _win(wb["mse"][:1]), _win(wo["mse"][:1])]
            if any_cost:
                line.append(_win(wp["cost"][:1]))
            srows.append(line)
        doc.table(["cell", "N", "practical: lowest MSE", "biased: lowest MSE", "oracle (reference): lowest MSE"]
                  + (["practical: lowest MSE x own seconds"] if any_cost else []), srows, {1})

    written, problems = [], []
    renderer = _Renderer()
    try:
        _suites_and_figures(doc, renderer, cells, meta, progress)
        _resolve_figures(doc, run_dir, written, problems)
    finally:
        renderer.close()
    doc.h(2, "Notes", "notes")
    doc.ul([f"Verdicts test H0: mean of the K trial estimates = exact gradient at level {ALPHA:g}, with the p "
            f"shown and the test named beside it: the larger of the normal-theory p (Hotelling T2, or Holm-"
            f"corrected t-tests when K is small against d) and a bootstrap max-t p (B = {_B()} resamples), "
            f"so both must reject; when no bootstrap resample reaches the observed statistic (p < 1/(B+1)) the "
            f"normal-theory p is shown and used. 'BIAS DETECTED': claimed unbiased and "
            f"p < {ALPHA:g}; 'biased (expected)': claimed biased and detected; 'bias not resolved': claimed "
            f"biased but not detectable with these K trials.",
            "Intervals are 95% confidence intervals. The bias norm ||mean - g|| of an unbiased estimator is "
            "not zero but of order sqrt(variance / K) (noise).",
            "Bold MSE: the lowest of its class (practical, biased, oracle) in the cell; bold MSE x own seconds: "
            "the lowest work-normalised error of its class."])
    return doc, written, problems


def _B() -> int:
    from pgbench.stats.metrics import BOOTSTRAP
    return BOOTSTRAP


def write_report(run_dir, progress=None) -> tuple[str, str]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into a run directory; returns
    ``(md_path, html_path)``. Raises :class:`PGBenchError` for a missing or malformed run
    directory (no ``meta.json``, bad JSON, a cell record without its keys). ``progress``: see
    :func:`build_report`."""
    doc, _, _ = build_report(run_dir, progress=progress)
    run_dir = os.fspath(run_dir)
    md_path = os.path.join(run_dir, "report.md")
    html_path = os.path.join(run_dir, "report.html")
    atomic_write_text(md_path, render_markdown(doc))
    title = f"pgbench report: {os.path.basename(os.path.normpath(os.path.abspath(run_dir)))}"
    atomic_write_text(html_path, render_html(doc, title))
    return md_path, html_path


__all__ = ["write_report", "build_report", "load_run", "results_frame", "verdict", "ALPHA", "fmt", "fmt_ci",
           "fmt_p", "render_markdown", "render_html"]

"""The report's section on the group estimators of LLM reinforcement learning (``llm/`` suites).

For every ``llm/`` suite of a run: a table of the exact scale ``E[g].grad / ||grad||^2`` and the
exact cosine of ``E[g]`` to the target gradient per estimator and group size G (or the reason they
are Monte-Carlo only, with the measured cosine of the trial estimates instead), a figure of both
against G, and, where the cells carry it, the length-bias figure: the expected weight
``E[h A | n tokens]`` an estimator puts on the score of a sequence of n tokens.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from pgbench.reports import figures as F
from pgbench.reports.document import C, Inline, fmt


def _frame(cells: list) -> pd.DataFrame:
    rows = []
    for c in cells:
        for r in c["rows"]:
            rows.append({"suite": c["suite"], "cell": c["cell"], "G": c.get("G", r.get("G")), "N": c["N"],
                         "estimator": r["estimator"], "unbiased": r.get("unbiased"),
                         "exact_scale": r.get("exact_scale"), "exact_cosine": r.get("exact_cosine"),
                         "exact_bias_norm": r.get("exact_bias_norm"), "cosine": r.get("cosine"),
                         "bias_norm": r.get("bias_norm"), "variance": r.get("variance"), "mse": r.get("mse"),
                         "exact_note": r.get("exact_note") or ""})
    df = pd.DataFrame(rows)
    for col in ("exact_scale", "exact_cosine", "exact_bias_norm", "cosine", "bias_norm", "variance", "mse", "G"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def scale_cosine_vs_G(df: pd.DataFrame, suite: str, styles: Optional[dict] = None):
    """Two panels against the group size G: the exact scale and the exact cosine per estimator
    (hollow markers: the measured mean cosine of single estimates where the exact mean is MC only)."""
    fig = F._new_figure(10.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    styles = styles or F.estimator_styles(list(df["estimator"]))
    for lab, d in df.groupby("estimator", sort=False):
        d = d.sort_values("G")
        col, mk = styles.get(lab, ("k", "o"))
        ok = d["exact_scale"].notna().to_numpy()
        if ok.any():
            ax1.plot(d["G"][ok], d["exact_scale"][ok], color=col, marker=mk, label=lab)
            ax2.plot(d["G"][ok], d["exact_cosine"][ok], color=col, marker=mk)
        if (~ok).any():
            ax2.plot(d["G"][~ok], d["cosine"][~ok], color=col, marker=mk, linestyle=":", markerfacecolor="none")
    for ax, what in ((ax1, "exact scale E[g].grad / |grad|^2"), (ax2, "exact cosine(E[g], grad)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("group size G")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax1.axhline(1.0, color="grey", lw=0.8)
    ax1.set_title(F._title(suite, "scale against G"))
    ax2.set_title(F._title(suite, "direction against G"))
    F._legend_outside(ax2, *ax1.get_legend_handles_labels())
    return fig


def length_bias(profiles: dict, suite: str, G: int, styles: Optional[dict] = None):
    """The expected weight E[h A | n tokens] on a sequence's score against its length n, per estimator."""
    fig = F._new_figure(7.5, 4.0)
    ax = fig.subplots()
    styles = styles or F.estimator_styles(list(profiles))
    for lab, prof in profiles.items():
        n = np.array(sorted(int(k) for k in prof))
        w = np.array([prof[str(k)] if str(k) in prof else prof[k] for k in n], dtype=float)
        col, mk = styles.get(lab, ("k", "o"))
        ax.plot(n, w, color=col, marker=mk, label=lab)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("sequence length n (tokens)")
    ax.set_ylabel("E[h A | n]: weight on the score")
    ax.set_title(F._title(suite, f"length bias at G = {G}"))
    ax.grid(alpha=0.3)
    F._legend_outside(ax)
    return fig


def llm_section(doc, renderer, cells: list) -> None:
    """Add the LLM section (tables and figures) to a report ``doc`` when the run has ``llm/`` cells."""
    cells = [c for c in cells if str(c.get("suite", "")).startswith("llm/")]
    if not cells:
        return
    df = _frame(cells)
    doc.h(2, "LLM group estimators: exact scale and direction", "llm")
    doc.p(Inline("Sequence problems (token trees) with grouped sampling: each batch is P groups of G episodes "
                 "sharing a prompt. Scale = E[g].grad / |grad|^2 and cosine = cos(E[g], grad) of the exact "
                 "mean E[g] (enumerated over the group's outcomes); grad is grad J, or grad J_beta for a KL "
                 "penalty. An unbiased estimator has scale 1 and cosine 1; mean-centring scales by 1 - 1/G, "
                 "Dr. GRPO by (1 - 1/G)/L; std normalisation and per-sequence token means also turn the "
                 "direction. 'MC only': the enumeration is too large (the reason is given); the measured "
                 "mean cosine of single estimates is shown instead."))
    styles = F.estimator_styles(list(df["estimator"]))
    for sid, d in df.groupby("suite", sort=False):
        Gs = sorted(int(g) for g in d["G"].dropna().unique())
        doc.h(3, f"{sid}", "llm-" + sid.replace("/", "-"))
        rows = []
        notes = {}
        for lab, e in d.groupby("estimator", sort=False):
            line = [C(lab), "yes" if e["unbiased"].iloc[0] in (True, "True", 1) else "no"]
            for G in Gs:
                r = e[e["G"] == G]
                if r.empty:
                    line.append("-")
                elif np.isfinite(r["exact_scale"].iloc[0]):
                    line.append(f"{fmt(r['exact_scale'].iloc[0])} / {fmt(r['exact_cosine'].iloc[0])}")
                else:
                    line.append(f"MC only (cos {fmt(r['cosine'].iloc[0])})")
                    notes.setdefault(r["exact_note"].iloc[0], []).append(f"{lab} at G={G}")
            rows.append(line)
        doc.table(["estimator", "claimed unbiased"] + [f"G={G}: scale / cosine" for G in Gs], rows)
        for why, where in notes.items():
            if why:
                doc.p(Inline(f"{why}: " + ", ".join(where) + "."))
        slug = sid.replace("/", "-")
        doc.img(f"figures/{slug}-scale-vs-G.png", f"{sid}: exact scale and cosine against G",
                renderer.submit(scale_cosine_vs_G, (d, sid), {"styles": styles}))
        prof_cells = [c for c in cells if c["suite"] == sid and c.get("length_profile")]
        if prof_cells:
            c = max(prof_cells, key=lambda c: c.get("G") or 0)
            doc.img(f"figures/{slug}-length-bias.png", f"{sid}: length bias",
                    renderer.submit(length_bias, (c["length_profile"], sid, c.get("G")), {"styles": styles}))

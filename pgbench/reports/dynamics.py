"""The learning-dynamics section of a report: one block per learning suite cell (records with
``train``, see :mod:`pgbench.suites.dynamics`): a table per estimator and four figures, the exact
J_t bands, the fraction of runs stuck against t, the exact NSR along the mean path and, for
three actions, runs on the probability simplex."""
from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _f(x, digits: int = 4) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return f"{v:.{digits}g}" if np.isfinite(v) else "-"


def _ci(v, lo, hi) -> str:
    return f"{_f(v)} [{_f(lo)}, {_f(hi)}]" if np.isfinite(float(v if v is not None else np.nan)) else "-"


def figures(rec: dict) -> dict:
    """``{name: Figure}`` for one learning cell record."""
    tr = rec["train"]
    cur = pd.DataFrame(tr["curves"])
    out = {}
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot(111)
    for i, (est, d) in enumerate(cur.groupby("estimator", sort=False)):
        col = f"C{i % 10}"
        ax.plot(d["t"], d["J_mean"], color=col, lw=1.6, label=est)
        ax.fill_between(d["t"], d["J_q25"], d["J_q75"], color=col, alpha=0.18, lw=0)
    ax.axhline(tr["J_star"], color="k", lw=0.8, ls=":")
    ax.set_xlabel("update t")
    ax.set_ylabel("exact J (mean; band: 25-75% of runs)")
    ax.legend(fontsize=7, ncol=2)
    out["J"] = fig
    if "p_stuck" in cur and cur["p_stuck"].notna().any():
        fig = Figure(figsize=(7.5, 3.6))
        ax = fig.add_subplot(111)
        for i, (est, d) in enumerate(cur.groupby("estimator", sort=False)):
            ax.plot(d["t"], d["p_stuck"], color=f"C{i % 10}", label=est)
        ax.set_xlabel("update t")
        ax.set_ylabel(f"P(J_t <= {tr['config'].get('stuck_below')})")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, ncol=2)
        out["stuck"] = fig
    nsr = cur[np.isfinite(cur["exact_nsr"].astype(float)) & (cur["exact_nsr"].astype(float) > 0)]
    if len(nsr):
        fig = Figure(figsize=(7.5, 3.6))
        ax = fig.add_subplot(111)
        for i, (est, d) in enumerate(nsr.groupby("estimator", sort=False)):
            ax.plot(d["t"], d["exact_nsr"], "o-", ms=3, color=f"C{i % 10}", label=est)
        ax.set_yscale("log")
        ax.set_xlabel("update t")
        ax.set_ylabel("exact NSR at the mean policy")
        ax.legend(fontsize=7, ncol=2)
        out["nsr"] = fig
    if "simplex" in tr:
        pis = np.asarray(tr["simplex"]["pi"], dtype=float)  # (E, runs, points, 3)
        E = pis.shape[0]
        ncol = min(4, E)
        fig = Figure(figsize=(2.6 * ncol, 2.5 * ((E + ncol - 1) // ncol)))
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
        for e in range(E):
            ax = fig.add_subplot((E + ncol - 1) // ncol, ncol, e + 1)
            ax.plot(*np.vstack([corners, corners[:1]]).T, color="k", lw=0.6)
            for r in range(pis.shape[1]):
                xy = pis[e, r] @ corners
                ax.plot(xy[:, 0], xy[:, 1], lw=0.6, alpha=0.6)
                ax.plot(*xy[-1], "k.", ms=3)
            for j, lab in enumerate(("a0", "a1", "a2")):
                ax.annotate(lab, corners[j], fontsize=7, ha="center", va="top" if j < 2 else "bottom")
            ax.set_title(tr["estimators"][e], fontsize=7)
            ax.set_axis_off()
            ax.set_aspect("equal")
        out["simplex"] = fig
    return out


def section(doc, cells: list, run_dir: str) -> None:
    """Append the learning-dynamics section for the learning cells (no-op without any)."""
    if not cells:
        return
    doc.h(2, "Learning dynamics", "dynamics")
    doc.p("Every learning run samples a fresh batch at the current parameters for each update; J is the exact "
          "objective of each run's policy. p_stuck: share of runs whose final exact J is at or below the "
          "threshold (Wilson 95% interval); regret: sum over updates of J* - J_t per run, with mean, median and "
          "interquartile mean and bootstrap 95% intervals. NSR: exact tr Var / ||grad J||^2 at the batch size, "
          "at the mean policy of the kept runs.")
    for rec in cells:
        tr = rec["train"]
        cfg = tr["config"]
        doc.h(3, rec["cell"])
        doc.p(f"{rec['problem']}: {cfg['optimizer']}, step {cfg['lr']}, {cfg['steps']} updates, {cfg['runs']} runs, "
              f"N = {cfg['batch']}, J* = {_f(tr['J_star'], 6)}, {_f(tr['seconds'], 3)} s.")
        rows = []
        for r in tr["summary"]:
            rows.append([r["estimator"], _f(r["J_final_mean"]), _f(r["J_final_median"]),
                         _ci(r.get("p_stuck"), r.get("p_stuck_lo"), r.get("p_stuck_hi")),
                         _ci(r["regret_mean"], r["regret_mean_lo"], r["regret_mean_hi"]),
                         _ci(r["regret_median"], r["regret_median_lo"], r["regret_median_hi"]),
                         _ci(r["regret_iqm"], r["regret_iqm_lo"], r["regret_iqm_hi"])])
        doc.table(["estimator", "final J (mean)", "final J (median)", "p_stuck [95% CI]", "regret mean [95% CI]",
                   "regret median [95% CI]", "regret IQM [95% CI]"], rows, {1, 2, 3, 4, 5, 6})
        slug = rec["cell"].replace("/", "_").replace("=", "")
        for name, fig in figures(rec).items():
            rel = os.path.join("figures", f"{slug}_{name}.png")  # slug starts with the family, dynamics_
            data = _png(fig)
            path = os.path.join(run_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            doc.img(rel, f"{rec['cell']}: {name}", data)

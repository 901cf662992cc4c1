"""Report figures: each function takes tidy data and returns a :class:`matplotlib.figure.Figure`.

The figures are built with the object-oriented API on an Agg canvas (no pyplot, no global
state, nothing shown on screen), so they can be made from threads and in headless CI, and
a figure is freed as soon as it is dropped. :func:`png_bytes` renders one to PNG.

Tidy data is the results table of a run (:meth:`pgbench.suites.store.RunDir.tables`), one
row per (cell, estimator) with the columns of :data:`pgbench.measure.measure.RESULT_COLUMNS`;
pass the rows of one suite. Optional ``exact_variance`` / ``exact_mse`` columns are drawn as
black-edged markers beside the measured values when present.

=====================  ==========================================================
:func:`variance_vs_n`  variance against N (log-log), a 1/N reference per estimator
:func:`bias_variance`  bias^2, variance and MSE bars per estimator, one panel per N
:func:`efficiency`     MSE against wall-clock seconds (log-log), iso-cost lines
:func:`gae_lambda`     GAE bias and variance against lambda, one line per critic
:func:`proxy_scatter`  W(tau) against the exact ||z||^2, with their correlation
:func:`horizon`        variance against the horizon T and the discount gamma (a suite family)
=====================  ==========================================================
"""
from __future__ import annotations

import io
import math
from typing import Iterable, Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from pgbench.errors import PGBenchError

DPI = 100
MAX_WIDTH = 11.0
"""Widest figure in inches: at :data:`DPI` a report page 900 px wide shows it at 80% or more,
so 8-point text stays at 9 px or more."""

# tab10, then ten darker colours from tab20b/tab20c: 20 colours distinct on white
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
CRITIC_COLORS = {"exact": "#1f77b4", "perturbed": "#d62728", "fitted": "#2ca02c"}


# ----------------------------------------------------------------------------- helpers

def estimator_styles(labels: Iterable[str]) -> dict:
    """``{label: (colour, marker)}`` in order of first appearance: the same estimator gets the
    same colour and marker in every figure built from the same mapping."""
    out = {}
    for lab in labels:
        if lab not in out:
            i = len(out)
            out[lab] = (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE) + i) % len(MARKERS)])
    return out


def _styles(df: pd.DataFrame, styles: Optional[dict]) -> dict:
    st = dict(styles or {})
    extra = [e for e in _order(df["estimator"]) if e not in st]
    if extra:
        more = estimator_styles(list(st) + extra)
        st.update({e: more[e] for e in extra})
    return st


def estimator_classes(df: pd.DataFrame) -> dict:
    """``{estimator: class}`` (practical, oracle, biased, or ``biased, oracle`` for an estimator
    biased by design that also reads an exact quantity): the rows' ``class`` column, or the
    catalogue's class for runs written before the column existed."""
    from pgbench.estimators.catalogue import estimator_class
    out = {}
    for _, r in df.drop_duplicates("estimator").iterrows():
        c = r.get("class") if "class" in df.columns else None
        claim = r.get("unbiased") if "unbiased" in df.columns else None
        c = c if isinstance(c, str) and c else estimator_class(str(r["estimator"]), claim)
        # biased by design is said whatever else the estimator reads (ppo_gae reads the exact critic)
        if c == "oracle" and claim is not None and not (isinstance(claim, float) and math.isnan(claim)) \
                and not bool(claim):
            c = "biased, oracle"
        out[r["estimator"]] = c
    return out


def _with_class(labels: list, classes: dict) -> list:
    """Legend labels carrying the class of the non-practical estimators: ``value_baseline [oracle]``."""
    return [lab + (f" [{classes[lab]}]" if classes.get(lab, "practical") != "practical" else "") for lab in labels]


def _interval(d: pd.DataFrame, col: str, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval (``col_lo``, ``col_hi``) of the rows ``ok``; NaN where the table has none."""
    n = int(np.count_nonzero(ok))
    return tuple(_num(d[f"{col}_{end}"])[ok] if f"{col}_{end}" in d else np.full(n, np.nan) for end in ("lo", "hi"))


def _order(values) -> list:
    return list(dict.fromkeys(values))


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def render(fn, args: tuple = (), kwargs: Optional[dict] = None) -> bytes:
    """``png_bytes(fn(*args, **kwargs))``: one figure drawn and rendered (a picklable unit of work
    for the report's worker processes)."""
    return png_bytes(fn(*args, **(kwargs or {})))


def _suite_name(df: pd.DataFrame, suite: Optional[str]) -> str:
    if suite:
        return suite
    if "suite" in df and df["suite"].nunique() == 1:
        return str(df["suite"].iloc[0])
    return ""


def _title(suite: str, what: str) -> str:
    return f"{suite}: {what}" if suite else what


def _require(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise PGBenchError(f"{what} needs a pandas DataFrame of results; got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise PGBenchError(f"{what} needs columns {', '.join(missing)} in the results table")
    if df.empty:
        raise PGBenchError(f"{what}: no rows to plot")


def _num(series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def _err(val: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Asymmetric error-bar lengths (2, n), zero where an end is missing."""
    down = np.where(np.isfinite(lo), val - lo, 0.0)
    up = np.where(np.isfinite(hi), hi - val, 0.0)
    return np.vstack([np.clip(down, 0, None), np.clip(up, 0, None)])


def _log_err(val: np.ndarray, lo: np.ndarray, hi: np.ndarray, floor: float) -> np.ndarray:
    """Error bars on a log axis: a lower end at or below zero is drawn down to ``floor``."""
    lo = np.where(np.isfinite(lo) & (lo > floor), lo, floor)
    return _err(val, np.minimum(lo, val), hi)


def _exact_col(df: pd.DataFrame, col: str) -> Optional[np.ndarray]:
    if col not in df.columns:
        return None
    v = _num(df[col])
    return v if np.isfinite(v).any() else None


def _log_ticks(axis) -> None:
    """Readable ticks on a log axis: majors at 1, 2, 5 x 10^k labelled in plain numbers
    (``0.02``, ``5e+03``), unlabelled minors, so short ranges get labels that do not collide."""
    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0), numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _legend_outside(ax, handles=None, labels=None, title=None) -> None:
    kw = {} if handles is None else {"handles": handles}
    if labels is not None:
        kw["labels"] = labels
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, title=title,
              title_fontsize=9, frameon=False, **kw)


# ----------------------------------------------------------------------------- variance against N

def variance_vs_n(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None) -> Figure:
    """Variance (``tr Cov``) of each estimator against the batch size N on log-log axes. Where
    the rows carry ``exact_variance`` the estimator's line is the exact one (solid, through the
    exact values) and the measured values are points with their confidence intervals on it;
    without exact values the line joins the measured points and a dashed ``1/N`` reference is
    anchored at the smallest N."""
    _require(df, ["estimator", "N", "variance"], "variance_vs_n")
    suite = _suite_name(df, suite)
    st = _styles(df, styles)
    fig = _new_figure(10.0, 5.0)
    ax = fig.add_subplot()
    has_exact = has_mc_only = False
    n_values = sorted(set(int(n) for n in df["N"]))
    for est in _order(df["estimator"]):
        d = df[df["estimator"] == est].sort_values("N")
        N, v = _num(d["N"]), _num(d["variance"])
        ok = np.isfinite(v) & (v > 0) & np.isfinite(N) & (N > 0)
        if not ok.any():
            continue
        N, v = N[ok], v[ok]
        lo, hi = _interval(d, "variance", ok)
        colour, marker = st[est]
        ex = _exact_col(d, "exact_variance")
        ex = ex[ok] if ex is not None else np.full_like(v, np.nan)
        m = np.isfinite(ex) & (ex > 0)
        exact_line = m.any()
        ax.errorbar(N, v, yerr=_log_err(v, lo, hi, v.min() * 1e-3), color=colour, marker=marker, ms=5,
                    lw=1.6, capsize=3, ls="none" if exact_line else "-", label=est)
        if exact_line:  # the exact variance is the line; black-edged markers where it is known
            ax.plot(N[m], ex[m], ls="-", lw=1.6, color=colour, marker=marker, ms=9, mfc="none", mec="black",
                    mew=1.0)
            has_exact = True
        else:
            has_mc_only = True
            if len(N) >= 2:
                ax.plot(N, v[0] * N[0] / N, ls="--", lw=1.0, color=colour, alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(n_values)
    ax.set_xticklabels([str(n) for n in n_values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("batch size N (episodes per estimate)")
    ax.set_ylabel("variance  tr Cov(g_hat)")
    fig.suptitle(_title(suite, "variance against batch size N"), fontsize=12)
    handles, labels = ax.get_legend_handles_labels()
    labels = _with_class(labels, estimator_classes(df))
    if len(n_values) >= 2 and has_mc_only:
        handles.append(Line2D([], [], ls="--", color="grey"))
        labels.append("1/N from smallest N (no exact variance)")
    elif len(n_values) < 2:
        ax.text(0.02, 0.02, f"one batch size only (N = {n_values[0]}): no slope to show", transform=ax.transAxes,
                fontsize=9, color="dimgrey")
    if has_exact:
        handles.append(Line2D([], [], ls="-", color="grey", marker="o", mfc="none", mec="black", ms=9))
        labels.append("exact variance (line); measured: points with 95% CI")
    _legend_outside(ax, handles, labels)
    return fig


# ----------------------------------------------------------------------------- bias / variance / MSE bars

def bias_variance(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None,
                  max_cols: int = 2) -> Figure:
    """Per estimator, three bars side by side: bias^2 (``||mean - g||^2``, hatched), variance
    (solid) and MSE (outlined; MSE = bias^2 + variance), each with its confidence interval; one
    panel per batch size N. The x axis is logarithmic when the values span more than two
    decades. Oracle and biased estimators are marked ``[oracle]`` / ``[biased]``.

    The measured ``||mean - g||^2`` of an unbiased estimator is not zero: it averages
    ``tr Var / K``, the noise floor, drawn as a grey tick on each bias^2 bar (where the rows carry
    ``K``); a bias^2 bar that does not clearly pass its tick shows sampling noise, not bias. At
    most ``max_cols`` panels a row and at most :data:`MAX_WIDTH` inches wide, so the text stays
    legible when the page is narrow."""
    _require(df, ["estimator", "N", "bias_norm", "variance", "mse"], "bias_variance")
    suite = _suite_name(df, suite)
    st = _styles(df, styles)
    n_values = sorted(set(int(n) for n in df["N"]))
    ncols = min(max_cols, len(n_values))
    nrows = math.ceil(len(n_values) / ncols)
    n_est = len(_order(df["estimator"]))
    label_w = max(len(str(e)) for e in df["estimator"]) * 0.065 + 0.8
    fig = _new_figure(min(4.2 * ncols + label_w + 1.0, MAX_WIDTH), max(2.6, 0.42 * n_est + 1.4) * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    h = 0.27
    all_ests = _order(df["estimator"])
    classes = estimator_classes(df)
    has_floor = False
    for k, N in enumerate(n_values):
        ax = axes[k // ncols][k % ncols]
        d = df[df["N"] == N].drop_duplicates("estimator")

        def col(name, base):
            return _num(d[name]) if name in d else _num(d[base]) * np.nan

        b = _num(d["bias_norm"])
        floor = _num(d["variance"]) / _num(d["K"]) if "K" in d else b * np.nan  # E||mean - g||^2 when unbiased
        comp = {"bias2": (b ** 2, col("bias_norm_lo", "bias_norm") ** 2, col("bias_norm_hi", "bias_norm") ** 2),
                "variance": (_num(d["variance"]), col("variance_lo", "variance"), col("variance_hi", "variance")),
                "mse": (_num(d["mse"]), col("mse_lo", "mse"), col("mse_hi", "mse"))}
        allv = np.concatenate([np.concatenate(c) for c in comp.values()])
        pos = allv[np.isfinite(allv) & (allv > 0)]
        vmax = pos.max() if pos.size else 1.0
        use_log = pos.size > 0 and vmax / max(pos.min(), vmax * 1e-12) > 100.0
        # the axis starts six decades below the largest value, but never cuts a variance or MSE
        # bar (a small one is news); tiny squared biases of unbiased estimators may start off-axis
        vm = np.concatenate([comp["variance"][0], comp["mse"][0]])
        vm = vm[np.isfinite(vm) & (vm > 0)]
        base = max(pos.min(), vmax * 1e-6) if pos.size else 1.0
        if vm.size:
            base = min(base, vm.min())
        left = max(base, vmax * 1e-12) / 2 if use_log else 0.0
        for i, est in enumerate(d["estimator"]):
            colour, _ = st[est]
            y = -all_ests.index(est)
            # top to bottom: bias^2, variance, MSE
            for off, key, style in ((h, "bias2", dict(facecolor=colour, alpha=0.35, hatch="///", edgecolor=colour)),
                                    (0.0, "variance", dict(facecolor=colour, edgecolor=colour)),
                                    (-h, "mse", dict(facecolor="white", edgecolor=colour, linewidth=1.6))):
                val, lo, hi = (c[i] for c in comp[key])
                if not np.isfinite(val):
                    continue
                ax.barh(y + off, max(val - left, 0.0), height=h * 0.9, left=left, **style)
                if np.isfinite(lo) or np.isfinite(hi):
                    v1, lo1, hi1 = np.array([val]), np.array([lo]), np.array([hi])
                    e = _log_err(v1, lo1, hi1, left) if use_log else _err(v1, lo1, hi1)
                    ax.errorbar([val], [y + off], xerr=e, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            if np.isfinite(floor[i]) and floor[i] > 0 and (not use_log or floor[i] > left):
                ax.plot([floor[i]], [y + h], marker="|", ms=11, mew=2.2, color="#333333", ls="none", zorder=6,
                        gid="noise-floor")
                has_floor = True
            for name, off in (("exact_mse", -h), ("exact_variance", 0.0)):
                ex = _exact_col(d, name)
                if ex is not None and np.isfinite(ex[i]):
                    ax.plot([ex[i]], [y + off], marker="D", ms=5, color="black", ls="none", zorder=5)
        ax.set_ylim(-len(all_ests) + 0.5, 0.5)
        if k % ncols == 0:
            ax.set_yticks([-i for i in range(len(all_ests))])
            ax.set_yticklabels(_with_class(all_ests, classes), fontsize=10)
            for t, e in zip(ax.get_yticklabels(), all_ests):
                t.set_color(st[e][0])
        if use_log:
            ax.set_xscale("log")
            ax.set_xlim(left=left)
        else:
            ax.set_xlim(left=0.0)
        ax.grid(True, axis="x", which="major", alpha=0.3)
        ax.set_title(f"N = {N}", fontsize=11)
        ax.set_xlabel("squared error units" + (" (log)" if use_log else ""), fontsize=10)
    for k in range(len(n_values), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    grey = "#555555"
    handles = [Patch(facecolor=grey, alpha=0.35, hatch="///", edgecolor=grey, label="bias^2 = ||mean - g||^2"),
               Patch(facecolor=grey, edgecolor=grey, label="variance"),
               Patch(facecolor="white", edgecolor=grey, linewidth=1.6, label="MSE = bias^2 + variance"),
               Line2D([], [], color="black", marker="|", ls="none", label="95% CI")]
    if _exact_col(df, "exact_mse") is not None or _exact_col(df, "exact_variance") is not None:
        handles.append(Line2D([], [], color="black", marker="D", ls="none", ms=5, label="exact value"))
    if has_floor:
        handles.append(Line2D([], [], color="#333333", marker="|", ms=11, mew=2.2, ls="none",
                              label="noise floor tr Var / K (bias^2 if unbiased)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3 if ncols > 1 else 2),
               fontsize=9, frameon=False)
    fig.suptitle(_title(suite, "bias^2, variance and MSE per estimator"), fontsize=12)
    return fig


# ----------------------------------------------------------------------------- efficiency

def efficiency(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None) -> Figure:
    """MSE against seconds on log-log axes, one line per estimator through its batch sizes
    (labelled with N), with dotted iso-cost lines ``MSE x seconds = const``: lower-left is
    better. The seconds are each estimator's own (``own_seconds``: its kernel alone on the
    cell's shape) where the rows carry them; otherwise the cell's, which its estimators share."""
    _require(df, ["estimator", "N", "mse", "seconds"], "efficiency")
    own = "own_seconds" in df.columns and np.isfinite(_num(df["own_seconds"])).any()
    if own:
        df = df.assign(seconds=df["own_seconds"])
    suite = _suite_name(df, suite)
    st = _styles(df, styles)
    fig = _new_figure(10.0, 5.0)
    ax = fig.add_subplot()
    xs, ys = [], []
    ests = _order(df["estimator"])
    # estimators of a cell share its time: spread them sideways (+-6% in x) so they stay legible
    dodge = {e: 1.0 + (0.12 * (i / (len(ests) - 1) - 0.5) if len(ests) > 1 else 0.0) for i, e in enumerate(ests)}
    shared = df.groupby("N")["seconds"].nunique().max() == 1 if len(ests) > 1 else False
    for est in ests:
        d = df[df["estimator"] == est].sort_values("N")
        s, m = _num(d["seconds"]), _num(d["mse"])
        ok = np.isfinite(s) & (s > 0) & np.isfinite(m) & (m > 0)
        if not ok.any():
            continue
        lo, hi = _interval(d, "mse", ok)
        colour, marker = st[est]
        x = s[ok] * (dodge[est] if shared else 1.0)
        ax.errorbar(x, m[ok], yerr=_log_err(m[ok], lo, hi, m[ok].min() * 1e-3), color=colour, marker=marker,
                    ms=6, lw=1.2, capsize=3, label=est)
        xs += list(s[ok])
        ys += list(m[ok])
    if xs:
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if x1 / x0 < 10:
            mid = math.sqrt(x0 * x1)
            x0, x1 = mid / 3.0, mid * 3.0
        ax.set_xlim(x0 / 1.3, x1 * 1.3)
        c_lo, c_hi = math.floor(math.log10(x0 * y0)), math.ceil(math.log10(x1 * y1))
        xx = np.geomspace(x0 / 1.3, x1 * 1.3, 50)
        for c in range(c_lo, c_hi + 1):
            ax.plot(xx, 10.0 ** c / xx, ls=":", lw=0.8, color="grey", zorder=0)
        ax.set_ylim(y0 / 3, y1 * 3)
        last, level = None, 0
        for sec, N in sorted((sec, N) for N, sec in df.groupby("N")["seconds"].median().items()
                             if np.isfinite(sec) and sec > 0):
            level = level + 1 if last is not None and sec / last < 1.3 else 0  # stack labels that would collide
            ax.text(sec, 0.01 + 0.045 * level, f"N={int(N)}", ha="center", va="bottom", fontsize=8, color="dimgrey",
                    transform=ax.get_xaxis_transform())
            last = sec
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_ticks(ax.xaxis)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("the estimator's own seconds (alone on the cell's N K episodes)" if own else
                  "wall-clock seconds of the cell (all K trials)"
                  + ("; shared by its estimators, spread +-6%" if shared else ""))
    ax.set_ylabel("MSE  E||g_hat - g||^2")
    fig.suptitle(_title(suite, "MSE against " + ("each estimator's own time" if own else "wall-clock time")
                        + " (lower left is better)"), fontsize=12)
    handles, labels = ax.get_legend_handles_labels()
    labels = _with_class(labels, estimator_classes(df))
    handles.append(Line2D([], [], ls=":", color="grey"))
    labels.append("MSE x seconds = 10^k")
    _legend_outside(ax, handles, labels)
    return fig


# ----------------------------------------------------------------------------- GAE lambda sweep

def parse_gae_label(label: str) -> Optional[dict]:
    """``'gae:lambda=0.9,critic=perturbed,scale=0.3'`` -> ``{'lambda': 0.9, 'critic': 'perturbed',
    'scale': 0.3, ...}`` with the catalogue's defaults filled in (``'gae'`` is lambda 0.95 with
    the exact critic, ``td0`` is lambda 0); ``None`` for estimators that are not GAE."""
    name = str(label).partition(":")[0]
    if name not in ("gae", "td0"):
        return None
    try:
        from pgbench.estimators.catalogue import parse
        p = dict(parse(str(label)).p)
    except Exception:  # a label from another version of the catalogue: read it by hand
        p = {"lambda": 0.95, "critic": "exact", "scale": 0.1}
        for item in str(label).partition(":")[2].split(","):
            k, eq, v = item.partition("=")
            if eq:
                try:
                    p[k.strip()] = float(v)
                except ValueError:
                    p[k.strip()] = v.strip()
    if name == "td0":
        p["lambda"] = 0.0
    p["lambda"] = float(p.get("lambda", 0.95))
    return p


def _critic_key(p: dict) -> str:
    c = str(p.get("critic", "exact"))
    return f"{c} critic (scale={p['scale']:g})" if c == "perturbed" and "scale" in p else f"{c} critic"


def gae_lambda(df: pd.DataFrame, suite: Optional[str] = None) -> Figure:
    """GAE bias norm (left) and variance (right) against lambda, one line per critic (with its
    confidence intervals); the dotted line on the left is each critic's noise floor
    ``sqrt(variance / K)``, the bias norm an unbiased estimator shows from noise alone. Other
    estimators of the cell are drawn as horizontal grey references."""
    _require(df, ["estimator", "N", "bias_norm", "variance"], "gae_lambda")
    suite = _suite_name(df, suite)
    parsed = [parse_gae_label(e) for e in df["estimator"]]
    if not any(p is not None for p in parsed):
        raise PGBenchError("gae_lambda: no GAE estimator (gae:... or td0:...) in the table")
    d = df.assign(_p=parsed)
    g = d[d["_p"].notna()].copy()
    g["_lambda"] = [p["lambda"] for p in g["_p"]]
    g["_critic"] = [_critic_key(p) for p in g["_p"]]
    others = d[d["_p"].isna()]
    n_values = sorted(set(int(n) for n in d["N"]))
    fig = _new_figure(MAX_WIDTH, 4.8)
    ax_b, ax_v = fig.subplots(1, 2)
    critics = _order(g["_critic"])
    styles_n = ["-", "--", "-.", ":"]
    extra = iter(PALETTE[4:])
    ccol = {}
    for c in critics:
        base = c.split(" ")[0]
        ccol[c] = CRITIC_COLORS.get(base) if CRITIC_COLORS.get(base) not in ccol.values() else next(extra)
    for c in critics:
        for j, N in enumerate(n_values):
            s = g[(g["_critic"] == c) & (g["N"] == N)].sort_values("_lambda")
            if s.empty:
                continue
            lam = s["_lambda"].to_numpy(float)
            lab = c + (f", N={N}" if len(n_values) > 1 else "")
            ls = styles_n[j % len(styles_n)]
            b, v = _num(s["bias_norm"]), _num(s["variance"])
            blo = _num(s["bias_norm_lo"]) if "bias_norm_lo" in s else b * np.nan
            bhi = _num(s["bias_norm_hi"]) if "bias_norm_hi" in s else b * np.nan
            vlo = _num(s["variance_lo"]) if "variance_lo" in s else v * np.nan
            vhi = _num(s["variance_hi"]) if "variance_hi" in s else v * np.nan
            ax_b.errorbar(lam, b, yerr=_err(b, blo, bhi), color=ccol[c], ls=ls, marker="o", ms=5, capsize=3,
                          label=lab)
            if "K" in s:
                K = _num(s["K"])
                ax_b.plot(lam, np.sqrt(v / K), color=ccol[c], ls=":", lw=1.0, alpha=0.8)
            ax_v.errorbar(lam, v, yerr=_log_err(v, vlo, vhi, np.nanmin(v) * 1e-2), color=ccol[c], ls=ls,
                          marker="o", ms=5, capsize=3, label=lab)
    grey = ["#555555", "#888888", "#aaaaaa", "#333333"]
    for i, (_, r) in enumerate(others.iterrows()):
        lab = f"{r['estimator']}" + (f", N={int(r['N'])}" if len(n_values) > 1 else "")
        for ax, col in ((ax_b, "bias_norm"), (ax_v, "variance")):
            val = float(r[col]) if r[col] is not None else float("nan")
            if np.isfinite(val) and val > 0:
                ax.axhline(val, color=grey[i % len(grey)], ls=(0, (6, 2, 1, 2)), lw=1.0, label=lab)
    ax_v.set_yscale("log")
    ax_b.set_ylim(bottom=0.0)
    for ax, what in ((ax_b, "bias norm ||mean - g||"), (ax_v, "variance  tr Cov(g_hat)")):
        ax.set_xlabel("GAE lambda")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlim(-0.05, 1.05)
    ax_b.set_title("bias (dotted: noise floor sqrt(var/K))", fontsize=10)
    ax_v.set_title("variance", fontsize=10)
    handles, labels = ax_v.get_legend_handles_labels()
    if "K" in g:
        handles.append(Line2D([], [], ls=":", color="grey"))
        labels.append("noise floor sqrt(var/K) (left)")
    _legend_outside(ax_v, handles, labels)
    nn = f" (N = {n_values[0]})" if len(n_values) == 1 else ""
    fig.suptitle(_title(suite, f"GAE bias and variance against lambda{nn}"), fontsize=12)
    return fig


# ----------------------------------------------------------------------------- proxy scatter

def proxy_scatter(scatter: dict, corr: Optional[float] = None, suite: Optional[str] = None,
                  cell: Optional[str] = None) -> Figure:
    """Per-episode ``W(tau)`` against the exact ``||z(tau)||^2`` (coloured by the return R when
    given), with ``y = x``; ``corr`` (the cell's correlation over all its episodes) and the
    correlation of the plotted episodes are in the title. Axes are logarithmic when the values
    span more than 50x."""
    if not isinstance(scatter, dict) or "W" not in scatter or "znorm2" not in scatter:
        raise PGBenchError("proxy_scatter needs a dict with per-episode 'W' and 'znorm2' lists")
    W = np.asarray(scatter["W"], dtype=float)
    Z = np.asarray(scatter["znorm2"], dtype=float)
    if W.shape != Z.shape or W.ndim != 1 or W.size < 2:
        raise PGBenchError(f"proxy_scatter: 'W' and 'znorm2' must be equal-length lists (got {W.shape}, {Z.shape})")
    ok = np.isfinite(W) & np.isfinite(Z)
    R = np.asarray(scatter.get("R", []), dtype=float)
    R = R[ok] if R.shape == W.shape else None
    W, Z = W[ok], Z[ok]
    fig = _new_figure(7.0, 5.6)
    ax = fig.add_subplot()
    kw = dict(s=9, alpha=0.55, linewidths=0)
    if R is not None and np.ptp(R) > 0:
        sc = ax.scatter(Z, W, c=R, cmap="viridis", **kw)
        fig.colorbar(sc, ax=ax, label="episode return R")
    else:
        ax.scatter(Z, W, color=PALETTE[0], **kw)
    both = np.concatenate([W, Z])
    pos = both[both > 0]
    if pos.size and (W > 0).all() and (Z > 0).all() and pos.max() / pos.min() > 50:
        ax.set_xscale("log")
        ax.set_yscale("log")
    lo, hi = (pos.min(), pos.max()) if pos.size else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="black", ls="--", lw=0.9, label="W = ||z||^2")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("exact ||z(tau)||^2  (z: the trajectory score, sum_t grad log pi(a_t | s_t))")
    ax.set_ylabel("proxy W(tau)")
    sample = float(np.corrcoef(W, Z)[0, 1]) if W.size > 2 and np.std(W) > 0 and np.std(Z) > 0 else float("nan")
    parts = []
    if corr is not None and np.isfinite(corr):
        parts.append(f"corr(W, ||z||^2) = {corr:.3f}")
    parts.append(f"plotted {W.size} episodes: corr = {sample:.3f}")
    head = _title(suite or "", "W(tau) against exact ||z||^2") + (f"  [{cell}]" if cell else "")
    ax.set_title(head + "\n" + ";  ".join(parts), fontsize=10)
    return fig


# ----------------------------------------------------------------------------- horizon and discount

def _suite_param(suite_id: str, key: str) -> Optional[float]:
    """``horizon/T=8`` -> 8.0 for ``key='T'`` (None when the suite id does not set ``key``)."""
    last = str(suite_id).rsplit("/", 1)[-1]
    if last.startswith(key + "="):
        try:
            return float(last.split("=", 1)[1])
        except ValueError:
            return None
    return None


def horizon(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None) -> Figure:
    """Variance of each estimator against the horizon T (left; suites ``.../T=..``) and against the
    effective horizon ``1 / (1 - gamma)`` of the discount (right; suites ``.../gamma=..``), log-log,
    with confidence intervals and the exact variances as open black-edged markers where known.
    Takes the rows of the whole family (column ``suite``)."""
    _require(df, ["suite", "estimator", "variance"], "horizon")
    st = _styles(df, styles)
    classes = estimator_classes(df)
    d = df.assign(_T=[_suite_param(s, "T") for s in df["suite"]],
                  _g=[_suite_param(s, "gamma") for s in df["suite"]])
    panels = [(k, x) for k, x in (("_T", "horizon T (steps; gamma = 1)"),
                                  ("_g", "effective horizon 1 / (1 - gamma) (unbounded episodes)"))
              if d[k].notna().any()]
    if not panels:
        raise PGBenchError("horizon: no suite of the form .../T=.. or .../gamma=.. in the table")
    fig = _new_figure(9.5, 4.4 * len(panels) + 0.4)  # panels stacked: legible on a narrow page
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    has_exact = False
    for ax, (key, xlabel) in zip(axes, panels):
        sub = d[d[key].notna()]
        xs = sorted(set(sub[key]))
        for est in _order(sub["estimator"]):
            e = sub[sub["estimator"] == est].sort_values(key)
            x = e[key].to_numpy(float)
            x = 1.0 / (1.0 - x) if key == "_g" else x
            v = _num(e["variance"])
            ok = np.isfinite(v) & (v > 0)
            if not ok.any():
                continue
            lo, hi = _interval(e, "variance", ok)
            colour, marker = st[est]
            ax.errorbar(x[ok], v[ok], yerr=_log_err(v[ok], lo, hi, v[ok].min() * 1e-3), color=colour,
                        marker=marker, ms=5, lw=1.4, capsize=3, label=est)
            ex = _exact_col(e, "exact_variance")
            if ex is not None:
                m = ok & np.isfinite(ex) & (ex > 0)
                if m.any():
                    ax.plot(x[m], ex[m], ls="none", marker=marker, ms=9, mfc="none", mec="black", mew=1.0)
                    has_exact = True
        ticks = [1.0 / (1.0 - g) for g in xs] if key == "_g" else xs
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:.3g}" for t in ticks], fontsize=8)
        ax.xaxis.set_minor_locator(NullLocator())
        if key == "_g":
            top = ax.secondary_xaxis("top")
            top.set_xticks(ticks)
            top.set_xticklabels([f"{g:g}" for g in xs], fontsize=8)
            top.xaxis.set_minor_locator(NullLocator())
            top.set_xlabel("gamma", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("variance  tr Cov(g_hat)")
    handles, labels = axes[-1].get_legend_handles_labels()
    labels = _with_class(labels, classes)
    if has_exact:
        handles.append(Line2D([], [], ls="-", color="grey", marker="o", mfc="none", mec="black", ms=9))
        labels.append("exact variance (line); measured: points with 95% CI")
    _legend_outside(axes[-1], handles, labels)
    Ns = sorted(set(int(n) for n in d["N"])) if "N" in d else []
    fam = (_suite_name(df, suite) or str(df["suite"].iloc[0])).split("/")[0]
    fig.suptitle(_title(f"{fam}/T=.., {fam}/gamma=..", "variance against the horizon and the discount"
                        + (f" (N = {Ns[0]})" if len(Ns) == 1 else "")), fontsize=12)
    return fig


# ----------------------------------------------------------------------------- exact variance decomposition

DECOMPOSITION_PARTS = (("state", "start state and transitions", "#4c72b0"),
                       ("action", "action sampling", "#dd8452"),
                       ("noise", "reward noise", "#55a868"))


def variance_decomposition(parts: list, suite: Optional[str] = None, cell: Optional[str] = None) -> Figure:
    """The exact variance of each estimator split into start state and transitions, action
    sampling and reward noise (``pgbench.exact.moments.variance_decomposition``): left, the
    parts stacked as shares of each estimator's variance; right, the
    total exact variance on a log axis, so that estimators of very different variance compare."""
    rows = [r for r in (parts or []) if isinstance(r, dict)
            and all(_is_finite(r.get(k)) for k in ("variance", "state", "action", "noise"))]
    if not rows:
        raise PGBenchError("variance_decomposition needs rows with finite 'variance', 'state', 'action', 'noise'")
    labels = [str(r["estimator"]) for r in rows]
    total = np.array([float(r["variance"]) for r in rows])
    fig = _new_figure(10.0, 0.9 + 0.42 * len(rows))
    ax, ax2 = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for key, name, colour in DECOMPOSITION_PARTS:
        share = np.array([max(float(r[key]), 0.0) for r in rows]) / np.where(total > 0, total, 1.0)
        ax.barh(y, share, left=left, color=colour, label=name, height=0.7)
        left += share
    ax.set_xlim(0, 1)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("share of the exact variance")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    ax2.barh(y, np.where(total > 0, total, np.nan), color="dimgrey", height=0.7)
    ax2.set_xscale("log")
    ax2.set_xlabel("exact variance  tr Cov(g_hat)")
    ax2.grid(True, axis="x", which="both", alpha=0.3)
    head = _title(suite or "", "exact variance decomposition") + (f"  [{cell}]" if cell else "")
    fig.suptitle(head, fontsize=12)
    return fig


def _is_finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


FIGURES = {"variance_vs_N": variance_vs_n, "bias_variance": bias_variance, "efficiency": efficiency,
           "gae_lambda": gae_lambda, "proxy": proxy_scatter, "horizon": horizon,
           "variance_decomposition": variance_decomposition}
"""The figure names suites list in ``Suite.figures`` and the functions that draw them."""


# ----------------------------------------------------------------------------- variance against a problem parameter

def _problem_param(problem_id: str, key: str) -> float:
    """The value of ``key`` in a problem id such as ``double_integrator:T=50,gamma=0.99`` (NaN if absent)."""
    for item in str(problem_id).partition(":")[2].split(","):
        k, _, v = item.partition("=")
        if k.strip() == key:
            try:
                return float(v)
            except ValueError:
                return float("nan")
    return float("nan")


def variance_vs_param(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None,
                      param: str = "T", xlabel: Optional[str] = None) -> Figure:
    """Variance of each estimator (log scale, with its confidence interval) against a parameter
    of the problem id (the horizon ``T``, or ``sigma``) on a log x axis: rows of several suites
    that differ in that parameter (a suite family such as ``control/horizon``). Estimators biased
    by design are drawn dashed; legend labels carry the class of non-practical estimators; several batch sizes give one line each; the
    exact variance (``exact_variance``, where known) as open black-edged markers."""
    _require(df, ["estimator", "N", "variance", "problem"], "variance_vs_param")
    d_all = df.assign(_x=[_problem_param(p, param) for p in df["problem"]])
    d_all = d_all[np.isfinite(d_all["_x"].to_numpy(dtype=float))]
    if d_all.empty:
        raise PGBenchError(f"variance_vs_param: no problem id carries parameter {param!r}")
    st = _styles(d_all, styles)
    n_values = sorted(set(int(n) for n in d_all["N"]))
    classes = estimator_classes(d_all)
    fig = _new_figure(8.5, 5.0)
    ax = fig.add_subplot()
    dashes = ("-", "-.", ":", (0, (5, 1)))
    has_exact = False
    for est in _order(d_all["estimator"]):
        for k, N in enumerate(n_values):
            d = d_all[(d_all["estimator"] == est) & (d_all["N"] == N)].sort_values("_x")
            x, v = _num(d["_x"]), _num(d["variance"])
            ok = np.isfinite(v) & (v > 0) & (x > 0)
            if not ok.any():
                continue
            x, v = x[ok], v[ok]
            lo, hi = _interval(d, "variance", ok)
            colour, marker = st[est]
            biased = classes.get(est, "").startswith("biased")
            label = _with_class([est], classes)[0] + (f", N={N}" if len(n_values) > 1 else "")
            ax.errorbar(x, v, yerr=_log_err(v, lo, hi, v.min() * 1e-3), color=colour, marker=marker, ms=5, lw=1.6,
                        capsize=3, label=label, ls="--" if biased else dashes[k % len(dashes)])
            ex = _exact_col(d, "exact_variance")
            if ex is not None:
                ex = ex[ok]
                keep = np.isfinite(ex) & (ex > 0)
                ax.plot(x[keep], ex[keep], ls="none", marker=marker, ms=9, mfc="none", mec="black", mew=1.0)
                has_exact = has_exact or bool(keep.any())
    xs = sorted(set(float(x) for x in d_all["_x"]))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel(xlabel or param)
    ax.set_ylabel("variance  tr Cov(g_hat)  (log)")
    nlab = f"N = {n_values[0]}" if len(n_values) == 1 else "several N"
    ax.set_title(_title(suite or "", f"variance against {param} ({nlab})"))
    handles, labels = ax.get_legend_handles_labels()
    if has_exact:
        handles.append(Line2D([], [], ls="-", color="grey", marker="o", mfc="none", mec="black", ms=9))
        labels.append("exact variance (line); measured: points with 95% CI")
    _legend_outside(ax, handles, labels)
    return fig


def variance_vs_T(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None) -> Figure:
    return variance_vs_param(df, suite, styles, param="T", xlabel="horizon T (steps)")


def variance_vs_sigma(df: pd.DataFrame, suite: Optional[str] = None, styles: Optional[dict] = None) -> Figure:
    return variance_vs_param(df, suite, styles, param="sigma", xlabel="policy noise sigma")


FAMILY_FIGURES = {"variance_vs_T": variance_vs_T, "variance_vs_sigma": variance_vs_sigma, "horizon": horizon}
"""Figures drawn once for a family of suites (the suite id up to its last '/': ``horizon/T=8`` and
``horizon/gamma=0.9`` are the family ``horizon``), from the rows of all its suites, under the
family's last suite in the report."""

"""``pgbench compare RUN_A RUN_B``: which measurements moved between two runs.

Cells present in both runs are matched on cell id and estimator label. For each of
``bias_norm``, ``variance`` and ``mse`` the two runs give independent estimates ``a`` and
``b`` with standard errors ``se_a`` and ``se_b``; the change is measured by

    z = (b - a) / sqrt(se_a^2 + se_b^2)

and **flagged when |z| > 4** (:data:`Z_THRESHOLD`; a fixed, deliberately conservative level:
about 1 in 16 000 unchanged metrics would be flagged under normality, and nothing here is
tuned to any data). The ratio ``b / a`` is reported beside it. A missing standard error gives
``z = nan`` and no flag; two zero standard errors give ``z = +-inf`` for any difference.

Speed (``episodes_per_second``) is reported as the ratio ``b / a`` and never flagged by
default, since timings on shared machines are noisy; pass ``speed_factor`` (e.g. ``2.0``) to
flag ratios beyond ``[1 / factor, factor]``.

Cells (or estimators of a common cell) found in only one run are listed with status
``removed`` (only in A) or ``added`` (only in B).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from pgbench.errors import PGBenchError
from pgbench.reports.report import load_run, results_frame

Z_THRESHOLD = 4.0
"""``|z|`` beyond which a metric counts as moved (see the module docstring)."""

METRICS = ("bias_norm", "variance", "mse")
SPEED = "episodes_per_second"
COLUMNS = ["suite", "cell", "N", "estimator", "status", "scope", "metric", "a", "b", "se_a", "se_b", "ratio", "z",
           "flagged", "note"]


def _f(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def z_score(a: float, b: float, se_a: float, se_b: float) -> float:
    """``(b - a) / sqrt(se_a^2 + se_b^2)``: nan when an input is missing, +-inf when both
    standard errors are zero and the values differ, 0 when they agree."""
    if not all(math.isfinite(v) for v in (a, b, se_a, se_b)):
        return float("nan")
    s = math.hypot(se_a, se_b)
    if s == 0.0:
        return 0.0 if a == b else math.copysign(math.inf, b - a)
    return (b - a) / s


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0.0:
        return float("nan") if not (a == 0.0 and b == 0.0) else 1.0
    return b / a


def _table(run) -> pd.DataFrame:
    _, cells = load_run(run)
    df = results_frame(cells)
    if df.empty:
        return pd.DataFrame(columns=["suite", "cell", "N", "estimator"])
    dup = df.duplicated(["cell", "estimator"])
    if dup.any():
        first = df[dup].iloc[0]
        raise PGBenchError(f"run {run} has estimator {first['estimator']!r} twice in cell {first['cell']!r}")
    return df


def compare(run_a, run_b, speed_factor: Optional[float] = None, z_threshold: float = Z_THRESHOLD) -> pd.DataFrame:
    """Compare two run directories; a tidy DataFrame with one row per (cell, estimator, metric)
    for pairs present in both runs (``status == 'both'``, metrics ``bias_norm``, ``variance``,
    ``mse`` and ``episodes_per_second``) and one row per (cell, estimator) present in only one
    (``status`` ``'added'``/``'removed'``, ``scope`` ``'cell'`` when the whole cell is, else
    ``'estimator'``). Columns: :data:`COLUMNS`. ``flagged`` marks metrics with
    ``|z| > z_threshold`` (default 4; see the module docstring) and, when ``speed_factor`` is
    given, speed ratios outside ``[1/speed_factor, speed_factor]``."""
    if speed_factor is not None:
        try:
            speed_factor = float(speed_factor)
        except (TypeError, ValueError):
            raise PGBenchError(f"speed_factor must be a number > 1; got {speed_factor!r}") from None
        if not (math.isfinite(speed_factor) and speed_factor > 1.0):
            raise PGBenchError(f"speed_factor must be a number > 1; got {speed_factor!r}")
    A, Bt = _table(run_a), _table(run_b)
    ia = {(r["cell"], r["estimator"]): r for r in A.to_dict("records")}
    ib = {(r["cell"], r["estimator"]): r for r in Bt.to_dict("records")}
    cells_a, cells_b = set(A["cell"]), set(Bt["cell"])
    rows = []
    for key in list(ia) + [k for k in ib if k not in ia]:
        ra, rb = ia.get(key), ib.get(key)
        r0 = ra if ra is not None else rb
        base = {"suite": r0.get("suite"), "cell": key[0], "N": r0.get("N"), "estimator": key[1]}
        if ra is None or rb is None:
            status = "added" if ra is None else "removed"
            other = cells_a if ra is None else cells_b
            rows.append({**base, "status": status, "scope": "estimator" if key[0] in other else "cell",
                         "metric": None, "flagged": False, "note": "only in B" if ra is None else "only in A"})
            continue
        for m in METRICS:
            a, b = _f(ra.get(m)), _f(rb.get(m))
            sa, sb = _f(ra.get(m + "_se")), _f(rb.get(m + "_se"))
            z = z_score(a, b, sa, sb)
            note = "" if math.isfinite(sa) and math.isfinite(sb) else "no standard error"
            if not (math.isfinite(a) and math.isfinite(b)):
                note = "missing value"
            rows.append({**base, "status": "both", "scope": "estimator", "metric": m, "a": a, "b": b, "se_a": sa,
                         "se_b": sb, "ratio": _ratio(a, b), "z": z, "flagged": bool(abs(z) > z_threshold),
                         "note": note})
        a, b = _f(ra.get(SPEED)), _f(rb.get(SPEED))
        ratio = _ratio(a, b)
        slow = speed_factor is not None and math.isfinite(ratio) and not (1 / speed_factor <= ratio <= speed_factor)
        rows.append({**base, "status": "both", "scope": "estimator", "metric": SPEED, "a": a, "b": b,
                     "ratio": ratio, "flagged": bool(slow),
                     "note": "" if speed_factor is not None else "speed: reported, not flagged"})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["flagged"] = df["flagged"].astype(bool)
    for c in ("a", "b", "se_a", "se_b", "ratio", "z"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df.attrs.update({"run_a": str(run_a), "run_b": str(run_b), "z_threshold": float(z_threshold),
                     "speed_factor": speed_factor})
    return df


def _g(x, digits=3) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def format_compare(df: pd.DataFrame) -> str:
    """A plain-text account of :func:`compare`'s table: flagged metrics first, then speed,
    then cells and estimators added or removed."""
    if not isinstance(df, pd.DataFrame) or not set(COLUMNS) <= set(df.columns):
        raise PGBenchError("format_compare needs the DataFrame that compare() returns")
    zt = df.attrs.get("z_threshold", Z_THRESHOLD)
    sf = df.attrs.get("speed_factor")
    out = []
    if df.attrs.get("run_a"):
        out.append(f"A: {df.attrs['run_a']}")
        out.append(f"B: {df.attrs['run_b']}")
    both = df[df["status"] == "both"]
    pairs = both[["cell", "estimator"]].drop_duplicates()
    n_cells = pairs["cell"].nunique()
    added, removed = df[df["status"] == "added"], df[df["status"] == "removed"]
    out.append(f"{n_cells} cell(s) in both runs ({len(pairs)} estimator rows); "
               f"{added['cell'][added['scope'] == 'cell'].nunique()} cell(s) added, "
               f"{removed['cell'][removed['scope'] == 'cell'].nunique()} removed.")
    out.append("")
    met = both[both["metric"].isin(METRICS)]
    flagged = met[met["flagged"]]
    rule = f"|z| > {zt:g}, z = (b - a) / sqrt(se_a^2 + se_b^2)"
    if flagged.empty:
        out.append(f"No metric moved beyond its confidence interval ({rule}) in {len(met)} comparisons.")
    else:
        out.append(f"Metrics that moved beyond their confidence intervals ({rule}): {len(flagged)} of {len(met)}")
        flagged = flagged.assign(_abs=flagged["z"].abs()).sort_values("_abs", ascending=False)
        w_cell = max(len(str(c)) for c in flagged["cell"])
        w_est = max(len(str(e)) for e in flagged["estimator"])
        for _, r in flagged.iterrows():
            word = "up" if r["b"] > r["a"] else "down"
            out.append(f"  {r['cell']:<{w_cell}}  {r['estimator']:<{w_est}}  {r['metric']:<9}  "
                       f"{_g(r['a'])} -> {_g(r['b'])}  (x{_g(r['ratio'])}, z = {r['z']:+.1f}, {word})")
    out.append("")
    sp = both[both["metric"] == SPEED].dropna(subset=["ratio"])
    if not sp.empty:
        per_cell = sp.groupby("cell")["ratio"].median()
        line = (f"Speed (episodes/s, B / A): median x{_g(per_cell.median())} over {len(per_cell)} cell(s), "
                f"from x{_g(per_cell.min())} ({per_cell.idxmin()}) to x{_g(per_cell.max())} ({per_cell.idxmax()})")
        out.append(line + ("." if sf is None else f"; flagged beyond a factor {sf:g}:"))
        if sf is None:
            out.append("  (timings are noisy on shared machines: reported, not flagged; see speed_factor)")
        else:
            slow = sp[sp["flagged"]].drop_duplicates("cell")
            if slow.empty:
                out.append("  none")
            for _, r in slow.iterrows():
                out.append(f"  {r['cell']}  {_g(r['a'])} -> {_g(r['b'])} episodes/s  (x{_g(r['ratio'])})")
        out.append("")
    for label, part in (("Added (only in B)", added), ("Removed (only in A)", removed)):
        if part.empty:
            continue
        whole = sorted(part["cell"][part["scope"] == "cell"].unique())
        ests = part[part["scope"] == "estimator"]
        out.append(f"{label}:")
        for c in whole:
            n = (part["cell"] == c).sum()
            out.append(f"  cell {c} ({n} estimator(s))")
        for _, r in ests.iterrows():
            out.append(f"  estimator {r['estimator']} in cell {r['cell']}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


__all__ = ["compare", "format_compare", "z_score", "Z_THRESHOLD", "METRICS", "COLUMNS"]

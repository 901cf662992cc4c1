"""``pgbench report RUN_DIR``: a Markdown and a self-contained HTML report of a run directory.

:func:`write_report` reads ``meta.json`` and ``cells/*.json`` (so a partial or interrupted run
reports too) and writes, each file atomically:

- ``figures/*.png``: the figures each suite lists in ``Suite.figures`` (:mod:`.figures`);
- ``report.md``: the report, linking the PNGs relatively (``figures/NAME.png``);
- ``report.html``: the same report in one file: inline CSS, figures embedded as base64
  ``data:`` URIs, no scripts and no external links; well-formed (XHTML-style void tags), so
  it parses as XML too.

Content, conclusions first: what was run; failures (unfinished cells, figures that could not
be drawn, estimators claimed unbiased whose test of ``mean = exact gradient`` gives
``p < ALPHA``); headlines (practical winners, the most biased estimators); every estimator
biased by design with how biased it is (exact where the mean is known in closed form); the
winners of each class (practical, biased by design whatever it reads, and oracle as a
reference) per cell and target gradient; then :data:`EXTRA_SECTIONS`, the table of contents
(folded in HTML), per suite its description, per cell a table (verdict, its p-value and test
first; class, claimed unbiasedness, bias norm, variance and MSE with their 95% intervals,
exact values beside them when the rows carry ``exact_variance`` / ``exact_mse`` /
``exact_bias_norm``, cosine, costs), the paired comparisons against the cell's reference
estimator (same target only; the test of equal means with the verdicts' p-value policy), and
the suite's figures; how to read the report; and last the run's metadata.

The p-value shown is the one the verdict uses (:func:`pgbench.stats.metrics.verdict_p`).
Verdicts (``ALPHA = 0.001``): claimed unbiased and ``p < ALPHA`` -> **BIAS DETECTED**;
claimed unbiased otherwise -> ``consistent``; claimed biased and ``p < ALPHA`` ->
``biased (expected)``; claimed biased otherwise -> ``bias not resolved`` (too small to see
with these K trials).
"""
from __future__ import annotations

import math
import os
import platform
import re
import time
from typing import Optional

import pandas as pd

from pgbench.errors import PGBenchError
# Doc, render_markdown, render_html, fmt: re-exported (report sections and tests use them here)
from pgbench.reports.document import B, C, Doc, Inline, _finite, fmt, fmt_ci, fmt_p, render_html, render_markdown  # noqa: F401
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


def _biased_by_design(r: dict) -> bool:
    """Claimed biased: its expectation is not what it estimates (whatever else it reads)."""
    return _claim(r.get("unbiased")) is False


def _rank_class(r: dict) -> str:
    """The class an estimator is ranked in: ``biased`` for every estimator biased by design (one
    that reads an exact critic too: ppo_gae, normalized_advantage), else its class."""
    return "biased" if _biased_by_design(r) else _class(r)


def _shown_class(r: dict) -> str:
    c = _class(r)
    return "biased; reads oracle" if c == "oracle" and _biased_by_design(r) else c


def _exactly_unbiased(r: dict) -> bool:
    """A catalogue estimator claimed unbiased: its exact bias is 0 by construction (a user
    estimator's claim is what the test checks, so it gets no such entry)."""
    if _claim(r.get("unbiased")) is not True:
        return False
    label = str(r.get("estimator"))
    from pgbench.estimators.catalogue import parse
    from pgbench.estimators.user import USER_ESTIMATORS
    if label.split(":")[0] in USER_ESTIMATORS:
        return False
    for kind in ("mdp", "gaussian", "categorical", "lqg"):  # the catalogue's kinds of target
        try:
            sp = parse(label, kind)
        except Exception:  # not this kind (or not this pgbench's catalogue: another version's label)
            continue
        return bool(sp.unbiased) and getattr(sp, "name", "") != "user"
    return False


def _exact_bias(r: dict) -> str:
    if _finite(r.get("exact_bias_norm")):
        return fmt(r.get("exact_bias_norm"))
    return "0" if _exactly_unbiased(r) else "-"


def _interval_excludes_zero(r: dict) -> bool:
    return _finite(r.get("bias_norm_lo")) and float(r["bias_norm_lo"]) > 0


def _target_key(r: dict):
    """Rows with the same target gradient share this key (its norm and dimension; targets
    differ by far more than rounding where they differ at all)."""
    g = r.get("exact_grad_norm")
    d = r.get("d")
    return (float(f"{float(g):.9g}") if _finite(g) else None, d if isinstance(d, int) else None)


def _target_groups(rows: list[dict]) -> list[list[dict]]:
    """The rows of a cell by target, in order of first appearance: estimators are ranked and
    paired only against others estimating the same gradient."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(_target_key(r), []).append(r)
    return list(groups.values())


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


def _winners(rows: list[dict], cls: Optional[str] = None, cost_key: Optional[str] = "auto") -> dict:
    """Ascending ``(value, estimator)`` lists by MSE and by cost, over the rows of class ``cls``
    (:func:`_rank_class`; all rows when ``None``). Pass the rows of one target only."""
    sel = [r for r in rows if cls is None or _rank_class(r) == cls]

    def best(key):
        if key is None:
            return []
        c = [(float(r[key]), r["estimator"]) for r in sel if _finite(r.get(key))]
        c.sort()
        return c
    return {"mse": best("mse"), "cost": best(_cost_key(rows) if cost_key == "auto" else cost_key)}


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
    # bold: the lowest MSE (and cost) of each class and target, so a practical winner is never
    # hidden by an oracle, nor compared with an estimator of another gradient
    best_mse, best_cost = set(), set()
    for group in _target_groups(rows):
        for cls in ("practical", "biased", "oracle"):
            win = _winners(group, cls, _cost_key(rows))
            best_mse |= {win["mse"][0][1]} if win["mse"] else set()
            best_cost |= {win["cost"][0][1]} if win["cost"] else set()
    cost_key = _cost_key(rows)
    ex_bias = _has_exact(rows, "exact_bias_norm") or any(_exactly_unbiased(r) for r in rows)
    # the verdict and its p first: on a narrow screen they stay in view
    headers = ["estimator", f"verdict (p < {ALPHA:g})", "p (mean = exact)", "test of that p", "class",
               "unbiased (claimed)", "bias norm [95% CI]"] + (["exact bias norm"] if ex_bias else [])
    headers += ["variance [95% CI]"]
    headers += ["exact variance"] if ex_var else []
    headers += ["MSE [95% CI]"] + (["exact MSE"] if ex_mse else [])
    headers += ["NSR [95% CI]"] + (["exact NSR"] if _has_exact(rows, "exact_nsr") else [])  # tr Var / ||grad J||^2
    headers += ["cosine", "cell seconds", "episodes/s"]
    headers += ["own seconds", "MSE x own seconds"] if cost_key else []
    numeric = {i for i, h in enumerate(headers)
               if h not in ("estimator", "class", "unbiased (claimed)", headers[1], "test of that p")}
    out = []
    for r in rows:
        claim = _claim(r.get("unbiased"))
        p, test = _p_and_test(r)
        line = [C(r["estimator"]), verdict(r.get("unbiased"), p), fmt_p(p), test, _shown_class(r),
                "-" if claim is None else ("yes" if claim else "no"),
                fmt_ci(r.get("bias_norm"), r.get("bias_norm_lo"), r.get("bias_norm_hi"))]
        line += [_exact_bias(r)] if ex_bias else []
        line += [fmt_ci(r.get("variance"), r.get("variance_lo"), r.get("variance_hi"))]
        if ex_var:
            line.append(_exact_cell(r, "variance"))
        mse = fmt_ci(r.get("mse"), r.get("mse_lo"), r.get("mse_hi"))
        line.append(B(mse) if r["estimator"] in best_mse else mse)
        if ex_mse:
            line.append(_exact_cell(r, "mse"))
        line += [fmt_ci(r.get("nsr"), r.get("nsr_lo"), r.get("nsr_hi"))]
        line += [fmt(r.get("exact_nsr"))] if _has_exact(rows, "exact_nsr") else []
        line += [fmt(r.get("cosine")), fmt(r.get("seconds")), fmt(r.get("episodes_per_second"))]
        if cost_key:
            cost = fmt(r.get(cost_key))
            line += [fmt(r.get("own_seconds")), B(cost) if r["estimator"] in best_cost else cost]
        out.append(line)
    doc.table(headers, out, numeric, key={1})
    if len(_target_groups(rows)) > 1:
        doc.p(Inline("Estimators of this cell estimate different gradients (their exact ||grad|| differs); "
                     "bold marks the best of each class among those with the same target: "
                     + "; ".join(", ".join(r["estimator"] for r in g) for g in _target_groups(rows)) + "."))
    wide = [r for r in rows if _claim(r.get("unbiased")) and _interval_excludes_zero(r)
            and _finite(_p(r)) and float(_p(r)) >= ALPHA]
    if wide:
        doc.p(B("Interval and verdict:"), Inline(
            " the 95% interval of the bias norm excludes 0 for " + ", ".join(r["estimator"] for r in wide)
            + f" while the verdict is 'consistent'. They answer at different levels: the interval at 95%, "
            f"which one unbiased estimator in twenty excludes 0 by chance, the verdict at p < {ALPHA:g} "
            f"with the bootstrap (its p is shown: {', '.join(fmt_p(_p(r)) for r in wide)}). The verdict is "
            f"the test of unbiasedness; a p between {ALPHA:g} and 0.05 is a hint to rerun with more trials."))
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


def _paired_p(p: dict) -> tuple:
    """``(p, test name)`` of a paired row's test that the two means agree: the verdicts' policy
    (normal theory and bootstrap max-t, :func:`pgbench.stats.metrics.verdict_p`); a record
    written before paired rows had a bootstrap shows its normal-theory p, so named."""
    if isinstance(p.get("p_test"), str) and _finite(p.get("p_robust")):
        return float(p["p_robust"]), p["p_test"]
    if not _finite(p.get("p_value")):
        return None, "-"
    from pgbench.stats.metrics import TEST_NAMES
    name = TEST_NAMES.get(str(p.get("test")), str(p.get("test") or "?"))
    return float(p["p_value"]), f"{name} only (no bootstrap in this record)"


def _paired_table(doc: Doc, rec: dict) -> None:
    pairs = rec.get("paired") or []
    if not pairs:
        doc.p(Inline("No paired comparisons in this cell (one estimator, or estimators with different targets)."))
        return
    ref = pairs[0].get("reference", rec["rows"][0]["estimator"] if rec["rows"] else "?")
    doc.p("Paired against the reference ", C(ref), " on the same episodes (common random numbers), only "
          "estimators of the same target: MSE difference (estimator - reference), variance ratio (estimator / "
          f"reference), and the test that the two means agree, with the verdicts' p-value policy (the larger "
          f"of the normal-theory and the bootstrap max-t p; the test is named).")
    headers = ["estimator", "MSE vs reference", "class", "MSE diff [95% CI]", "p (MSE diff)",
               "variance ratio [95% CI]", "p (ratio)", "p (means agree)", "test of that p"]
    classes = {r["estimator"]: _shown_class(r) for r in rec["rows"]}
    out = []
    for p in pairs:
        ci = p.get("mse_diff_ci") if isinstance(p.get("mse_diff_ci"), (list, tuple)) else [None, None]
        rci = p.get("variance_ratio_ci") if isinstance(p.get("variance_ratio_ci"), (list, tuple)) else [None, None]
        lo, hi = (list(ci) + [None, None])[:2]
        rlo, rhi = (list(rci) + [None, None])[:2]
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
        mp, mtest = _paired_p(p)
        out.append([C(est), v, cls, fmt_ci(p.get("mse_diff"), lo, hi), fmt_p(p.get("mse_diff_p")),
                    fmt_ci(p.get("variance_ratio"), rlo, rhi), fmt_p(p.get("variance_ratio_p")),
                    fmt_p(mp), mtest])
    doc.table(headers, out, {3, 4, 5, 6, 7}, key={1})


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
        wall, comp = float(rec["wall_seconds"]), rec.get("compile_seconds")
        if _finite(comp) and float(comp) >= 0.05 * max(wall, 1e-9) and float(comp) >= 0.01:
            # a cold cell compiles kernels on first use: that is not what the cell costs
            bits.append(f"wall time {fmt(max(wall - float(comp), 0.0))} s, plus {fmt(comp)} s compiling "
                        "kernels on first use")
        else:
            bits.append(f"wall time {fmt(wall)} s")
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
            cid = f"{s.id}/{'G' if getattr(s, 'groups', 0) else 'N'}={N}"
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


EXTRA_SECTIONS: list = []
"""Callables ``section(doc, meta, cells) -> None`` that add sections to the report, in order,
after the conclusions and before the suites' tables (``doc.h(2, title, anchor)`` then blocks:
an anchored level-2 heading joins the table of contents). Append to add one."""


def _what_was_run(doc: Doc, meta: dict, cells: list[dict]) -> None:
    suites = list(dict.fromkeys(c["suite"] for c in cells))
    n_rows = sum(len(c["rows"]) for c in cells)
    n_est = len({r["estimator"] for c in cells for r in c["rows"]})
    Ks = sorted({int(c["K"]) for c in cells if isinstance(c.get("K"), int)})
    quick = meta.get("quick")
    mode = "quick (CI subset)" if quick else ("full" if quick is not None else "unknown mode")
    status = meta.get("status")
    k_txt = ("" if not Ks else f"K = {Ks[0]} trials per cell" if len(Ks) == 1
             else f"K = {Ks[0]}-{Ks[-1]} trials per cell")
    doc.p(B("What was run:"), Inline(
        f" {len(suites)} suite(s), {len(cells)} cell(s), {n_est} estimator(s) in {n_rows} measurements "
        f"against the exact gradient; {mode} run, seed {meta.get('seed', '-')}"
        + (f", {k_txt}" if k_txt else "") + f"; from {meta.get('started') or '-'} to {meta.get('ended') or '-'}"
        + ("" if status in ("complete", "finishing", None) else f"; status {status}") + "."))


def _range(vals: list, digits: int = 3) -> str:
    vals = [float(v) for v in vals if _finite(v)]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return fmt(lo, digits) if fmt(lo, digits) == fmt(hi, digits) else f"{fmt(lo, digits)} to {fmt(hi, digits)}"


def _rel_bias(r: dict):
    """``(bias / ||g||, exact?)``: from the exact bias norm where it is known, else measured where
    the test resolves the bias (``None`` where it does not: the measured norm is then noise)."""
    ex, gn = r.get("exact_bias_norm"), r.get("exact_grad_norm")
    if _finite(ex) and _finite(gn) and float(gn) > 0:
        return float(ex) / float(gn), True
    p = _p(r)
    if not (_finite(p) and float(p) < ALPHA):
        return None, False
    return (float(r["rel_bias"]), False) if _finite(r.get("rel_bias")) else (None, False)


def _biased_groups(cells: list[dict]) -> list[tuple]:
    """``(suite, estimator, [(cell, row), ...])`` for every estimator biased by design, by suite."""
    groups: dict = {}
    for c in cells:
        for r in c["rows"]:
            if _biased_by_design(r):
                groups.setdefault((c["suite"], r["estimator"]), []).append((c, r))
    return [(s, e, g) for (s, e), g in groups.items()]


def _winner_rows(cells: list[dict]) -> list[tuple]:
    """``(cell, target rows, winners by class)`` per cell and target."""
    out = []
    for c in cells:
        ck = _cost_key(c["rows"])
        groups = _target_groups(c["rows"])
        for g in groups:
            out.append((c, g if len(groups) > 1 else None,
                        {k: _winners(g, k, ck) for k in ("practical", "biased", "oracle")}))
    return out


def _conclusions(doc: Doc, meta: dict, cells: list[dict], learning: list = ()) -> int:
    """What a reviewer needs first: failures, winners per class and target, what is biased and
    by how much. Returns the index of the block that will list figures that failed."""
    doc.h(2, "Conclusions", "summary")
    missing = _planned_missing(meta, cells + list(learning))  # learning cells are reported in their own section
    flagged = [(c["cell"], r) for c in cells for r in c["rows"]
               if _claim(r.get("unbiased")) and _finite(_p(r)) and float(_p(r)) < ALPHA]
    if missing:
        doc.p(B("Partial run:"), Inline(f" {len(missing)} planned cell(s) not finished: "), C(", ".join(missing)))
    if meta.get("status") not in (None, "complete", "finishing"):
        doc.p(B("Run status:"), Inline(f" {meta.get('status')}."))
    fig_slot = len(doc.blocks)
    doc.p(Inline(""))  # replaced by the figures that could not be drawn, or removed
    if not cells:
        doc.p(Inline("This run has no finished cells yet: nothing to report."))
        return fig_slot
    winners = _winner_rows(cells)
    biased = _biased_groups(cells)

    # the headlines: one line each, the tables below say the rest
    heads = []
    if flagged:
        heads.append([B("BIAS DETECTED"), Inline(f" in {len(flagged)} measurement(s) of estimators claimed unbiased "
                                                 f"(p < {ALPHA:g}): "),
                      C(", ".join(dict.fromkeys(r["estimator"] for _, r in flagged))), Inline(" (table below).")])
    else:
        n_claimed = sum(1 for c in cells for r in c["rows"] if _claim(r.get("unbiased")))
        heads.append([B("No failures:"), Inline(f" none of the {n_claimed} measurements claimed unbiased fails "
                                                f"the test of mean = exact gradient at p < {ALPHA:g}.")])
    from collections import Counter
    contests = [w["practical"]["mse"] for _, _, w in winners if len(w["practical"]["mse"]) >= 2]
    wins = Counter(m[0][1] for m in contests)
    if wins:
        heads.append([B("Practical winners"), Inline(f" (lowest MSE, in the {len(contests)} cell and target pairs "
                                                     f"with two practical estimators or more): "),
                      Inline("; ".join(f"{e} {n}" for e, n in wins.most_common(6))
                             + ("; others " + str(sum(wins.values()) - sum(n for _, n in wins.most_common(6)))
                                if len(wins) > 6 else "") + ".")])
    if biased:
        top = []
        for sid, est, g in biased:
            rel = [(_rel_bias(r), c["cell"]) for c, r in g]
            rel = [((v, ex), cid) for (v, ex), cid in rel if v is not None]
            if rel:
                (v, ex), cid = max(rel, key=lambda t: t[0][0])
                top.append((v, est, cid, ex))
        best: dict = {}
        for t in sorted(top, reverse=True):
            best.setdefault(t[1], t)  # each estimator once, at its largest
        top = sorted(best.values(), reverse=True)
        n_est = len({e for _, e, _ in biased})
        n_suites = len({s for s, _, _ in biased})
        heads.append([B("Biased by design"), Inline(f": {n_est} estimator(s) in {n_suites} suite(s); the largest "
                                                    f"bias / ||g||: "),
                      Inline("; ".join(f"{e} {fmt(v, 2)} ({'exact' if ex else 'measured'}, {cid})"
                                       for v, e, cid, ex in top[:4]) + ".")])
    doc.ul(heads)

    if flagged:
        doc.p(B("BIAS DETECTED"), Inline(f": {len(flagged)} estimator(s) claimed unbiased fail the test of "
                                         f"mean = exact gradient at p < {ALPHA:g}:"))
        doc.table(["cell", "estimator", "p", "test", "bias norm [95% CI]", "relative bias"],
                  [[C(cid), C(r["estimator"]), fmt_p(_p(r)), _p_and_test(r)[1],
                    fmt_ci(r.get("bias_norm"), r.get("bias_norm_lo"), r.get("bias_norm_hi")),
                    fmt(r.get("rel_bias"))] for cid, r in flagged], {2, 4, 5}, key={2})

    doc.h(3, "Biased by design: how biased")
    if biased:
        doc.p(Inline("Every estimator claimed biased, whatever else it reads, per suite: the bias relative to "
                     "||g|| (from the exact mean where it is known in closed form, else measured where the test "
                     "resolves it; a measured norm the test cannot tell from noise is not a bias), the exact and "
                     "the measured bias norm ||mean - g|| (a range over the suite's cells), and the verdicts at "
                     f"p < {ALPHA:g}: 'biased (expected)' where K trials resolve the bias, 'bias not resolved' "
                     "where they cannot see it."))
        brows = []
        for sid, est, g in biased:
            verdicts = Counter(verdict(r.get("unbiased"), _p(r)).text for _, r in g)
            rel = [_rel_bias(r) for _, r in g]
            exact_rel = any(ex for _, ex in rel)
            if len(g) == 1:
                r = g[0][1]
                meas = fmt_ci(r.get("bias_norm"), r.get("bias_norm_lo"), r.get("bias_norm_hi"))
            else:
                meas = _range([r.get("bias_norm") for _, r in g])
            brows.append([C(est), "; ".join(f"{v} ({n} of {len(g)})" if len(g) > 1 else v
                                            for v, n in verdicts.most_common()),
                          (_range([v for v, _ in rel]) + (" (exact)" if exact_rel else "")
                           if any(v is not None for v, _ in rel) else "not resolved"),
                          _range([r.get("exact_bias_norm") for _, r in g]), meas, C(sid), _shown_class(g[0][1])])
        doc.table(["estimator", "verdict", "bias / ||g||", "exact bias norm", "measured bias norm",
                   "suite", "class"], brows, {2, 3, 4}, key={1})
    else:
        doc.p(Inline("No estimator of this run is biased by design."))

    any_cost = any(_cost_key(c["rows"]) for c in cells)
    doc.h(3, "Winners per cell, class and target")
    doc.p(Inline("Lowest MSE per class, ranked only among estimators of the same target gradient (a cell whose "
                 "estimators estimate different gradients, such as entropy bonuses with different beta or the "
                 "natural gradient, has a row per target). Practical: unbiased and computable from sampled "
                 "episodes alone; biased: biased by design, whatever it reads; oracle: unbiased but reads an "
                 "exact quantity (V, Q, A or b*) no agent has, a reference, not a contender."
                 + (" Cost: the practical estimator with the lowest MSE x its own seconds (its kernel alone on "
                    "the cell's shape)." if any_cost else "")))

    def _win(m):
        if not m:
            return "-"
        out = [C(m[0][1]), Inline(f" ({fmt(m[0][0])})")]
        return out + ([Inline("; runner-up "), C(m[1][1]), Inline(f" ({fmt(m[1][0])})")] if len(m) > 1 else [])

    srows = []
    for c, g, w in winners:
        where = [C(c["cell"])]
        if g is not None:
            where += [Inline(" target of "), C(g[0]["estimator"]),
                      Inline(f" (||g|| {fmt(g[0].get('exact_grad_norm'))})")]
        line = [where, _win(w["practical"]["mse"]), _win(w["biased"]["mse"][:1]), _win(w["oracle"]["mse"][:1])]
        if any_cost:
            line.append(_win(w["practical"]["cost"][:1]))
        srows.append(line)
    doc.table(["cell (and target)", "practical", "biased", "oracle (reference)"]
              + (["practical: MSE x own seconds"] if any_cost else []), srows)

    with_exact = [r for c in cells for r in c["rows"] if _finite(r.get("exact_variance"))
                  and _finite(r.get("variance_lo")) and _finite(r.get("variance_hi"))]
    if with_exact:
        n_out = sum(_outside(r, "variance") for r in with_exact)
        doc.p(Inline(f"Exact variances against the measured 95% intervals: {n_out} of {len(with_exact)} "
                     f"({100.0 * n_out / len(with_exact):.1f}%) lie outside their interval (about 5% would "
                     f"by chance; estimators of a cell share its episodes, so misses come in groups). Each "
                     f"is marked '{OUTSIDE}' in its cell's table."))
    return fig_slot


def _notes(doc: Doc) -> None:
    doc.h(2, "How to read this report", "notes")
    doc.ul([f"Verdicts test H0: mean of the K trial estimates = exact gradient at level {ALPHA:g}, with the p "
            f"shown and the test named beside it: the larger of the normal-theory p (Hotelling T2, or Holm-"
            f"corrected t-tests when K is small against d) and a bootstrap max-t p (B = {_B()} resamples), "
            f"so both must reject; when no bootstrap resample reaches the observed statistic (p < 1/(B+1)) the "
            f"normal-theory p is shown and used. 'BIAS DETECTED': claimed unbiased and "
            f"p < {ALPHA:g}; 'biased (expected)': claimed biased and detected; 'bias not resolved': claimed "
            f"biased but not detectable with these K trials. The paired tables' 'p (means agree)' follows the "
            f"same policy.",
            f"Intervals are 95% confidence intervals; verdicts are tests at {ALPHA:g}. A bias-norm interval "
            f"that excludes 0 beside 'consistent' is not a contradiction: about one unbiased estimator in "
            f"twenty does so by chance, and the cell's table says where.",
            "The measured bias norm ||mean - g|| of an unbiased estimator is not zero but noise: its square "
            "averages tr Var / K. The bias^2 bars draw that noise floor; a bar that does not clearly pass it "
            "shows no bias. The exact bias norm is 0 for every catalogue estimator claimed unbiased.",
            "An estimator biased by design is ranked and listed as biased even when it also reads an exact "
            "critic (class 'biased; reads oracle'). Estimators are ranked and paired only against others "
            "with the same target gradient.",
            "Bold MSE: the lowest of its class (practical, biased, oracle) and target in the cell; bold MSE x "
            "own seconds: the lowest work-normalised error of its class.",
            "Wall time of a cell excludes the kernels' compilation on first use, which is shown beside it."])


def _run_details(doc: Doc, meta: dict, cells: list[dict], run_dir: str) -> None:
    env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    quick = meta.get("quick")
    machine = ", ".join(str(x) for x in (env.get("system"), env.get("machine"), env.get("processor")) if x)
    if env.get("cpu_count"):
        machine += f"; {env['cpu_count']} CPUs"
    if env.get("numba_threads"):
        machine += f", {env['numba_threads']} numba threads"
    versions = ", ".join(f"{k} {env[k]}" for k in ("pgbench", "python", "numpy", "numba", "scipy", "pandas")
                         if env.get(k))
    compile_s = sum(float(c["compile_seconds"]) for c in cells if _finite(c.get("compile_seconds")))
    meta_rows = [["started", str(meta.get("started") or "-")], ["cells ended", str(meta.get("ended") or "-")],
                 # "finishing": every cell is done and this report is what the run writes last
                 ["status", B(meta.get("status")) if meta.get("status") not in ("complete", "finishing") else "complete"],
                 ["mode", "quick (CI subset)" if quick else ("full" if quick is not None else "-")],
                 ["seed", str(meta.get("seed", "-"))], ["git commit", C(meta.get("git_commit") or "unknown")],
                 ["sampler fingerprint", C((meta.get("provenance") or {}).get("sampler") or "not recorded")],
                 ["machine", machine or "-"], ["versions", versions or "-"],
                 ["source", str(meta.get("source") or "-")],
                 ["suites", ", ".join(meta.get("suites") or []) or "-"],
                 ["cells finished", str(len(cells))]]
    if compile_s > 0:
        meta_rows.append(["kernel compilation in cells", f"{fmt(compile_s)} s (first use; cached afterwards)"])
    # written once the figures are drawn: the time the report is written, not the end of the cells
    meta_rows.append(["report written", time.strftime("%Y-%m-%dT%H:%M:%S%z") + f" on {platform.node() or '?'}"])
    doc.h(2, "Run details", "run")
    doc.table(["field", "value"], meta_rows)


def build_report(run_dir, progress=None) -> tuple[Doc, list[str], list[str]]:
    """The report of a run directory as a :class:`Doc`; writes the figure PNGs on the way.
    Returns ``(doc, figure paths relative to run_dir, problems)``. ``progress``: a callable
    given one line per suite as its tables and figures are made (e.g. to print on stderr).

    Order: what was run and the conclusions (failures, winners per class and target, what is
    biased and by how much), the :data:`EXTRA_SECTIONS`, the table of contents (folded in
    HTML), the suites' tables and figures, how to read the report, and the run's details."""
    meta, cells = load_run(run_dir)
    learning, cells = [c for c in cells if c.get("train")], [c for c in cells if not c.get("train")]
    order = {s: i for i, s in enumerate(meta.get("suites") or [])}
    cells.sort(key=lambda c: (order.get(c["suite"], len(order)), c["suite"], c["N"]))  # N numerically
    run_dir = os.fspath(run_dir)
    doc = Doc()
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    doc.h(1, f"pgbench report: {name}")
    _what_was_run(doc, meta, cells)
    fig_slot = _conclusions(doc, meta, cells, learning)
    for section in EXTRA_SECTIONS:
        section(doc, meta, cells)
    doc.toc()

    written, problems = [], []
    renderer = _Renderer()
    try:
        _suites_and_figures(doc, renderer, cells, meta, progress)
        from pgbench.reports.llm import llm_section; llm_section(doc, renderer, cells)  # noqa: E702
        _resolve_figures(doc, run_dir, written, problems)
    finally:
        renderer.close()
    if problems:
        doc.blocks[fig_slot] = ("p", (B("Figures missing:"), Inline(f" {len(problems)} figure(s) could not be "
                                                                     "drawn: " + "; ".join(problems))))
    else:
        del doc.blocks[fig_slot]
    from pgbench.reports.dynamics import section as dynamics_section
    dynamics_section(doc, learning, run_dir)
    _notes(doc)
    _run_details(doc, meta, cells, run_dir)
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


__all__ = ["write_report", "build_report", "EXTRA_SECTIONS", "load_run", "results_frame", "verdict", "ALPHA", "fmt", "fmt_ci",
           "fmt_p", "render_markdown", "render_html"]

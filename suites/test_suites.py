"""One test per suite cell (``baselines/garnet-20/N=16``...): measure the cell and check the
measurement can be trusted.

``pytest suites/`` runs all cells, ``pytest suites/ --pgbench-quick`` the CI subset;
``--pgbench-trials`` overrides the trials. Options and fixtures come from pgbench's pytest plugin
(``pgbench.pytest_plugin``, a ``pytest11`` entry point). Useful extras::

    pytest suites/ --pgbench-quick --benchmark-json bench.json --pgbench-out results/run-ci
    pytest suites/ -k "baselines"          # one family
    pytest suites/test_throughput.py       # the kernel's ns/step only

(No conftest.py here: tests/ imports its own conftest as a module, and two would collide.)
"""
from __future__ import annotations

import math

import pytest

from pgbench.suites.registry import SUITES

# Every estimator that claims to be unbiased is tested for H0: E g = grad J in every cell, so one
# full run makes ~150 such tests (~40 in the quick subset). A cell fails when the verdict's
# p-value p_robust (pgbench.stats.metrics.verdict_p, the one reports show) is at most 1e-6 (a
# Bonferroni correction at a family-wise rate of 1.5e-4 per full run). Below the bootstrap's floor
# 1/2000 that p is the normal-theory one, reached only when the bootstrap max-t rejects at its
# floor too: the normal-theory test alone over-rejects on sparse-reward problems (skewed trial
# estimates). A failure means a real bias, not bad luck. The terminal summary flags p_robust < 1e-3.
P_MIN = 1e-6

# Where a cell carries the exact variance and MSE (the moment DP of pgbench.exact.dp, or
# enumeration), the measured ones must lie within Z_EXACT standard errors of them: ~300 such
# comparisons per full run, so 6 standard errors is a Bonferroni bound at a family-wise 1e-6 under
# normality (a failure means the sampler, the estimator code or the exact moments are wrong).
Z_EXACT = 6.0
# The z-score of a measured variance is only as good as its standard error, which comes from the
# sample's own fourth moment. Heavy-tailed trial estimates (rare large returns: chain, importance
# weights) hide their tail from K trials: the sample variance then lies below the exact one and
# its standard error is too small by the same cause, so the z-score says nothing. Such samples
# announce themselves by a relative standard error far above the light-tailed sqrt(2/K)
# (chi-square with one degree of freedom, a light-tailed worst case); past HEAVY_TAIL times that,
# the comparison is not asserted (the record and the report keep both values side by side).
HEAVY_TAIL = 2.0

FINITE = ("bias_norm", "bias_norm_se", "variance", "variance_se", "mse", "mse_se", "exact_grad_norm", "p_value")


def pytest_generate_tests(metafunc):
    if "suite_cell" in metafunc.fixturenames:
        quick = metafunc.config.getoption("pgbench_quick")
        cells = [(s.id, N) for s in SUITES.values() for N in s.cells(quick)]
        metafunc.parametrize("suite_cell", cells, ids=[f"{sid}/N={N}" for sid, N in cells])


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def test_cell(pgbench_cell, suite_cell):
    suite_id, N = suite_cell
    rec = pgbench_cell(suite_id, N)
    if rec.get("train"):  # a learning-dynamics cell: runs of training, not trials of one estimate
        _check_learning(rec)
        return
    rows = rec["rows"]
    assert rows, f"{rec['cell']}: no estimator measured"
    problems = []
    for r in rows:
        bad = [k for k in FINITE if not _finite(r.get(k))]
        if bad:
            problems.append(f"{r['estimator']}: non-finite {', '.join(bad)}")
        if r["mse"] is not None and r["mse"] < 0 or r["variance"] is not None and r["variance"] < 0:
            problems.append(f"{r['estimator']}: negative variance/MSE")
        if r["unbiased"] and _finite(r.get("p_robust")) and r["p_robust"] <= P_MIN:
            problems.append(f"{r['estimator']} claims to be unbiased but p = {r['p_robust']:.3g} <= {P_MIN:g} "
                            f"({r['p_test']}; |bias| = {r['bias_norm']:.3g} ± {r['bias_norm_se']:.2g})")
        for col in ("variance", "mse"):
            ex, v, se = r.get(f"exact_{col}"), r.get(col), r.get(f"{col}_se")
            heavy = _finite(v) and _finite(se) and v > 0 and se / v > HEAVY_TAIL * (2.0 / rec["K"]) ** 0.5
            if _finite(ex) and _finite(v) and _finite(se) and abs(v - ex) > Z_EXACT * se and not heavy:
                problems.append(f"{r['estimator']}: measured {col} {v:.6g} is {abs(v - ex) / se:.1f} standard errors "
                                f"from the exact {ex:.6g}")
    assert not problems, f"{rec['cell']} (K={rec['K']}, seed={rec['seed']}):\n  " + "\n  ".join(problems)


def _check_learning(rec):
    """Every estimator of a learning cell ran: its final exact J lies between J at the start's worst
    and J*, and P(stuck) lies inside its own Wilson interval, itself inside [0, 1]."""
    summary = rec["train"]["summary"]
    assert summary, f"{rec['cell']}: no estimator trained"
    problems = []
    for r in summary:
        J = r["J_final_mean"]
        if not (_finite(J) and J <= r["J_star"] + 1e-9):
            problems.append(f"{r['estimator']}: final mean J {J} is not finite or above J* = {r['J_star']}")
        if r.get("stuck_below") is not None:
            lo, p, hi = r["p_stuck_lo"], r["p_stuck"], r["p_stuck_hi"]
            if not 0.0 <= lo <= p <= hi <= 1.0:
                problems.append(f"{r['estimator']}: P(stuck) {p} outside its interval [{lo}, {hi}]")
    assert not problems, f"{rec['cell']}:\n  " + "\n  ".join(problems)

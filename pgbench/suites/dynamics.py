"""Learning-dynamics suites: one cell is R runs of every estimator (:func:`pgbench.dynamics.train`).

A cell record keeps the measure suites' keys (``rows`` and ``paired`` are empty, so the result
tables and comparisons of measurement cells are untouched) and adds ``train``: the summary per
estimator, the curves along t (at most :data:`CURVE_POINTS` recorded steps) and, for a
three-action bandit, the policy paths of the first :data:`SIMPLEX_RUNS` runs.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

CURVE_POINTS = 200
SIMPLEX_RUNS = 20


def run_train_record(suite, N: int, quick: bool, seed: int, provenance: dict) -> dict:
    from pgbench.dynamics import train
    spec = suite.train
    steps = spec.quick_steps if quick and spec.quick_steps else spec.steps
    t0 = time.time()
    res = train(suite.problem, list(suite.estimators), optimizer=spec.optimizer, lr=spec.lr, steps=steps,
                runs=suite.n_trials(quick), batch=N, seed=seed, stuck_below=spec.stuck_below,
                nsr_points=spec.nsr_points, keep_paths=100)
    n_rec = res.t.size
    keep = np.unique(np.round(np.linspace(0, n_rec - 1, min(CURVE_POINTS, n_rec))).astype(int))
    on_grid = np.isin(np.arange(n_rec), keep)
    parts = []
    for _, d in res.curves.groupby("estimator", sort=False):
        d = d.reset_index(drop=True)
        parts.append(d[on_grid | np.isfinite(d["exact_nsr"].to_numpy())])  # and every point with an exact NSR
    curves = pd.concat(parts, ignore_index=True)
    train_rec = {"config": res.config, "J_star": res.J_star, "summary": res.summary.to_dict(orient="records"),
                 "curves": curves.to_dict(orient="list"),
                 "estimators": res.estimators, "seconds": res.seconds}
    S, A = res.paths.shape[3:] if res.paths.ndim == 5 else (0, 0)
    if S == 1 and A == 3:
        train_rec["simplex"] = {"t": res.t[keep].tolist(),
                                "pi": res.paths[:, :SIMPLEX_RUNS, keep, 0, :].tolist()}
    return {"suite": suite.id, "cell": f"{suite.id}/N={N}", "N": N, "K": suite.n_trials(quick), "seed": seed,
            "quick": quick, "tags": list(suite.tags), "problem": res.problem, "figures": [], "rows": [],
            "paired": [], "train": train_rec, "wall_seconds": time.time() - t0, "provenance": provenance}

"""Measure estimators on one cell (problem, theta, batch size N): SPEC section 4.

``measure(problem, estimators, batch=N, trials=K, seed=S)`` runs K independent trials of
batch size N for every estimator on common random numbers and returns a tidy DataFrame, one
row per estimator, with bias, variance, MSE (and their standard errors), cosine, the
unbiasedness p-value and cost. Paired comparisons between estimators (same episodes) are in
``df.attrs["paired"]``; the W(tau)-proxy diagnostics in ``df.attrs["proxy"]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import parse
from pgbench.measure import metrics
from pgbench.problems.registry import make

BOOTSTRAP = 1999  # resamples of the bootstrap max-t test (p resolution 1/2000)

RESULT_COLUMNS = ["problem", "estimator", "unbiased", "N", "K", "seed", "d", "exact_grad_norm", "mean", "bias_norm",
                  "bias_norm_se", "bias_norm_lo", "bias_norm_hi", "rel_bias", "variance", "variance_se",
                  "variance_lo", "variance_hi", "mse", "mse_se", "mse_lo", "mse_hi", "cosine", "cosine_se", "p_value", "p_bootstrap", "p_robust",
                  "test", "unobserved", "seconds", "episodes", "episodes_per_second", "mse_x_seconds", "truncated_mass",
                  "exact_variance", "exact_mse", "exact_bias_norm"]

EXACT_LIMIT = 20_000
"""measure() adds exact_variance / exact_mse (trajectory enumeration, :mod:`pgbench.exact.moments`)
when at most this many trajectories (or batches, for in-batch estimators) are to be listed."""


@dataclass
class Cell:
    """Raw output of one cell: the K estimates of every estimator and what they estimate."""

    problem: object
    specs: list
    estimates: np.ndarray  # (K, n_est, d)
    targets: np.ndarray  # (n_est, d)
    N: int
    K: int
    seed: int
    seconds: float
    episodes: int
    theta_shape: tuple
    extras: dict = field(default_factory=dict)


def run_cell(problem, estimators, batch: int, trials: int, seed: int = 0, theta=None, proxy: bool = False,
             cell=None, backend: str = "cpu", exact: bool = True, policy=None) -> Cell:
    """Sample one cell (no statistics): the building block of :func:`measure` and the suites.

    ``exact``: also compute the exact variance and MSE by enumeration where that is cheap
    (at most :data:`EXACT_LIMIT` trajectories or batches); ``extras["exact_moments"]``."""
    prob = make(problem) if isinstance(problem, str) else problem
    if policy is not None:  # another policy on the problem's MDP (pgbench.policies.LogitsPolicy)
        if prob.kind != "mdp":
            raise PGBenchError("policy= applies to MDP problems only")
        prob = prob.with_policy(policy, theta)
    if isinstance(estimators, str):
        estimators = [estimators]
    specs = [parse(e, prob.kind) for e in estimators]
    if not specs:
        raise PGBenchError("no estimator given")
    _check_int("batch size N", batch, 1)
    _check_int("trials K", trials, 2)
    from pgbench.measure.backend import resolve_backend
    requested = backend
    backend = resolve_backend(backend) if prob.kind == "mdp" or backend == "cuda" else "cpu"
    if prob.kind == "mdp":
        user = [s for s in specs if getattr(s.info, "code", 0) == -2]
        if user and backend != "cpu":
            raise PGBenchError("user-defined estimators run on the CPU backend only")
        from pgbench.measure.engine import sample_mdp
        res = sample_mdp(prob, specs, batch, trials, seed=seed, cell=cell, theta=theta, proxy=proxy,
                         backend=backend)
        th_shape = prob.resolve_theta(theta).shape
        extras = dict(res.extras)
        if prob.mdp.horizon is None:
            from pgbench.exact import exact as exact_solve  # (``exact`` is this function's flag)
            gt = exact_solve(prob, theta)
            extras["truncated_mass"] = gt.truncated_mass
            extras["truncated_J"] = gt.truncated_J
        if exact:
            extras["exact_moments"] = _exact_columns(prob, res.specs, batch, theta, extras)
            from pgbench.measure.batch import exact_user_columns
            exact_user_columns(prob, res.specs, batch, theta, extras)
        return Cell(prob, res.specs, res.estimates, res.targets, batch, trials, seed, res.seconds, res.episodes,
                    th_shape, extras)
    # stochastic objectives
    if requested == "cuda":
        raise PGBenchError("stochastic objectives run on the CPU backend only (use --backend cpu or auto)")
    from pgbench.kernels.objectives import sample_objective
    from pgbench.kernels.rng import cell_key
    import time
    th = prob.resolve_theta(theta)
    for s in specs:
        if prob.kind not in s.info.target.split("/"):
            raise PGBenchError(f"estimator {s.name} does not apply to a {prob.kind} objective")
    if theta is not None:
        from dataclasses import replace
        prob = replace(prob, theta=th)
    cell = cell_key(prob.name, th, batch) if cell is None else cell
    sample_objective(prob, [s.name for s in specs], [s.p for s in specs], 2, 1, seed, cell)  # compile untimed
    t0 = time.perf_counter()
    est = sample_objective(prob, [s.name for s in specs], [s.p for s in specs], batch, trials, seed, cell)
    secs = time.perf_counter() - t0
    targets = np.tile(prob.grad(th).reshape(1, -1), (len(specs), 1))
    return Cell(prob, specs, est.reshape(trials, len(specs), -1), targets, batch, trials, seed, secs,
                batch * trials, th.shape)


def _exact_columns(prob, specs, N: int, theta, extras: dict) -> dict:
    """``{label: (exact variance, exact mse)}`` for the estimators whose moments are cheap to enumerate."""
    from pgbench.errors import PGBenchError
    from pgbench.exact import moments
    ok = [s for s in specs if moments.supports(s) and not (N < 2 and s.name in ("rloo", "w_baseline_loo",
                                                                                     "time_baseline_loo"))]
    if not ok:
        return {}
    n = moments.count_trajectories(prob, stop_above=EXACT_LIMIT)
    if n > EXACT_LIMIT:
        return {}
    if N > 1 and moments.count_batches(n, N) > EXACT_LIMIT:
        ok = [s for s in ok if not s.in_batch]
    if not ok:
        return {}
    try:
        em = moments.exact_moments(prob, ok, batch=N, theta=theta, limit=EXACT_LIMIT,
                                   opt_b=extras.get("optimal_const_baseline_b"))
    except PGBenchError:
        return {}
    return {lab: (float(v), float(m)) for lab, v, m in zip(em.labels, em.variance, em.mse)}


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise PGBenchError(f"{name} must be an integer >= {lo}; got {v!r}")


def summarize_cell(cell: Cell) -> pd.DataFrame:
    """Tidy metrics of a cell, one row per estimator (see :data:`RESULT_COLUMNS`)."""
    rows = []
    for j, sp in enumerate(cell.specs):
        m = metrics.summarize(cell.estimates[:, j, :], cell.targets[j], bootstrap=BOOTSTRAP)
        c = metrics.cost(cell.seconds, cell.episodes, m["mse"])
        rows.append({
            "problem": cell.problem.name, "estimator": sp.label, "unbiased": bool(sp.unbiased), "N": cell.N,
            "K": cell.K, "seed": cell.seed, "d": cell.estimates.shape[2],
            "exact_grad_norm": float(np.linalg.norm(cell.targets[j])),
            "mean": np.asarray(m["mean"]).reshape(cell.theta_shape).tolist(),
            "bias_norm": m["bias_norm"], "bias_norm_se": m["bias_norm_se"],
            "bias_norm_lo": m["bias_norm_ci"][0], "bias_norm_hi": m["bias_norm_ci"][1], "rel_bias": m["rel_bias"],
            "variance": m["variance"], "variance_se": m["variance_se"], "variance_lo": m["variance_ci"][0],
            "variance_hi": m["variance_ci"][1], "mse": m["mse"], "mse_se": m["mse_se"], "mse_lo": m["mse_ci"][0],
            "mse_hi": m["mse_ci"][1], "cosine": m["cosine"], "cosine_se": m["cosine_se"], "p_value": m["p_value"], "p_bootstrap": m["p_bootstrap"], "p_robust": m["p_robust"],
            "test": m["test"], "unobserved": m["unobserved"], "seconds": c["seconds"], "episodes": cell.episodes,
            "episodes_per_second": c["episodes_per_second"], "mse_x_seconds": c["work_normalised_mse"],
            "truncated_mass": cell.extras.get("truncated_mass", np.nan),
            "exact_variance": cell.extras.get("exact_moments", {}).get(sp.label, (np.nan, np.nan))[0],
            "exact_mse": cell.extras.get("exact_moments", {}).get(sp.label, (np.nan, np.nan))[1],
            "exact_bias_norm": _exact_bias_norm(cell, j, sp),
        })
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df.attrs["paired"] = paired_table(cell)
    if "proxy" in cell.extras:
        df.attrs["proxy"] = proxy_summary(cell)
    if "optimal_const_baseline_b" in cell.extras:
        df.attrs["optimal_const_baseline_b"] = cell.extras["optimal_const_baseline_b"]
        df.attrs["optimal_const_baseline_source"] = cell.extras.get("optimal_const_baseline_source")
    return df


def _exact_bias_norm(cell: Cell, j: int, sp) -> float:
    """``||E[g_hat] - target||`` where the estimator's exact mean is known in closed form
    (``extras["exact_mean"]``: ppo_gae, gpomdp_baseline), NaN elsewhere."""
    m = cell.extras.get("exact_mean", {}).get(sp.label)
    return float(np.linalg.norm(np.asarray(m) - cell.targets[j])) if m is not None else float("nan")


def paired_table(cell: Cell) -> pd.DataFrame:
    """Every estimator against the first one, on the same episodes: MSE difference and variance
    ratio with their own intervals, and a test that their means agree."""
    rows = []
    if len(cell.specs) < 2:
        return pd.DataFrame(rows)
    ref = cell.specs[0]
    same_target = [np.allclose(cell.targets[j], cell.targets[0]) for j in range(len(cell.specs))]
    for j in range(1, len(cell.specs)):
        if not same_target[j]:
            continue
        p = metrics.paired(cell.estimates[:, j, :], cell.estimates[:, 0, :], cell.targets[0])
        rows.append({"estimator": cell.specs[j].label, "reference": ref.label, **{k: v for k, v in p.items()
                                                                               if np.isscalar(v) or isinstance(v, tuple)}})
    return pd.DataFrame(rows)


def proxy_summary(cell: Cell) -> dict:
    """W(tau) against the exact ||z||^2: their correlation, and the variance ratio of w_baseline
    to rloo predicted by ``E[A_w^2 W] / E[A_rloo^2 W]`` beside the measured one (if both ran)."""
    from pgbench.kernels import mdp as K_
    P = cell.extras["proxy"].sum(axis=0)
    n = P[K_.PX_N]
    mw, mz = P[K_.PX_W] / n, P[K_.PX_Z] / n
    cov = P[K_.PX_WZ] / n - mw * mz
    vw, vz = P[K_.PX_WW] / n - mw * mw, P[K_.PX_ZZ] / n - mz * mz
    corr = float(cov / np.sqrt(vw * vz)) if vw > 0 and vz > 0 else float("nan")
    out = {"corr_W_znorm2": corr, "mean_W": float(mw), "mean_znorm2": float(mz),
           "predicted_var_ratio_w_vs_rloo": float(P[K_.PX_AW] / P[K_.PX_ALOO]) if P[K_.PX_ALOO] > 0 else float("nan")}
    labels = [s.label for s in cell.specs]
    if "w_baseline" in labels and "rloo" in labels:
        jw, jr = labels.index("w_baseline"), labels.index("rloo")
        vw_ = np.sum(np.var(cell.estimates[:, jw, :], axis=0, ddof=1))
        vr_ = np.sum(np.var(cell.estimates[:, jr, :], axis=0, ddof=1))
        out["measured_var_ratio_w_vs_rloo"] = float(vw_ / vr_) if vr_ > 0 else float("nan")
    return out


def measure(problem, estimators, batch: int, trials: int, seed: int = 0, theta=None, proxy: bool = False,
            backend: str = "cpu", exact: bool = True, policy=None) -> pd.DataFrame:
    """Measure estimators on one cell; a tidy DataFrame, one row per estimator.

    ``exact_variance`` / ``exact_mse`` are the exact values by trajectory enumeration where it is
    cheap (:data:`EXACT_LIMIT`), NaN otherwise (or with ``exact=False``). ``policy``: sample
    from another policy on the problem's MDP (e.g. a :class:`pgbench.policies.LogitsPolicy`).

    >>> df = measure("three_step_bandit", ["reinforce", "reinforce_rtg"], batch=16, trials=200)  # doctest: +SKIP
    """
    return summarize_cell(run_cell(problem, estimators, batch, trials, seed=seed, theta=theta, proxy=proxy,
                                   backend=backend, exact=exact, policy=policy))

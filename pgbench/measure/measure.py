"""Measure estimators on one cell (problem, theta, batch size N): the contract's :ref:`contract-metrics`.

``measure(problem, estimators, batch=N, trials=K, seed=S)`` runs K independent trials of
batch size N for every estimator on common random numbers and returns a tidy DataFrame, one
row per estimator, with bias, variance, MSE (and their standard errors), cosine, the
unbiasedness p-value and cost. Paired comparisons between estimators (same episodes) are in
``df.attrs["paired"]`` (a list of records: ``pd.DataFrame(df.attrs["paired"])``); the W(tau)-proxy diagnostics in ``df.attrs["proxy"]``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from pgbench import inputs
from pgbench.errors import PGBenchError, PGBenchWarning, ResourceLimitError
from pgbench.estimators.catalogue import parse
from pgbench.stats import metrics
from pgbench.measure.cell import Cell
from pgbench.problems.registry import make

BOOTSTRAP = metrics.BOOTSTRAP  # resamples of the bootstrap max-t test (p resolution 1/2000)

RESULT_COLUMNS = ["problem", "estimator", "class", "unbiased", "N", "K", "seed", "d", "exact_grad_norm", "mean", "bias_norm",
                  "bias_norm_se", "bias_norm_lo", "bias_norm_hi", "rel_bias", "variance", "variance_se",
                  "variance_lo", "variance_hi", "mse", "mse_se", "mse_lo", "mse_hi", "cosine", "cosine_se", "p_value", "p_bootstrap", "p_robust",
                  "p_test", "test", "unobserved", "seconds", "episodes", "episodes_per_second", "mse_x_seconds", "truncated_mass",
                  "exact_variance", "exact_mse", "exact_bias_norm",
                  "G", "exact_scale", "exact_cosine", "exact_note", "nsr", "nsr_lo", "nsr_hi", "exact_nsr"]
"""``nsr`` (with its 95% interval ``nsr_lo``, ``nsr_hi``) is the measured noise-to-signal ratio
tr Var(g_hat) / ||grad J||^2 at the cell's N; ``exact_nsr`` the same from the exact variance."""

EXACT_LIMIT = 20_000
"""measure() adds exact_variance / exact_mse (trajectory enumeration, :mod:`pgbench.exact.moments`)
when at most this many trajectories (or batches, for in-batch estimators) are to be listed."""
EXACT_DP_WORK = 5e8
"""... and by the moment DP (:mod:`pgbench.exact.dp`) for the estimators it covers when their total
:func:`pgbench.exact.dp.dp_work` is at most this (a few seconds)."""


def run_cell(problem, estimators, batch: int, trials: int, seed: int = 0, theta=None, proxy: bool = False,
             cell=None, backend: str = "cpu", exact: bool = True, policy=None, group=None) -> Cell:
    """Sample one cell (no statistics): the building block of :func:`measure` and the suites.

    ``group=G``: grouped sampling, the batch of N = P G episodes in P groups of G sharing a start
    state (the group estimators need it); ``extras["group"]``.

    ``exact``: also compute the exact variance and MSE where that is cheap (the moment DP within
    :data:`EXACT_DP_WORK`, enumeration within :data:`EXACT_LIMIT`); ``extras["exact_moments"]``."""
    prob = make(problem)
    if policy is not None:  # another policy on the problem's MDP (pgbench.policies.LogitsPolicy)
        if prob.kind != "mdp":
            raise PGBenchError("policy= applies to MDP problems only")
        prob = prob.with_policy(policy, theta)
    if isinstance(estimators, str):
        estimators = [estimators]
    if not isinstance(estimators, (list, tuple)):
        raise PGBenchError(f"estimators must be an estimator id or a list of them; got {type(estimators).__name__}")
    specs = [parse(e, prob.kind) for e in estimators]
    if not specs:
        raise PGBenchError("no estimator given")
    _check_int("batch size N", batch, 1)
    _check_int("trials K", trials, 2)
    seed = inputs.seed(seed)
    _require_cell_resources(prob, len(specs), batch, trials, group)
    from pgbench.measure.backend import resolve_backend
    requested = backend
    backend = resolve_backend(backend) if prob.kind == "mdp" or backend == "cuda" else "cpu"
    if prob.kind == "mdp":
        user = [s for s in specs if getattr(s.info, "code", 0) == -2]
        if user and backend != "cpu":
            raise PGBenchError("user-defined estimators run on the CPU backend only")
        from pgbench.measure.engine import sample_mdp
        res = sample_mdp(prob, specs, batch, trials, seed=seed, cell=cell, theta=theta, proxy=proxy,
                         backend=backend, group=group)
        th_shape = prob.resolve_theta(theta).shape
        extras = dict(res.extras)
        if group is not None:
            extras["group"] = int(group)
        if prob.mdp.horizon is None:
            from pgbench.exact import exact as exact_solve  # (``exact`` is this function's flag)
            gt = exact_solve(prob, theta)
            extras["truncated_mass"] = gt.truncated_mass
            extras["truncated_J"] = gt.truncated_J
        if exact:
            extras["exact_moments"] = _exact_columns(prob, res.specs, batch, theta, extras)
            if group is None or group == 1:  # the enumeration lists independent episodes
                from pgbench.measure.batch_runner import exact_user_columns
                exact_user_columns(prob, res.specs, batch, theta, extras)
            _group_exact_columns(prob, res, batch, theta, group, extras)
        return Cell(prob, res.specs, res.estimates, res.targets, batch, trials, seed, res.seconds, res.episodes,
                    th_shape, extras)
    if prob.kind == "lqg":
        if requested == "cuda":
            raise PGBenchError("lqg problems run on the CPU backend only (use --backend cpu or auto)")
        from pgbench.measure.lqg import run_lqg_cell
        return run_lqg_cell(prob, specs, batch, trials, seed, theta, cell, exact)
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


def _group_exact_columns(prob, res, N: int, theta, group, extras: dict) -> None:
    """Exact mean (and variance where enumerable) of the group estimators of a cell, by
    :func:`pgbench.exact.groups.group_moments`; the reason where they are Monte-Carlo only."""
    from pgbench.estimators.groups import is_group
    from pgbench.exact.groups import sequences, SEQUENCE_LIMIT
    seqs = None
    for j, sp in enumerate(res.specs):
        if not is_group(sp):
            continue
        from pgbench.exact.groups import group_moments
        if seqs is None:
            try:
                seqs = sequences(prob, theta, SEQUENCE_LIMIT)
            except PGBenchError as exc:
                seqs = str(exc).split(": ", 1)[-1]
        if isinstance(seqs, str):
            extras.setdefault("exact_note", {})[sp.label] = "MC only: " + seqs
            continue
        gm = group_moments(prob, theta, sp.p, group, N // group, seqs)
        if gm.seq_weight is not None and gm.mean is not None:
            from pgbench.exact.groups import length_profile
            extras.setdefault("length_profile", {})[sp.label] = length_profile(seqs, prob.mdp.rho0, gm.seq_weight)
        if gm.mean is not None:
            extras.setdefault("exact_mean", {})[sp.label] = gm.mean
            if gm.variance is not None:
                bias2 = float(np.sum((gm.mean - res.targets[j]) ** 2))
                extras.setdefault("exact_moments", {})[sp.label] = (gm.variance, gm.variance + bias2)
        if gm.reason:
            extras.setdefault("exact_note", {})[sp.label] = gm.reason


def _exact_columns(prob, specs, N: int, theta, extras: dict) -> dict:
    """``{label: (exact variance, exact mse)}``: by the moment DP where it applies and fits
    :data:`EXACT_DP_WORK`, else by enumeration where that is cheap."""
    from pgbench.errors import PGBenchError
    from pgbench.exact import dp, moments
    ok = [s for s in specs if getattr(s.info, "code", 0) != -4 and moments.supports(s) and not (N < 2 and s.name in ("rloo", "w_baseline_loo",
                                                                                     "time_baseline_loo"))]
    out: dict = {}
    by_dp = [s for s in ok if moments.dp_supports(s, prob, N, theta)]  # (w_baseline_loo at N = 2: rloo)
    if by_dp and len(by_dp) * dp.dp_work(prob) <= EXACT_DP_WORK:
        em = moments.exact_moments(prob, by_dp, batch=N, theta=theta, method="dp",
                                   opt_b=extras.get("optimal_const_baseline_b"))
        out.update({lab: (float(v), float(m)) for lab, v, m in zip(em.labels, em.variance, em.mse)})
        ok = [s for s in ok if s.label not in out]
    ok = [s for s in ok if s.info.code >= 0]  # enumeration runs the built-in kernels (ppo_gae: the DP only)
    if not ok:
        return out
    n = moments.count_trajectories(prob, stop_above=EXACT_LIMIT)
    if n > EXACT_LIMIT:
        return out
    if N > 1 and moments.count_batches(n, N) > EXACT_LIMIT:
        ok = [s for s in ok if not s.in_batch]
    if not ok:
        return out
    try:
        em = moments.exact_moments(prob, ok, batch=N, theta=theta, limit=EXACT_LIMIT, method="enumerate",
                                   opt_b=extras.get("optimal_const_baseline_b"))
    except PGBenchError:
        return out
    out.update({lab: (float(v), float(m)) for lab, v, m in zip(em.labels, em.variance, em.mse)})
    return out


def _require_cell_resources(prob, n_est: int, N: int, K: int, group=None) -> None:
    """Refuse a cell whose arrays exceed the memory limit, and counts the 64-bit episode
    indices cannot hold, before anything is allocated; warn about very long cells."""
    if N * K >= 2 ** 62:
        raise ResourceLimitError(f"N x K = {N} x {K} episodes overflows the 64-bit episode counters; "
                                 "use fewer trials or a smaller batch")
    if prob.kind == "mdp":
        S, A, _ = prob.mdp.next_prob.shape
        d = prob.policy.dim
        cap = prob.mdp.episode_cap
        threads = _threads()
        from pgbench.measure.engine import ITEM_MEMORY_BUDGET, n_chunks_for
        # work items of a block of trials (the engine caps them at ITEM_MEMORY_BUDGET, one trial at least)
        per_trial = n_chunks_for(N) * 8.0 * (n_est + 1) * S * A
        items = 2 * min(K * per_trial, max(ITEM_MEMORY_BUDGET, per_trial))
        # K x estimators accumulators (S, A) and estimates (d), the work items, the per-thread
        # episode buffers and discount powers (cap steps), the sampler's tables
        from pgbench.measure.engine import group_direct
        direct = group is not None and group_direct(prob)  # group estimators give gradients directly
        need = (8.0 * K * (n_est + 1) * ((0 if direct else S * A) + d) + (S * A * d * 8.0 if direct else items) + 8.0 * (cap + 1) * (5 * threads + 3)
                + 8.0 * S * A * prob.mdp.K * 12)
        what = f"a cell of {prob.name} (K={K}, {n_est} estimator(s), S={S}, A={A}, d={d}, episode cap {cap})"
        inputs.require_memory(need, what, "use fewer trials K or estimators per cell")
    else:
        inputs.require_memory(8.0 * K * (n_est + 1) * max(1, int(getattr(prob, "dim", 1) or 1)) * 3,
                              f"a cell of {prob.name} (K={K}, {n_est} estimator(s))", "use fewer trials K")
    if N * K > inputs.EPISODE_WARNING:
        warnings.warn(f"{prob.name}: N x K = {N * K:.3g} episodes in one cell (hours at 10^7 to 10^8 episodes "
                      "a second)", PGBenchWarning, stacklevel=4)


def _threads() -> int:
    try:
        import numba
        return int(numba.config.NUMBA_NUM_THREADS)
    except Exception:  # pragma: no cover - numba is a dependency
        return 1


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
            "problem": cell.problem.name, "estimator": sp.label, "class": sp.estimator_class,
            "unbiased": bool(sp.unbiased), "N": cell.N,
            "K": cell.K, "seed": cell.seed, "d": cell.estimates.shape[2],
            "exact_grad_norm": float(np.linalg.norm(cell.targets[j])),
            "mean": np.asarray(m["mean"]).reshape(cell.theta_shape).tolist(),
            "bias_norm": m["bias_norm"], "bias_norm_se": m["bias_norm_se"],
            "bias_norm_lo": m["bias_norm_ci"][0], "bias_norm_hi": m["bias_norm_ci"][1], "rel_bias": m["rel_bias"],
            "variance": m["variance"], "variance_se": m["variance_se"], "variance_lo": m["variance_ci"][0],
            "variance_hi": m["variance_ci"][1], "mse": m["mse"], "mse_se": m["mse_se"], "mse_lo": m["mse_ci"][0],
            "mse_hi": m["mse_ci"][1], "cosine": m["cosine"], "cosine_se": m["cosine_se"], "p_value": m["p_value"], "p_bootstrap": m["p_bootstrap"], "p_robust": m["p_robust"],
            "p_test": m["p_test"], "test": m["test"], "unobserved": m["unobserved"], "seconds": c["seconds"], "episodes": cell.episodes,
            "episodes_per_second": c["episodes_per_second"], "mse_x_seconds": c["work_normalised_mse"],
            "truncated_mass": cell.extras.get("truncated_mass", np.nan),
            "exact_variance": cell.extras.get("exact_moments", {}).get(sp.label, (np.nan, np.nan))[0],
            "exact_mse": cell.extras.get("exact_moments", {}).get(sp.label, (np.nan, np.nan))[1],
            "exact_bias_norm": _exact_bias_norm(cell, j, sp),
            "G": cell.extras.get("group", np.nan),
            **_exact_direction(cell, j, sp),
            "exact_note": cell.extras.get("exact_note", {}).get(sp.label, ""),
        })
        g2 = float(np.dot(cell.targets[j], cell.targets[j]))
        row = rows[-1]
        for col, src in (("nsr", "variance"), ("nsr_lo", "variance_lo"), ("nsr_hi", "variance_hi"),
                         ("exact_nsr", "exact_variance")):
            row[col] = nsr(row[src], g2)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    # a list of records, not a DataFrame: pandas compares attrs when concatenating frames
    df.attrs["paired"] = paired_table(cell).to_dict(orient="records")
    if "proxy" in cell.extras:
        df.attrs["proxy"] = proxy_summary(cell)
    if "length_profile" in cell.extras:  # group estimators: E[h A | sequence length n]
        df.attrs["length_profile"] = cell.extras["length_profile"]
    if "optimal_const_baseline_b" in cell.extras:
        df.attrs["optimal_const_baseline_b"] = cell.extras["optimal_const_baseline_b"]
        df.attrs["optimal_const_baseline_source"] = cell.extras.get("optimal_const_baseline_source")
    return df


def nsr(variance, grad_norm2: float) -> float:
    """Noise-to-signal ratio ``variance / ||grad J||^2`` (NaN where the gradient is zero or the
    variance unknown)."""
    v = float(variance)
    return v / grad_norm2 if grad_norm2 > 0 and np.isfinite(v) else float("nan")


def _exact_bias_norm(cell: Cell, j: int, sp) -> float:
    """``||E[g_hat] - target||`` where the estimator's exact mean is known in closed form
    (``extras["exact_mean"]``: ppo_gae, gpomdp_baseline), NaN elsewhere."""
    m = cell.extras.get("exact_mean", {}).get(sp.label)
    return float(np.linalg.norm(np.asarray(m) - cell.targets[j])) if m is not None else float("nan")


def _exact_direction(cell: Cell, j: int, sp) -> dict:
    """``exact_scale`` = E[g].grad / ||grad||^2 and ``exact_cosine`` = cos(E[g], grad) where the exact
    mean is known (1 and 1 for an estimator exactly unbiased), NaN elsewhere."""
    m = cell.extras.get("exact_mean", {}).get(sp.label)
    g = cell.targets[j]
    gg = float(g @ g)
    if m is None or gg == 0:
        return {"exact_scale": float("nan"), "exact_cosine": float("nan")}
    m = np.asarray(m, dtype=float).reshape(-1)
    nm = float(np.linalg.norm(m))
    return {"exact_scale": float(m @ g) / gg, "exact_cosine": float(m @ g) / (nm * np.sqrt(gg)) if nm > 0 else 0.0}


def paired_table(cell: Cell) -> pd.DataFrame:
    """Every estimator against the first one, on the same episodes: MSE difference and variance
    ratio with their own intervals, and a test that their means agree (``p_robust``, named by
    ``p_test``: the verdicts' policy, normal theory and bootstrap max-t both rejecting)."""
    rows = []
    if len(cell.specs) < 2:
        return pd.DataFrame(rows)
    ref = cell.specs[0]
    same_target = [np.allclose(cell.targets[j], cell.targets[0]) for j in range(len(cell.specs))]
    for j in range(1, len(cell.specs)):
        if not same_target[j]:
            continue
        p = metrics.paired(cell.estimates[:, j, :], cell.estimates[:, 0, :], cell.targets[0], bootstrap=BOOTSTRAP)
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
            backend: str = "cpu", exact: bool = True, policy=None, group=None) -> pd.DataFrame:
    """Measure estimators on one cell; a tidy DataFrame, one row per estimator.

    ``exact_variance`` / ``exact_mse`` are the exact values (moment DP or trajectory enumeration)
    where they are cheap (:data:`EXACT_DP_WORK`, :data:`EXACT_LIMIT`), NaN otherwise (or with ``exact=False``).
    ``policy``: sample from another policy on the problem's MDP (e.g. a
    :class:`pgbench.policies.LogitsPolicy`). ``group=G``: grouped sampling (N = P G episodes in P
    groups of G with one start state each), for the group estimators (``grpo``, ``dr_grpo``, ...).

    >>> df = measure("three_step_bandit", ["reinforce", "reinforce_rtg"], batch=16, trials=200)  # doctest: +SKIP
    """
    return summarize_cell(run_cell(problem, estimators, batch, trials, seed=seed, theta=theta, proxy=proxy,
                                   backend=backend, exact=exact, policy=policy, group=group))

"""Monte-Carlo gradient estimators for stochastic objectives (the contract's :ref:`contract-objectives`,
:ref:`contract-estimators` and :ref:`contract-randomness`).

``J(theta) = E_{x ~ p(x; theta)} f(x, theta)`` for the two objectives of
:mod:`pgbench.problems.objectives`:

* Gaussian toy (d = 1): ``x = theta + eps``, ``eps ~ N(0, 1)`` drawn by Box-Muller
  (:func:`pgbench.kernels.rng.normal`, two uniforms), ``f = x^2 theta``.
* Categorical (d = K): Gumbel noise ``G_j = -log(-log u_j)``, j = 0..K-1 (K uniforms);
  the hard sample ``x = argmax_j (theta_j + G_j)`` is exactly ``Cat(softmax(theta))``
  (Gumbel-max trick) and the relaxed sample is ``y = softmax((theta + G) / tau)``.

:func:`sample_objective` returns, for K independent trials, each requested estimator's
gradient estimate averaged over a batch of N samples. Every estimator of one call is
computed from the same draws (common random numbers). Sample i of trial k draws from
its own stream ``stream(seed, cell, k, i)``; the samples of a trial are cut into chunks of
:data:`CHUNK` (a constant, so the cut depends only on N), each chunk is summed in sample
order by one thread, and the chunk sums are added in chunk order. Results are therefore
bit-identical whatever the number of threads.

For the categorical objective f depends on x alone, so the score-function and RLOO
estimates are functions of the per-category counts of the hard samples; the kernel
counts (exact integers) and the estimates are formed from the counts afterwards.

Cost (one AMD EPYC Zen 4 core, glibc 2.36): the Gaussian toy takes about 32 ns a sample,
all three estimators together; almost all of it is the Box-Muller normal of
:func:`pgbench.kernels.rng.normal`, and within that glibc's ``cos`` on random arguments
(about 16-20 ns). The stream set-up and two uniforms take about 5 ns.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from numba import njit, prange

from pgbench.errors import PGBenchError
from pgbench.estimators.objectives import OBJECTIVE_ESTIMATORS
from pgbench.kernels.rng import seed_u64, stream, normal, uniform

__all__ = ["OBJECTIVE_ESTIMATORS", "CHUNK", "sample_objective"]

#: Samples per work unit. Part of the result's definition (it fixes the summation order),
#: so changing it changes the last bits of results; never make it depend on the thread count.
CHUNK = 4096

#: u = 0 (probability 2^-53 per draw) would give G = -inf; it is read as half a grid step.
_U_ZERO = 2.0 ** -54

# kernel-side codes
_G_NAIVE, _G_SF, _G_RP = 0, 1, 2
_GAUSS_CODE = {"naive": _G_NAIVE, "score_function": _G_SF, "reparameterization": _G_RP}


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _gauss_partials(theta, seed, cell, N, K, chunk):
    """Per (trial, chunk) sums of the three Gaussian-toy estimates: (K, n_chunks, 3)."""
    nch = (N + chunk - 1) // chunk
    part = np.empty((K, nch, 3))
    for task in prange(K * nch):
        k = task // nch
        c = task - k * nch
        lo = c * chunk
        hi = min(lo + chunk, N)
        tk = np.uint64(k)
        s_nv = 0.0
        s_sf = 0.0
        s_rp = 0.0
        for i in range(lo, hi):
            s0, s1 = stream(seed, cell, tk, np.uint64(i))
            eps, s0, s1 = normal(s0, s1)
            x = theta + eps
            x2 = x * x
            s_nv += x2                           # naive: d(x^2 theta)/dtheta at fixed x
            s_sf += x2 * theta * eps + x2        # f * d log p/dtheta + df/dtheta, score = x - theta = eps
            s_rp += 2.0 * x * theta + x2         # d/dtheta (theta + eps)^2 theta
        part[k, c, 0] = s_nv
        part[k, c, 1] = s_sf
        part[k, c, 2] = s_rp
    return part


@njit(parallel=True, cache=True)
def _cat_partials(theta, target, taus, est_tau, straight, seed, cell, N, K, chunk):
    """Per (trial, chunk) category counts of the hard sample, (K, n_chunks, d) int64, and sums of
    each relaxed estimator e (Gumbel-softmax, or straight-through where ``straight[e]``) at
    temperature ``taus[est_tau[e]]``, (K, n_chunks, n_soft, d). ``taus`` holds distinct values,
    so estimators at one temperature share one relaxed sample y."""
    d = theta.size
    nt = taus.size
    ns = est_tau.size
    inv_taus = 1.0 / taus
    nch = (N + chunk - 1) // chunk
    counts = np.zeros((K, nch, d), np.int64)
    soft = np.zeros((K, nch, ns, d))
    for task in prange(K * nch):
        k = task // nch
        c = task - k * nch
        lo = c * chunk
        hi = min(lo + chunk, N)
        tk = np.uint64(k)
        z = np.empty(d)
        v = np.empty(d)
        y = np.empty((nt, d))
        cnt = np.zeros(d, np.int64)
        acc = np.zeros((ns, d))
        for i in range(lo, hi):
            s0, s1 = stream(seed, cell, tk, np.uint64(i))
            # Gumbel-max: x = argmax_j (theta_j + G_j), G_j = -log(-log u_j), u_j in order j = 0..d-1
            best = 0
            zmax = 0.0
            for j in range(d):
                u, s0, s1 = uniform(s0, s1)
                if u == 0.0:
                    u = _U_ZERO
                zj = theta[j] - np.log(-np.log(u))
                z[j] = zj
                if j == 0 or zj > zmax:
                    zmax = zj
                    best = j
            cnt[best] += 1
            # relaxed samples y = softmax((theta + G) / tau), one per distinct tau
            for t in range(nt):
                inv_tau = inv_taus[t]
                ssum = 0.0
                for j in range(d):
                    w = np.exp((z[j] - zmax) * inv_tau)
                    y[t, j] = w
                    ssum += w
                inv_sum = 1.0 / ssum
                for j in range(d):
                    y[t, j] *= inv_sum
            # backward through y: J v with J = (diag(y) - y y^T) / tau, i.e. y * (v - y.v) / tau,
            # v = df/dy = 2 (y - t) at the relaxed sample (Gumbel-softmax) or 2 (e_x - t) at the
            # hard one (straight-through).
            for e in range(ns):
                t = est_tau[e]
                inv_tau = inv_taus[t]
                if straight[e]:
                    for j in range(d):
                        v[j] = 2.0 * ((1.0 if j == best else 0.0) - target[j])
                else:
                    for j in range(d):
                        v[j] = 2.0 * (y[t, j] - target[j])
                yv = 0.0
                for j in range(d):
                    yv += y[t, j] * v[j]
                for j in range(d):
                    acc[e, j] += y[t, j] * (v[j] - yv) * inv_tau
        for j in range(d):
            counts[k, c, j] = cnt[j]
            for e in range(ns):
                soft[k, c, e, j] = acc[e, j]
    return counts, soft


@njit(cache=True)
def _reduce_chunks(part):
    """(K, n_chunks, m) -> (K, m), adding the chunks in chunk order."""
    K, nch, m = part.shape
    out = np.zeros((K, m))
    for k in range(K):
        for c in range(nch):
            for j in range(m):
                out[k, j] += part[k, c, j]
    return out


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------

def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise PGBenchError(f"{what} must be a positive integer; got {v!r}")
    v = int(v)
    if v < 1:
        raise PGBenchError(f"{what} must be a positive integer; got {v}")
    return v


def _resolve(kind: str, names, params) -> list[tuple[str, dict]]:
    if kind not in OBJECTIVE_ESTIMATORS:
        raise PGBenchError(f"no objective estimators for objective kind {kind!r} "
                           f"(known: {', '.join(OBJECTIVE_ESTIMATORS)})")
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise PGBenchError("no estimator names given")
    if params is None:
        params = [{}] * len(names)
    params = list(params)
    if len(params) != len(names):
        raise PGBenchError(f"got {len(names)} estimator names but {len(params)} parameter dicts")
    table = OBJECTIVE_ESTIMATORS[kind]
    out = []
    for name, p in zip(names, params):
        if name not in table:
            other = [k for k, t in OBJECTIVE_ESTIMATORS.items() if name in t]
            if other:
                raise PGBenchError(f"estimator {name!r} applies to {'/'.join(other)} objectives, "
                                   f"not to a {kind} objective (for {kind}: {', '.join(table)})")
            raise PGBenchError(f"unknown objective estimator {name!r} (for {kind}: {', '.join(table)})")
        p = {} if p is None else dict(p)
        defaults = table[name]["params"]
        for key in p:
            if key not in defaults:
                raise PGBenchError(f"unknown parameter {key!r} for estimator {name} "
                                   f"(known: {', '.join(defaults) or 'none'})")
        full = {**defaults, **p}
        if "tau" in full:
            tau = full["tau"]
            if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(float(tau)) \
                    or float(tau) <= 0.0:
                raise PGBenchError(f"estimator {name}: tau must be a finite number > 0; got {tau!r}")
            full["tau"] = float(tau)
        out.append((name, full))
    return out


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------

def sample_objective(problem, names: list[str], params: list[dict], N: int, K: int, seed: int,
                     cell: int, theta=None) -> np.ndarray:
    """K trials of batch-N gradient estimates for each named estimator: array (K, len(names), d).

    ``problem`` is a :class:`~pgbench.problems.objectives.GaussianToy` or
    :class:`~pgbench.problems.objectives.CategoricalObjective`; the estimates are taken at
    ``theta`` (default ``problem.theta``). ``params[j]`` holds estimator j's parameters
    (``None`` for all defaults). All estimators share the same draws.
    """
    kind = getattr(problem, "kind", None)
    if kind not in OBJECTIVE_ESTIMATORS:
        raise PGBenchError(f"sample_objective takes a stochastic objective (gaussian or categorical); "
                           f"got {type(problem).__name__}")
    specs = _resolve(kind, names, params)
    N = _positive_int(N, "batch size N")
    K = _positive_int(K, "number of trials K")
    th = problem.resolve_theta(theta)
    s = seed_u64(seed)
    try:
        c = np.uint64(int(cell) % (1 << 64))
    except (TypeError, ValueError):
        raise PGBenchError(f"cell must be an integer; got {cell!r}") from None

    if kind == "gaussian":
        sums = _reduce_chunks(_gauss_partials(float(th[0]), s, c, N, K, CHUNK))  # (K, 3)
        out = np.empty((K, len(specs), 1))
        for j, (name, _) in enumerate(specs):
            out[:, j, 0] = sums[:, _GAUSS_CODE[name]] / N
        return out

    # categorical
    if N < 2 and any(name == "rloo" for name, _ in specs):
        raise PGBenchError(f"rloo needs a batch of N >= 2 samples (leave-one-out baseline); got N={N}")
    d = th.size
    target = np.ascontiguousarray(problem.target, dtype=np.float64)
    soft_idx = {}
    taus, est_tau, straight = [], [], []
    for j, (name, p) in enumerate(specs):
        if name in ("gumbel_softmax", "straight_through"):
            soft_idx[j] = len(est_tau)
            if p["tau"] not in taus:
                taus.append(p["tau"])
            est_tau.append(taus.index(p["tau"]))
            straight.append(name == "straight_through")
    counts, soft = _cat_partials(np.ascontiguousarray(th), target, np.array(taus, dtype=np.float64),
                                 np.array(est_tau, dtype=np.int64), np.array(straight, dtype=np.bool_),
                                 s, c, N, K, CHUNK)
    cnt = counts.sum(axis=1).astype(np.float64)          # (K, d) exact integer counts
    nsoft = len(est_tau)
    soft_sum = _reduce_chunks(soft.reshape(K, soft.shape[1], nsoft * d)).reshape(K, nsoft, d)

    p = problem.probs(th)
    fx = problem.f_table()                                # f(x) for each category
    cf = cnt * fx[None, :]                                # sum_i f(x_i) e_{x_i}
    F = cf.sum(axis=1, keepdims=True)                     # sum_i f(x_i)
    out = np.empty((K, len(specs), d))
    for j, (name, _) in enumerate(specs):
        if name == "score_function":
            # (1/N) sum_i f_i (e_{x_i} - p) = (1/N) (sum_x c_x f_x e_x - p sum_x c_x f_x)
            out[:, j, :] = (cf - F * p[None, :]) / N
        elif name == "rloo":
            # b_i = (F - f_i)/(N-1), so f_i - b_i = (N f_i - F)/(N-1), and
            #   (1/N) sum_i (f_i - b_i)(e_{x_i} - p)
            #     = 1/(N(N-1)) [N sum_i f_i e_{x_i} - F sum_i e_{x_i}] - p/(N(N-1)) [N F - N F]
            #     = (sum_i f_i e_{x_i} - (F/N) c) / (N-1):
            # the p term vanishes because the leave-one-out advantages sum to zero.
            out[:, j, :] = (cf - (F / N) * cnt) / (N - 1)
        else:
            out[:, j, :] = soft_sum[:, soft_idx[j], :] / N
    return out

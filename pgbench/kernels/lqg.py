"""Sampling kernels for linear-Gaussian control problems (:mod:`pgbench.problems.lqg`).

An episode draws standard normals from its own stream ``stream(seed, cell, trial, episode)``
(:mod:`pgbench.kernels.rng`) in this order: n for the start state, then per step t, m for the
policy noise ``eps_t`` and n for the dynamics noise ``xi_t``:
``s_0 = mu0 + L0 z``, ``a_t = K s_t + sigma * eps_t``, ``s_{t+1} = A s_t + B a_t + Lw xi_t``,
with ``L0 L0^T = Sigma0`` and ``Lw Lw^T = W``. The normals come in Box-Muller pairs (two
uniforms give ``r cos(2 pi u2)`` and then ``r sin(2 pi u2)``), so a step costs (m + n) / 2
pairs rather than m + n single draws.

The trials' episodes are cut into chunks of :data:`CHUNK` (a constant, so the cut depends only
on N), each chunk is summed in episode order by one thread, and the chunk sums are combined in
chunk order: results are bit-identical whatever the number of threads.

Estimators (theta = (K row-major, log sigma); the score of ``a ~ N(K s, diag sigma^2)`` is
``(eps_i / sigma_i) s_j`` on ``K[i, j]`` and ``eps_i^2 - 1`` on ``log sigma_i``):

``reinforce``      ``R z``, R the discounted return, z the trajectory score.
``reinforce_rtg``  ``sum_t gamma^t G_t score_t``.
``value_baseline`` ``sum_t gamma^t (G_t - V_t(s_t)) score_t`` with the exact quadratic V.
``svg_inf``        the gradient of the realised return with every noise (s_0's z, eps_t, xi_t)
                   held fixed: backpropagation through ``a_t = K s_t + sigma eps_t`` and
                   ``s_{t+1} = A s_t + B a_t + Lw xi_t`` (pathwise, SVG(inf)). With
                   ``lam_T = 0``, ``ga_t = -2 gamma^t R a_t + B^T lam_{t+1}``,
                   ``lam_t = -2 gamma^t Q s_t + A^T lam_{t+1} + K^T ga_t``, the estimate is
                   ``sum_t ga_t s_t^T`` on K and ``sum_t ga_t * sigma * eps_t`` on log sigma.
``svg0``           ``sum_t gamma^t dQ_t/da(s_t, a_t) da_t/dtheta`` with the exact Q (SVG(0)):
                   ``dQ_t/da = -2 R a - 2 gamma B^T P_{t+1} (A s + B a)``. With ``scale = e``
                   the critic's P is ``(1 + e) P`` (a wrong Q, biased unless e = 0).
``mppi``           in-batch, exponentially weighted perturbations: with the batch's returns
                   ``R_i`` and scores ``z_i`` (z is the action perturbation ``sigma eps_t`` mapped
                   to parameter space), weights ``w_i = exp(R_i / lambda) / sum_j exp(R_j / lambda)``
                   (``exp(-cost / lambda)`` as in MPPI), the estimate is
                   ``lambda sum_i (w_i - 1/N) z_i``. As lambda -> inf it tends to
                   ``(1/N) sum_i (R_i - mean R) z_i`` (REINFORCE with the batch-mean baseline);
                   at finite lambda it is biased by design (the weights are a softmax, not the
                   linear weights of the score-function identity).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from pgbench.errors import PGBenchError
from pgbench.estimators.lqg import LQG_ESTIMATORS
from pgbench.kernels.rng import seed_u64, stream, uniform
from pgbench.problems.lqg import psd_sqrt

__all__ = ["LQG_ESTIMATORS", "CHUNK", "sample_lqg", "normal_pair"]

#: Episodes per work unit; part of the result's definition (it fixes the summation order).
CHUNK = 1024

# rows of the per-episode sums
_RF, _RTG, _VB, _SVG = 0, 1, 2, 3


@njit(inline="always", cache=True)
def normal_pair(s0, s1):
    """Two independent standard normals from two uniforms (Box-Muller: cos, then sin)."""
    u1, s0, s1 = uniform(s0, s1)
    u2, s0, s1 = uniform(s0, s1)
    r = math.sqrt(-2.0 * math.log(1.0 - u1))  # 1 - u1 is in (0, 1]
    ang = 2.0 * math.pi * u2
    return r * math.cos(ang), r * math.sin(ang), s0, s1


@njit(inline="always", cache=True)
def _next_normal(s0, s1, spare, have):
    """One normal of the pair stream: the pair's sin half when one is waiting, else a new pair."""
    if have:
        return spare, s0, s1, 0.0, False
    z, sp, s0, s1 = normal_pair(s0, s1)
    return z, s0, s1, sp, True


@njit(cache=True)
def _episode(A, B, Q, R, K, sigma, L0, Lw, mu0, gamma, T, s0, s1, S, Y, Aa, Ep, rew):
    """Roll one episode out into S (T+1, n), Y (T, n) = A s + B a, Aa, Ep (T, m), rew (T)."""
    n = A.shape[0]
    m = B.shape[1]
    spare = 0.0
    have = False
    zt = np.empty(n)
    for i in range(n):
        zt[i], s0, s1, spare, have = _next_normal(s0, s1, spare, have)
    for i in range(n):
        v = mu0[i]
        for j in range(n):
            v += L0[i, j] * zt[j]
        S[0, i] = v
    for t in range(T):
        for i in range(m):
            e, s0, s1, spare, have = _next_normal(s0, s1, spare, have)
            Ep[t, i] = e
            v = sigma[i] * e
            for j in range(n):
                v += K[i, j] * S[t, j]
            Aa[t, i] = v
        for i in range(n):
            zt[i], s0, s1, spare, have = _next_normal(s0, s1, spare, have)
        r = 0.0
        for i in range(n):
            qi = 0.0
            for j in range(n):
                qi += Q[i, j] * S[t, j]
            r += S[t, i] * qi
        for i in range(m):
            ri = 0.0
            for j in range(m):
                ri += R[i, j] * Aa[t, j]
            r += Aa[t, i] * ri
        rew[t] = -r
        for i in range(n):
            v = 0.0
            for j in range(n):
                v += A[i, j] * S[t, j]
            for j in range(m):
                v += B[i, j] * Aa[t, j]
            Y[t, i] = v
            w = 0.0
            for j in range(n):
                w += Lw[i, j] * zt[j]
            S[t + 1, i] = v + w


@njit(parallel=True, cache=True)
def _lqg_partials(A, B, Q, R, K, sigma, L0, Lw, mu0, gamma, gpow, T, P, c, BtP, want, svg0_scale, lambdas,
                  seed, cell, N, Ktr, chunk):
    """Per (trial, chunk) sums of the per-episode estimates, and the mppi accumulators.

    ``want``: flags for reinforce, reinforce_rtg, value_baseline, svg_inf. ``P (T+1 or 1, n, n)``,
    ``c``: the exact V; ``BtP[t] = B^T P_{t+1}`` (one row when unbounded). Returns
    ``sums (Ktr, nch, 4 + n_svg0, d)``, ``zsum (Ktr, nch, d)``, ``mx, ws (Ktr, nch, n_lambda)`` and
    ``wz (Ktr, nch, n_lambda, d)``: per chunk the largest return, ``sum exp((R - mx)/lambda)`` and
    ``sum exp((R - mx)/lambda) z``.
    """
    n = A.shape[0]
    m = B.shape[1]
    mn = m * n
    d = mn + m
    n0 = svg0_scale.size
    nl = lambdas.size
    finite = P.shape[0] > 1
    need_score = want[0] or want[1] or want[2] or nl > 0
    nch = (N + chunk - 1) // chunk
    sums = np.zeros((Ktr, nch, 4 + n0, d))
    zsum = np.zeros((Ktr, nch, d))
    mx = np.full((Ktr, nch, nl), -np.inf)
    ws = np.zeros((Ktr, nch, nl))
    wz = np.zeros((Ktr, nch, nl, d))
    for task in prange(Ktr * nch):
        k = task // nch
        ch = task - k * nch
        lo = ch * chunk
        hi = min(lo + chunk, N)
        S = np.empty((T + 1, n))
        Y = np.empty((T, n))
        Aa = np.empty((T, m))
        Ep = np.empty((T, m))
        rew = np.empty(T)
        z = np.empty(d)
        g = np.empty(d)
        lam = np.empty(n)
        lamn = np.empty(n)
        ga = np.empty(m)
        acc = np.zeros((4 + n0, d))
        for ep in range(lo, hi):
            s0, s1 = stream(seed, cell, np.uint64(k), np.uint64(ep))
            _episode(A, B, Q, R, K, sigma, L0, Lw, mu0, gamma, T, s0, s1, S, Y, Aa, Ep, rew)
            if need_score:
                # returns-to-go backward; score-function estimators in one pass
                for j in range(d):
                    z[j] = 0.0
                G = 0.0
                for t in range(T - 1, -1, -1):
                    G = rew[t] + gamma * G
                    gt = gpow[t]
                    tv = t if finite else 0
                    Vt = 0.0
                    if want[2]:
                        for i in range(n):
                            pi_ = 0.0
                            for j in range(n):
                                pi_ += P[tv, i, j] * S[t, j]
                            Vt += S[t, i] * pi_
                        Vt = -(Vt + c[tv])
                    w_rtg = gt * G
                    w_vb = gt * (G - Vt)
                    for i in range(m):
                        es = Ep[t, i] / sigma[i]
                        for j in range(n):
                            sc = es * S[t, j]
                            z[i * n + j] += sc
                            if want[1]:
                                acc[_RTG, i * n + j] += w_rtg * sc
                            if want[2]:
                                acc[_VB, i * n + j] += w_vb * sc
                        sc = Ep[t, i] * Ep[t, i] - 1.0
                        z[mn + i] += sc
                        if want[1]:
                            acc[_RTG, mn + i] += w_rtg * sc
                        if want[2]:
                            acc[_VB, mn + i] += w_vb * sc
                Ret = G
                if want[0]:
                    for j in range(d):
                        acc[_RF, j] += Ret * z[j]
                if nl > 0:
                    for j in range(d):
                        zsum[k, ch, j] += z[j]
                    for l in range(nl):
                        inv = 1.0 / lambdas[l]
                        if Ret > mx[k, ch, l]:
                            f = math.exp((mx[k, ch, l] - Ret) * inv) if ws[k, ch, l] > 0.0 else 0.0
                            ws[k, ch, l] *= f
                            for j in range(d):
                                wz[k, ch, l, j] *= f
                            mx[k, ch, l] = Ret
                        e = math.exp((Ret - mx[k, ch, l]) * inv)
                        ws[k, ch, l] += e
                        for j in range(d):
                            wz[k, ch, l, j] += e * z[j]
            if want[3]:
                # pathwise: backprop the realised return, every noise fixed
                for i in range(n):
                    lam[i] = 0.0
                for t in range(T - 1, -1, -1):
                    gt = gpow[t]
                    for i in range(m):
                        v = 0.0
                        for j in range(m):
                            v += R[i, j] * Aa[t, j]
                        v *= -2.0 * gt
                        for j in range(n):
                            v += B[j, i] * lam[j]
                        ga[i] = v
                        for j in range(n):
                            acc[_SVG, i * n + j] += v * S[t, j]
                        acc[_SVG, mn + i] += v * sigma[i] * Ep[t, i]
                    for i in range(n):
                        v = 0.0
                        for j in range(n):
                            v += Q[i, j] * S[t, j]
                        v *= -2.0 * gt
                        for j in range(n):
                            v += A[j, i] * lam[j]
                        for j in range(m):
                            v += K[j, i] * ga[j]
                        lamn[i] = v
                    for i in range(n):
                        lam[i] = lamn[i]
            if n0 > 0:
                for t in range(T):
                    gt = gpow[t]
                    tb = t if finite else 0
                    for e0 in range(n0):
                        f = -2.0 * gamma * (1.0 + svg0_scale[e0])
                        for i in range(m):
                            v = 0.0
                            for j in range(m):
                                v -= 2.0 * R[i, j] * Aa[t, j]
                            u = 0.0
                            for j in range(n):
                                u += BtP[tb, i, j] * Y[t, j]
                            v = gt * (v + f * u)
                            for j in range(n):
                                acc[4 + e0, i * n + j] += v * S[t, j]
                            acc[4 + e0, mn + i] += v * sigma[i] * Ep[t, i]
        for e in range(4 + n0):
            for j in range(d):
                sums[k, ch, e, j] = acc[e, j]
    return sums, zsum, mx, ws, wz


@njit(parallel=True, cache=True)
def normal_floor(seed, cell, n_episodes, steps, pairs_per_step, n_chunks):
    """The normal draws alone (``pairs_per_step`` Box-Muller pairs a step, streams seeded per
    episode as the kernel seeds them): the floor the LQG kernel is compared with in ``pgbench bench``."""
    out = np.zeros(n_chunks)
    per = (n_episodes + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        acc = 0.0
        for i in range(c * per, min(n_episodes, (c + 1) * per)):
            s0, s1 = stream(seed, cell, np.uint64(0), np.uint64(i))
            for t in range(steps * pairs_per_step):
                z1, z2, s0, s1 = normal_pair(s0, s1)
                acc += z1 * z2
        out[c] = acc
    return out


def _resolve(names, params):
    out = []
    for name, p in zip(names, params):
        if name not in LQG_ESTIMATORS:
            raise PGBenchError(f"estimator {name!r} does not apply to an lqg problem "
                               f"(for lqg: {', '.join(LQG_ESTIMATORS)})")
        full = {**LQG_ESTIMATORS[name]["params"], **(p or {})}
        if name == "mppi" and not (full["lambda"] > 0 and math.isfinite(full["lambda"])):
            raise PGBenchError(f"mppi lambda must be a finite number > 0; got {full['lambda']}")
        if name == "svg0" and not (full["scale"] > -1 and math.isfinite(full["scale"])):
            raise PGBenchError(f"svg0 scale must be a finite number > -1; got {full['scale']}")
        out.append((name, full))
    return out


def sample_lqg(problem, names, params, N: int, K: int, seed: int, cell: int, theta, T: int, value_P,
               value_c) -> np.ndarray:
    """K trials of batch-N gradient estimates for each named LQG estimator: (K, len(names), d).

    All estimators share the episodes (common random numbers). ``params[j]``: estimator j's
    parameters (``None``: defaults). Episodes run ``T`` steps; ``value_P`` (T+1, n, n) and ``value_c`` are the
    exact quadratic value's matrices at theta (the value baseline and the pathwise estimators read them):
    the caller (:func:`pgbench.measure.lqg.sample_lqg`) takes them from the exact solver, which this
    layer does not import.
    """
    specs = _resolve(list(names), list(params) if params is not None else [None] * len(names))
    if N < 1 or K < 1:
        raise PGBenchError(f"batch size N and trials K must be >= 1; got N={N}, K={K}")
    if N < 2 and any(n == "mppi" for n, _ in specs):
        raise PGBenchError(f"mppi weights the episodes of a batch against each other: it needs N >= 2; got N={N}")
    th = problem.resolve_theta(theta)
    Kg, sigma = problem.unpack(th)
    P = np.ascontiguousarray(value_P)
    BtP = np.ascontiguousarray(np.einsum("ji,tjk->tik", problem.B, P[1:] if P.shape[0] > 1 else P))
    want = np.array([any(n == x for n, _ in specs) for x in ("reinforce", "reinforce_rtg", "value_baseline",
                                                                "svg_inf")], dtype=np.bool_)
    scales = sorted({p["scale"] for n, p in specs if n == "svg0"})
    lambdas = sorted({p["lambda"] for n, p in specs if n == "mppi"})
    s = seed_u64(seed)
    c = np.uint64(int(cell) % (1 << 64))
    sums, zsum, mx, ws, wz = _lqg_partials(
        problem.A, problem.B, problem.Q, problem.R, np.ascontiguousarray(Kg), sigma, psd_sqrt(problem.Sigma0),
        psd_sqrt(problem.W), problem.mu0, problem.gamma, problem.gamma ** np.arange(T, dtype=np.float64), T, P, np.ascontiguousarray(value_c), BtP, want,
        np.array(scales, dtype=np.float64), np.array(lambdas, dtype=np.float64), s, c, N, K, CHUNK)
    tot = _chunk_sum(sums)  # (K, 4 + n0, d)
    out = np.empty((K, len(specs), problem.dim))
    for j, (name, p) in enumerate(specs):
        if name == "mppi":
            l = lambdas.index(p["lambda"])
            out[:, j, :] = _mppi_combine(mx[:, :, l], ws[:, :, l], wz[:, :, l, :], zsum, p["lambda"], N)
        elif name == "svg0":
            out[:, j, :] = tot[:, 4 + scales.index(p["scale"]), :] / N
        else:
            out[:, j, :] = tot[:, {"reinforce": _RF, "reinforce_rtg": _RTG, "value_baseline": _VB,
                                   "svg_inf": _SVG}[name], :] / N
    return out


def _chunk_sum(part: np.ndarray) -> np.ndarray:
    """Add the chunk axis (1) in chunk order."""
    out = np.zeros(part.shape[:1] + part.shape[2:])
    for ch in range(part.shape[1]):
        out += part[:, ch]
    return out


def _mppi_combine(mx, ws, wz, zsum, lam, N):
    """``lambda (sum_i w_i z_i - mean z)`` from per-chunk running log-sum-exp accumulators."""
    M = mx.max(axis=1, keepdims=True)
    f = np.exp((mx - M) / lam)  # (K, nch)
    Sw = (ws * f).sum(axis=1)
    Zw = (wz * f[:, :, None]).sum(axis=1)
    zbar = _chunk_sum(zsum) / N
    return lam * (Zw / Sw[:, None] - zbar)

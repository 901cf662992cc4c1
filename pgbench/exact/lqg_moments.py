"""Exact variance of LQG gradient estimators at a finite horizon, by Gaussian moment identities.

An episode is a function of one standard normal vector ``x`` of dimension ``D = n + T (m + n)``
(the start state's n normals, then per step eps_t and xi_t, the kernels' order). States and
actions are affine in x, so every quantity below is a quadratic form
``q(x) = x^T A x + b^T x + c`` (A symmetric):

* ``svg_inf`` and ``svg0``: each coordinate is a sum of products of two affine functions (the
  reward gradient and the sensitivity ``ds_t/dtheta``, or ``dQ_t/da`` and ``da_t/dtheta``), a
  quadratic form; ``Cov(q_k, q_l) = 2 tr(A_k A_l) + b_k . b_l``.
* ``reinforce``: ``R z_k`` is a product of two quadratic forms (the return, the score sum), and
  ``E[(R z_k)^2]`` a moment of four. Moments follow from joint cumulants through set partitions;
  the joint cumulant of ``q_1..q_r`` (r >= 2) is the mixed derivative of the cumulant generating
  function ``-1/2 log det(I - 2 sum t_i A_i) + 1/2 beta^T (I - 2 sum t_i A_i)^-1 beta + sum t_i c_i``
  (``beta = sum t_i b_i``):
  ``kappa = 2^(r-1)/r sum_perm tr(A_p1 ... A_pr) + 2^(r-3) sum_perm b_p1^T A_p2 ... A_p(r-1) b_pr``.

Costs grow as D^3 (one D x D product per term), so the horizon is limited (:data:`MAX_DIM`).
``reinforce_rtg`` and ``value_baseline`` are sums over t of such products: their second moments
need O(T^2) four-form moments and are not computed.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.problems.lqg import psd_sqrt

MAX_DIM = 700  # largest D = n + T (m + n) treated exactly
AUTO_DIM = 400  # measure() adds the exact columns up to this D (about a second a column)
SUPPORTED = ("reinforce", "svg_inf", "svg0")


@dataclass
class Quad:
    """``x^T A x + b^T x + c`` with A symmetric."""
    A: np.ndarray
    b: np.ndarray
    c: float

    @property
    def mean(self) -> float:
        return float(np.trace(self.A) + self.c)


def _affine_product(cu, Lu, cv, Lv, W=None) -> Quad:
    """``u^T W v`` for affine ``u = cu + Lu x``, ``v = cv + Lv x``."""
    if W is not None:
        cv, Lv = W @ cv, W @ Lv
    M = Lu.T @ Lv
    return Quad((M + M.T) / 2, cu @ Lv + cv @ Lu, float(cu @ cv))


def _add(acc: Quad | None, q: Quad, w: float = 1.0) -> Quad:
    if acc is None:
        return Quad(w * q.A, w * q.b, w * q.c)
    acc.A += w * q.A
    acc.b += w * q.b
    acc.c += w * q.c
    return acc


def _trajectory(problem, theta, T):
    """Affine (constant, linear) forms of s_t (t <= T), a_t, eps_t in x."""
    n, m = problem.n, problem.m
    K, sigma = problem.unpack(theta)
    D = n + T * (m + n)
    L0, Lw = psd_sqrt(problem.Sigma0), psd_sqrt(problem.W)
    cs, Ls = problem.mu0.copy(), np.zeros((n, D))
    Ls[:, :n] = L0
    S, Aa, E = [(cs, Ls)], [], []
    for t in range(T):
        o = n + t * (m + n)
        Le = np.zeros((m, D))
        Le[:, o:o + m] = np.eye(m)
        ca, La = K @ cs, K @ Ls + sigma[:, None] * Le
        Lx = np.zeros((n, D))
        Lx[:, o + m:o + m + n] = Lw
        cs, Ls = problem.A @ cs + problem.B @ ca, problem.A @ Ls + problem.B @ La + Lx
        S.append((cs, Ls))
        Aa.append((ca, La))
        E.append(Le)
    return S, Aa, E, D


def gradient_forms(problem, name: str, theta=None, scale: float = 0.0) -> list:
    """The per-episode estimate of ``svg_inf`` or ``svg0`` as d quadratic forms in x."""
    th = problem.resolve_theta(theta)
    T = problem.horizon
    n, m, d = problem.n, problem.m, problem.dim
    K, sigma = problem.unpack(th)
    S, Aa, E, D = _trajectory(problem, th, T)
    g = problem.gamma
    out = [None] * d
    if name == "svg_inf":
        # sensitivities ds_t/dtheta_k (affine), forward
        ds = [(np.zeros(n), np.zeros((n, D))) for _ in range(d)]
        for t in range(T):
            cs, Ls = S[t]
            ca, La = Aa[t]
            for k in range(d):
                cd, Ld = ds[k]
                cda, Lda = K @ cd, K @ Ld
                if k < m * n:
                    i, j = divmod(k, n)
                    cda = cda.copy()
                    cda[i] += cs[j]
                    Lda = Lda.copy()
                    Lda[i] += Ls[j]
                else:
                    i = k - m * n
                    Lda = Lda.copy()
                    Lda[i] += sigma[i] * E[t][i]
                q = _affine_product(cs, Ls, cd, Ld, problem.Q)
                q2 = _affine_product(ca, La, cda, Lda, problem.R)
                out[k] = _add(_add(out[k], q, -2.0 * g ** t), q2, -2.0 * g ** t)
                ds[k] = (problem.A @ cd + problem.B @ cda, problem.A @ Ld + problem.B @ Lda)
        return out
    if name == "svg0":
        from pgbench.exact.lqg import exact_lqg
        P = exact_lqg(problem, th).P
        for t in range(T):
            cs, Ls = S[t]
            ca, La = Aa[t]
            BtP = problem.B.T @ P[t + 1] * (1.0 + scale)
            # dQ/da = -2 R a - 2 gamma B^T P (A s + B a)
            cq = -2.0 * problem.R @ ca - 2.0 * g * BtP @ (problem.A @ cs + problem.B @ ca)
            Lq = -2.0 * problem.R @ La - 2.0 * g * BtP @ (problem.A @ Ls + problem.B @ La)
            for k in range(d):
                if k < m * n:
                    i, j = divmod(k, n)
                    q = _affine_product(cq[i:i + 1], Lq[i:i + 1], cs[j:j + 1], Ls[j:j + 1])
                else:
                    i = k - m * n
                    q = _affine_product(cq[i:i + 1], Lq[i:i + 1], np.zeros(1), sigma[i] * E[t][i:i + 1])
                out[k] = _add(out[k], q, g ** t)
        return out
    raise PGBenchError(f"no quadratic-form representation for {name}")


def return_and_scores(problem, theta=None):
    """The discounted return R and the trajectory score z_k as quadratic forms in x."""
    th = problem.resolve_theta(theta)
    T = problem.horizon
    n, m, d = problem.n, problem.m, problem.dim
    _, sigma = problem.unpack(th)
    S, Aa, E, D = _trajectory(problem, th, T)
    R = None
    z = [Quad(np.zeros((D, D)), np.zeros(D), 0.0) for _ in range(d)]
    for t in range(T):
        cs, Ls = S[t]
        ca, La = Aa[t]
        R = _add(R, _affine_product(cs, Ls, cs, Ls, problem.Q), -problem.gamma ** t)
        R = _add(R, _affine_product(ca, La, ca, La, problem.R), -problem.gamma ** t)
        for k in range(d):
            if k < m * n:
                i, j = divmod(k, n)
                q = _affine_product(np.zeros(1), E[t][i:i + 1] / sigma[i], cs[j:j + 1], Ls[j:j + 1])
            else:
                i = k - m * n
                q = _affine_product(np.zeros(1), E[t][i:i + 1], np.zeros(1), E[t][i:i + 1])
                q.c -= 1.0
            _add(z[k], q)
    return R, z


def cumulant(qs: list) -> float:
    """Joint cumulant of quadratic forms of x ~ N(0, I)."""
    r = len(qs)
    if r == 1:
        return qs[0].mean
    tr = 0.0
    bt = 0.0
    # tr(A_p1 ... A_pr) is invariant under rotation and (A symmetric) reversal: sum over the
    # permutations that start with index 0 (each stands for its r rotations) and, for r >= 3, keep one of
    # each mirror pair (counted twice)
    for rest in itertools.permutations(range(1, r)):
        p = (0,) + rest
        if r >= 3 and p[1] > p[-1]:
            continue  # its reversal is counted (twice) below
        M = qs[p[0]].A
        for i in p[1:-1]:
            M = M @ qs[i].A
        tr += r * (2 if r >= 3 else 1) * float(np.sum(M * qs[p[-1]].A))
    for p in itertools.permutations(range(r)):
        v = qs[p[-1]].b
        for i in reversed(p[1:-1]):
            v = qs[i].A @ v
        bt += qs[p[0]].b @ v
    return 2.0 ** (r - 1) / r * tr + 2.0 ** (r - 3) * bt


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


def moment(qs: list) -> float:
    """``E[prod_i q_i]`` from joint cumulants over set partitions."""
    memo = {}

    def kappa(block):
        key = tuple(sorted(block))
        if key not in memo:
            memo[key] = cumulant([qs[i] for i in key])
        return memo[key]

    return sum(math.prod(kappa(b) for b in part) for part in _partitions(list(range(len(qs)))))


def per_episode_variance(problem, name: str, theta=None, scale: float = 0.0) -> tuple[float, np.ndarray]:
    """``(tr Cov, mean)`` of one episode's estimate of ``name`` (reinforce, svg_inf or svg0)."""
    if problem.horizon is None:
        raise PGBenchError("exact LQG variance needs a finite horizon")
    D = problem.n + problem.horizon * (problem.m + problem.n)
    if D > MAX_DIM:
        raise PGBenchError(f"exact LQG variance: {D} normals per episode exceeds {MAX_DIM}")
    if name in ("svg_inf", "svg0"):
        qs = gradient_forms(problem, name, theta, scale)
        mean = np.array([q.mean for q in qs])
        var = sum(2.0 * float(np.sum(q.A * q.A)) + float(q.b @ q.b) for q in qs)
        return var, mean
    if name == "reinforce":
        R, z = return_and_scores(problem, theta)
        mean = np.array([moment([R, zk]) for zk in z])
        second = sum(moment([R, R, zk, zk]) for zk in z)
        return float(second - mean @ mean), mean
    raise PGBenchError(f"exact LQG variance is available for {', '.join(SUPPORTED)}; not {name}")


def exact_columns(problem, specs, N: int, theta=None) -> dict:
    """``{label: (exact variance, exact mse)}`` of a batch-N estimate, for the supported estimators,
    when the horizon is finite and ``D <= AUTO_DIM`` (else empty)."""
    if problem.horizon is None or problem.n + problem.horizon * (problem.m + problem.n) > AUTO_DIM:
        return {}
    from pgbench.exact.lqg import exact_lqg
    g = exact_lqg(problem, theta).grad
    out = {}
    for s in specs:
        if s.name in SUPPORTED:
            var, mean = per_episode_variance(problem, s.name, theta, s.p.get("scale", 0.0))
            out[s.label] = (var / N, var / N + float(np.sum((mean - g) ** 2)))
    return out

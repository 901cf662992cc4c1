"""Exact first and second moments of gradient estimators by dynamic programming over (t, s).

No trajectory is listed: a forward pass over the chain carries, for every state s at step t,
probability-weighted moments of the quantities the estimate is built from, restricted to the
episodes that are still running and sit in s at step t. Its cost is ``O(T S A (S + A) d)``
per estimator, where enumeration grows like ``(A K)^T``.

Every estimate is ``g = sum_t psi_t u_t`` with ``u_t = grad log pi(a_t|s_t)``. Two families:

*Trace family* (reinforce_rtg, rtg_no_gamma_t, value_baseline, true_advantage, all_action,
gae/td0 with a fixed critic, entropy_bonus, geometric_termination). Exchanging the sums,

    g = sum_k (q_k Y_k + W_k),      Y_k = alpha Y_(k-1) + beta_k u_k

where ``q_k`` is a scalar of step k (the reward, a TD error, a reward with an entropy term),
``Y_k`` an eligibility trace (decay ``alpha``, weight ``beta_k``) and ``W_k`` a vector that
depends on ``(t, s_k, a_k)`` only (oracle baselines and advantages). With the partial estimate
``h_k = sum_(j <= k) (q_j Y_j + W_j)``, ``||g||^2 = sum_k (2 <h_(k-1), D_k> + ||D_k||^2)``
(``D_k`` the step's increment), so the pass carries per state ``E[1]``, ``E[Y]``, ``E[h]``,
``E[h * Y]`` and ``E[Y * Y]`` (coordinatewise products: the diagonal of the second moment comes
for free) and adds each step's expected increment. The step's law is ``pi(a|s) P(s'|s, a)``;
the next-state part of ``q`` (``gamma V(s')`` of a TD error) is averaged over ``s'`` exactly, and
the reward noise enters through ``E[q^2] = E[q]^2 + Var(noise)``.

=====================  ====================  ===========  =====================================
estimator              q_k                   alpha        beta_k, W_k
=====================  ====================  ===========  =====================================
reinforce_rtg          r_k                   gamma        gamma^k, 0
rtg_no_gamma_t         r_k                   gamma        1, 0
value_baseline         r_k                   gamma        gamma^k, -gamma^k V_k(s_k) u_k
entropy_bonus(beta)    r_k - beta log pi_k   gamma        gamma^k, 0
gae(lambda, V~)        r_k + gamma V~(s')    gamma lam    gamma^k, 0
                       - V~(s_k)
true_advantage         (none)                -            gamma^k A_k(s_k, a_k) u_k
all_action             (none)                -            gamma^k sum_b pi(b|s) Q_k(s, b) u(s, b)
geometric_termination  r_k                   1            1, 0; each step's increments weighted
                                                          by Pr(H >= k) = gamma^k
=====================  ====================  ===========  =====================================

*Return family* (reinforce, const_baseline, optimal_const_baseline, and the in-batch rloo and
batch_mean_baseline): ``g = (R - b) z`` with the discounted return R and the trajectory score z.
The pass carries ``E[R^m]``, ``E[R^m z]`` and ``E[R^m z * z]`` for m = 0, 1, 2 and collects them
when an episode ends (a terminal state, the horizon or the sampling cap). They give every
constant baseline's moments, the exact ``b* = E[R ||z||^2] / E[||z||^2]`` and per-coordinate
``b*_j``, and the in-batch estimators at any N as U-statistics over independent episodes.

Unbounded problems run to the sampling cap (the law of the sampled, capped episodes) and report
the probability mass the cap cuts off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgbench.errors import PGBenchError

__all__ = ["DP_UNSUPPORTED", "dp_supports", "why_not", "ReturnMoments", "return_moments", "trace_moments",
           "dp_moments"]

TRACE = ("reinforce_rtg", "rtg_no_gamma_t", "value_baseline", "entropy_bonus", "gae", "td0", "true_advantage",
         "all_action", "geometric_termination")
RETURN = ("reinforce", "const_baseline", "optimal_const_baseline")
RETURN_BATCH = ("rloo", "batch_mean_baseline")

DP_UNSUPPORTED = {
    "importance_sampling": "its per-decision ratios multiply along the episode (the messages would also have to "
                           "carry the running ratio and its square; not done yet)",
    "w_baseline": "the weighted in-batch baseline is a ratio of batch sums (no finite set of per-episode moments)",
    "w_baseline_loo": "the leave-one-out weighted baseline is a ratio of batch sums",
    "score_norm_baseline": "the baseline is a ratio of batch sums",
    "time_baseline_loo": "needs the joint moments of G_t and z over pairs of times (not done yet)",
    "natural": "a pseudo-inverse of the batch Fisher per batch",
}


def why_not(spec) -> str | None:
    """Why the DP cannot do this estimator (None when it can)."""
    if spec.info.target != "mdp" or spec.info.code < 0:
        return "not a built-in MDP estimator"
    if spec.name in ("gae", "td0") and spec.p["critic"] == "fitted":
        return "the fitted critic is estimated from the same batch"
    if spec.name == "importance_sampling" and spec.p["weighted"]:
        return "weighted importance sampling normalises by batch sums"
    return DP_UNSUPPORTED.get(spec.name)


def dp_supports(spec) -> bool:
    """Whether :func:`dp_moments` handles this (parsed) estimator."""
    return why_not(spec) is None


# ----------------------------------------------------------------------------------------------- setup


@dataclass
class _Chain:
    """What every pass reads: the step law, scores and rewards of one (problem, theta, cap)."""

    S: int
    A: int
    d: int
    cap: int
    finite: bool
    gamma: float
    pi: np.ndarray  # (S, A)
    u: np.ndarray  # (S, A, d) scores
    R: np.ndarray  # (S, A) mean rewards
    var: np.ndarray  # (S, A) reward noise variance
    P: np.ndarray  # (S, A, S)
    prop: np.ndarray  # (S, S A): next-state mass pi(a|s) P(s'|s, a), s' non-terminal only (transposed)
    p_end: np.ndarray  # (S, A): Pr(s' terminal | s, a)
    rho0: np.ndarray
    terminal: np.ndarray
    horizon: float  # the problem's horizon (inf when unbounded)

    def step(self, X: np.ndarray) -> np.ndarray:
        """``X'[s'] = sum_(s, a) pi(a|s) P(s'|s, a) X[s, a]`` over non-terminal s' (X: (S, A, ...))."""
        tail = X.shape[2:]
        return (self.prop @ X.reshape(self.S * self.A, -1)).reshape((self.S,) + tail)


def _chain(problem, th, cap: int) -> _Chain:
    mdp = problem.mdp
    pi = np.asarray(problem.policy.probs(th), float)
    u = np.ascontiguousarray(problem.policy.score_table(th), dtype=float)
    S, A, d = u.shape
    P = np.asarray(mdp.P, float)
    live = ~np.asarray(mdp.terminal, bool)
    prop = (pi[:, :, None] * P * live[None, None, :]).reshape(S * A, S).T.copy()
    p_end = (P * (~live)[None, None, :]).sum(axis=2)
    return _Chain(S, A, d, cap, mdp.horizon is not None, float(mdp.gamma), pi, u, np.asarray(mdp.R, float),
                  np.asarray(mdp.reward_variance(), float), P, prop, p_end, np.asarray(mdp.rho0, float),
                  np.asarray(mdp.terminal, bool), np.inf if mdp.horizon is None else float(mdp.horizon))


# ----------------------------------------------------------------------------------------------- return family


@dataclass
class ReturnMoments:
    """Per-episode joint moments of the discounted return R and the score z (reward noise included).

    ``m[k] = E[R^k]``, ``v[k] = E[R^k z]`` (d,), ``zz[k] = E[R^k z * z]`` (d,, coordinatewise),
    for k = 0, 1, 2."""

    m: np.ndarray
    v: np.ndarray
    zz: np.ndarray

    @property
    def Z(self) -> np.ndarray:
        """``E[R^k ||z||^2]``, k = 0, 1, 2."""
        return self.zz.sum(axis=1)

    @property
    def b_star(self) -> float:
        Z = self.Z
        return float(Z[1] / Z[0]) if Z[0] > 0 else 0.0

    def const_baseline(self, b: float):
        """Mean (d,) and ``E||g||^2`` of one episode's ``(R - b) z``."""
        Z = self.Z
        return self.v[1] - b * self.v[0], float(Z[2] - 2 * b * Z[1] + b * b * Z[0])

    def in_batch(self, name: str, N: int):
        """Mean (d,) and ``E||g||^2`` of the batch-N estimate of rloo or batch_mean_baseline.

        Both are ``a sum_i R_i z_i - c sum_(i != j) R_j z_i``; the expectations of the products of
        these double sums split over which episodes coincide (independent episodes factorise)."""
        if name == "rloo":
            a, c = 1.0 / N, 1.0 / (N * (N - 1))
        else:
            a, c = 1.0 / N - 1.0 / N ** 2, 1.0 / N ** 2
        m1, m2 = self.m[1], self.m[2]
        v0, v1, v2 = self.v
        Z0, Z1, Z2 = self.Z
        n2 = N * (N - 1)
        n3 = n2 * (N - 2)
        n4 = n3 * (N - 3)
        EX = N * v1
        EY = n2 * m1 * v0
        XX = N * Z2 + n2 * (v1 @ v1)
        XY = n2 * (Z1 * m1 + v2 @ v0) + n3 * m1 * (v1 @ v0)
        YY = n2 * (m2 * Z0 + v1 @ v1) + n3 * (m1 * m1 * Z0 + m2 * (v0 @ v0) + 2 * m1 * (v1 @ v0)) \
            + n4 * m1 * m1 * (v0 @ v0)
        return a * EX - c * EY, float(a * a * XX - 2 * a * c * XY + c * c * YY)


def return_moments(ch: _Chain) -> ReturnMoments:
    """One forward pass for the return family."""
    S, A, d = ch.S, ch.A, ch.d
    u, uu = ch.u, ch.u * ch.u
    P = ch.rho0.copy()
    R1, R2 = np.zeros(S), np.zeros(S)
    z0, z1, z2 = (np.zeros((S, d)) for _ in range(3))
    q0, q1, q2 = (np.zeros((S, d)) for _ in range(3))  # E[R^k z * z]
    tot_s = np.zeros(3)
    tot_v = np.zeros((3, d))
    tot_q = np.zeros((3, d))
    pe = ch.p_end[:, :, None]
    for t in range(ch.cap):
        c = ch.gamma ** t
        r = c * ch.R[:, :, None]  # (S, A, 1)
        r2 = c * c * (ch.R * ch.R + ch.var)[:, :, None]
        Pa = P[:, None, None]
        a1 = R1[:, None, None]
        a2 = R2[:, None, None]
        nP = np.broadcast_to(Pa, (S, A, 1))
        nR1 = a1 + r * Pa
        nR2 = a2 + 2 * r * a1 + r2 * Pa
        nz0 = z0[:, None, :] + u * Pa
        Rz = z1[:, None, :] + a1 * u  # E[R (z + u)]
        R2z = z2[:, None, :] + a2 * u
        nz1 = Rz + r * nz0
        nz2 = R2z + 2 * r * Rz + r2 * nz0
        nq0 = q0[:, None, :] + 2 * z0[:, None, :] * u + uu * Pa
        Rq = q1[:, None, :] + 2 * z1[:, None, :] * u + uu * a1
        R2q = q2[:, None, :] + 2 * z2[:, None, :] * u + uu * a2
        nq1 = Rq + r * nq0
        nq2 = R2q + 2 * r * Rq + r2 * nq0
        scal = np.concatenate([nP, nR1, nR2], axis=2)  # (S, A, 3)
        vecs = np.stack([nz0, nz1, nz2, nq0, nq1, nq2], axis=2)  # (S, A, 6, d)
        last = t + 1 == ch.cap
        w_end = ch.pi[:, :, None] * (1.0 if last else pe)  # every episode ends at the cap
        tot_s += (w_end * scal).sum(axis=(0, 1))
        vv = (w_end[:, :, :, None] * vecs).sum(axis=(0, 1))
        tot_v += vv[:3]
        tot_q += vv[3:]
        if last:
            break
        sc = ch.step(scal)
        ve = ch.step(vecs)
        P, R1, R2 = sc[:, 0], sc[:, 1], sc[:, 2]
        z0, z1, z2, q0, q1, q2 = (ve[:, k] for k in range(6))
    return ReturnMoments(tot_s, tot_v, tot_q)


# ----------------------------------------------------------------------------------------------- trace family


def _trace_terms(ch: _Chain, spec, V, Q, critic):
    """Per-step pieces of a trace-family estimator, as functions of t:
    ``(alpha, beta(t), q0(t) (S, A) or None, q1(t) (S,) over next states, W(t) (S, A, d) or None, omega(t))``."""
    g = ch.gamma
    name = spec.name
    tv = (lambda t: t) if ch.finite else (lambda t: 0)
    zero_next = np.zeros(ch.S)
    disc = lambda t: g ** t  # noqa: E731
    one = lambda t: 1.0  # noqa: E731
    none = lambda t: None  # noqa: E731
    reward = lambda t: ch.R  # noqa: E731
    no_next = lambda t: zero_next  # noqa: E731
    if name == "reinforce_rtg":
        return g, disc, reward, no_next, none, one
    if name == "rtg_no_gamma_t":
        return g, one, reward, no_next, none, one
    if name == "value_baseline":
        return g, disc, reward, no_next, lambda t: -(g ** t) * V[tv(t)][:, None, None] * ch.u, one
    if name == "entropy_bonus":
        with np.errstate(divide="ignore"):
            soft = ch.R - spec.p["beta"] * np.log(ch.pi)
        return g, disc, lambda t: soft, no_next, none, one
    if name in ("gae", "td0"):
        lam = spec.p.get("lambda", 0.0)
        live = ~ch.terminal

        def q0(t):
            return ch.R - critic[tv(t)][:, None]

        def q1(t):
            return g * np.where(live, critic[tv(t) + 1 if ch.finite else 0], 0.0)

        return g * lam, disc, q0, q1, none, one
    if name == "true_advantage":
        return 0.0, disc, None, no_next, lambda t: (g ** t) * (Q[tv(t)] - V[tv(t)][:, None])[:, :, None] * ch.u, one
    if name == "all_action":
        def W(t):
            w = np.einsum("sa,sa,sad->sd", ch.pi, Q[tv(t)], ch.u) * g ** t
            return np.broadcast_to(w[:, None, :], ch.u.shape)
        return 0.0, disc, None, no_next, W, one
    if name == "geometric_termination":
        return 1.0, one, reward, no_next, none, disc
    raise PGBenchError(f"no dynamic programme for {name}")


def trace_moments(ch: _Chain, spec, V, Q, critic=None):
    """Mean (d,) and coordinatewise ``E[g * g]`` (d,) of one episode's estimate (trace family)."""
    S, A, d = ch.S, ch.A, ch.d
    alpha, beta, q0f, q1f, Wf, omega = _trace_terms(ch, spec, V, Q, critic)
    u, uu = ch.u, ch.u * ch.u
    P = ch.rho0.copy()
    EY, Eh, EhY, EYY = (np.zeros((S, d)) for _ in range(4))
    M1 = np.zeros(d)
    M2 = np.zeros(d)
    pi = ch.pi[:, :, None]
    has_q = q0f is not None
    for t in range(ch.cap):
        b = beta(t)
        w = omega(t)
        Pa = P[:, None, None]
        W = Wf(t)
        Eh_a = np.broadcast_to(Eh[:, None, :], (S, A, d))
        if has_q:
            q0 = q0f(t)
            q1 = q1f(t)
            m1 = ch.P @ q1  # (S, A): E[next-state part]
            m2 = ch.P @ (q1 * q1)
            qbar = (q0 + m1)[:, :, None]
            Eq2 = (q0 * q0 + 2 * q0 * m1 + m2 + ch.var)[:, :, None]
            Yt = alpha * EY[:, None, :] + b * u * Pa  # E[Y'] per (s, a)
            YY = alpha * alpha * EYY[:, None, :] + 2 * alpha * b * EY[:, None, :] * u + b * b * uu * Pa
            hY = alpha * EhY[:, None, :] + b * Eh[:, None, :] * u
            inc1 = qbar * Yt
            inc2 = 2 * qbar * hY + Eq2 * YY
            if W is not None:
                inc1 = inc1 + W * Pa
                inc2 = inc2 + 2 * W * Eh_a + 2 * qbar * W * Yt + W * W * Pa
        else:
            inc1 = W * Pa
            inc2 = 2 * W * Eh_a + W * W * Pa
        M1 += w * (pi * inc1).sum(axis=(0, 1))
        M2 += w * (pi * inc2).sum(axis=(0, 1))
        if t + 1 == ch.cap:
            break
        if has_q:
            hpart = Eh_a + q0[:, :, None] * Yt
            hYpart = hY + q0[:, :, None] * YY
            if W is not None:
                hpart = hpart + W * Pa
                hYpart = hYpart + W * Yt
            nx = ch.step(np.stack([Yt, hpart, YY, hYpart], axis=2))
            EY, Eh, EYY, EhY = nx[:, 0], nx[:, 1], nx[:, 2], nx[:, 3]
            q1n = q1[:, None]
            Eh = Eh + q1n * EY
            EhY = EhY + q1n * EYY
        else:
            Eh = ch.step(Eh_a + W * Pa)
        P = ch.step(np.broadcast_to(Pa, (S, A, 1)))[:, 0]
    return M1, M2


# ----------------------------------------------------------------------------------------------- API


def dp_moments(problem, specs, th, N: int, cap: int, V, Q, critics: dict, opt_b=None):
    """Exact ``(mean (n, d), E||g_batch||^2 (n,), in_batch (n,), cut mass, ReturnMoments or None)``.

    ``E||g_batch||^2`` is that of one episode for per-episode estimators and of the batch-N
    estimate for in-batch ones. ``critics``: the critic table per estimator index (gae/td0)."""
    ch = _chain(problem, th, cap)
    n, d = len(specs), ch.d
    mean = np.zeros((n, d))
    m2 = np.zeros(n)
    batch = np.zeros(n, bool)
    rm = None
    if any(sp.name in RETURN + RETURN_BATCH for sp in specs):
        rm = return_moments(ch)
    for j, sp in enumerate(specs):
        if sp.name in TRACE:
            M1, M2 = trace_moments(ch, sp, V, Q, critics.get(j))
            mean[j], m2[j] = M1, float(M2.sum())
        elif sp.name in RETURN:
            b = {"reinforce": 0.0, "const_baseline": sp.p.get("b", 0.0),
                 "optimal_const_baseline": rm.b_star if opt_b is None else opt_b}[sp.name]
            mean[j], m2[j] = rm.const_baseline(float(b))
        elif sp.name in RETURN_BATCH:
            batch[j] = True
            if N == 1:  # rloo needs N >= 2 (refused earlier); batch_mean at N = 1 is exactly zero
                mean[j], m2[j] = 0.0, 0.0
            else:
                mean[j], m2[j] = rm.in_batch(sp.name, N)
        else:
            raise PGBenchError(f"no dynamic programme for {sp.label}: {why_not(sp)}")
    cut = _cut_mass(ch)
    return mean, m2, batch, cut, rm


def _cut_mass(ch: _Chain) -> float:
    """Pr(an episode is still running when the cap stops it); 0 when the cap is the horizon."""
    if ch.cap >= ch.horizon:
        return 0.0
    P = ch.rho0.copy()
    for _ in range(ch.cap):
        P = ch.step(np.broadcast_to(P[:, None, None], (ch.S, ch.A, 1)))[:, 0]
    return float(P.sum())

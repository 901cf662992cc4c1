"""Plain-NumPy reference of the exact-moment dynamic programme (pgbench.exact.dp).

Independent of the numba passes: dense ``P[s, a, s']``, every (state, action) at once, each
estimator's per-step pieces written out again from docs/moments.rst (``g = sum_k (q_k Y_k + W_k)``
with the eligibility trace ``Y_k = alpha Y_(k-1) + beta_k u_k``), the return family
(``E[R^k z]``, ``E[R^k z * z]``) by the same expansion of ``(R + c r)^m (z + u)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from naive_mdp import behaviour


@dataclass
class Chain:
    S: int
    A: int
    d: int
    cap: int
    finite: bool
    gamma: float
    pi: np.ndarray
    u: np.ndarray
    R: np.ndarray
    var: np.ndarray
    P: np.ndarray
    prop: np.ndarray  # (S, S A): pi(a|s) P(s'|s, a) into non-terminal s'
    p_end: np.ndarray
    rho0: np.ndarray
    terminal: np.ndarray

    def step(self, X):
        tail = X.shape[2:]
        return (self.prop @ X.reshape(self.S * self.A, -1)).reshape((self.S,) + tail)


def chain(problem, theta=None, cap=None, mu=None) -> Chain:
    """The chain of ``problem`` at theta; ``mu``: step with this behaviour policy instead of pi."""
    mdp = problem.mdp
    th = problem.resolve_theta(theta)
    pi = problem.policy.probs(th)
    u = problem.policy.score_table(th)
    S, A, d = u.shape
    P = mdp.P
    live = ~mdp.terminal
    step_pi = pi if mu is None else mu
    prop = (step_pi[:, :, None] * P * live[None, None, :]).reshape(S * A, S).T.copy()
    p_end = (P * (~live)[None, None, :]).sum(axis=2)
    return Chain(S, A, d, mdp.episode_cap if cap is None else cap, mdp.horizon is not None, float(mdp.gamma), pi, u,
                 mdp.R, mdp.reward_variance(), P, prop, p_end, mdp.rho0, mdp.terminal)


def episode_moments(ch: Chain, spec, V, Q, critic=None):
    """Mean (d,) and ``E||g||^2`` of one episode of a per-episode estimator (parsed spec)."""
    if spec.name == "importance_sampling":
        return importance_sampling_moments(ch, spec)
    if spec.name in ("reinforce", "const_baseline", "optimal_const_baseline"):
        m, v, zz = return_moments(ch)
        Z = zz.sum(axis=1)
        b = {"reinforce": 0.0, "const_baseline": spec.p.get("b", 0.0), "optimal_const_baseline": Z[1] / Z[0]}[spec.name]
        return v[1] - b * v[0], Z[2] - 2 * b * Z[1] + b * b * Z[0]
    M1, M2 = trace_moments(ch, spec, V, Q, critic)
    return M1, M2.sum()


def return_moments(ch: Chain):
    """``(E[R^k], E[R^k z], E[R^k z * z])`` for k = 0, 1, 2, over ended episodes (vectorised numpy)."""
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
    return tot_s, tot_v, tot_q


# ----------------------------------------------------------------------------------------------- trace family


def _trace_terms(ch: Chain, spec, V, Q, critic):
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


def trace_moments(ch: Chain, spec, V, Q, critic=None):
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




def importance_sampling_moments(ch: Chain, spec):
    """Ordinary per-decision IS, ``g = sum_k gamma^k w_k r_k z_k`` with ``w_k = prod_(j<=k) pi/mu``,
    episodes from mu: the chain must step with mu (``chain(..., mu=...)``). Messages per state:
    E[1], E[w], E[w^2] and the vectors E[Y], E[h], E[Y Y], E[h Y], E[w Y], E[w h] for
    ``Y_k = gamma^k w_k z_k`` and the partial estimate h."""
    S, A, d = ch.S, ch.A, ch.d
    mu = behaviour(ch.pi, spec.p)
    rho = ch.pi / mu
    u, uu = ch.u, ch.u * ch.u
    P = ch.rho0.copy()
    Ew, Ew2 = ch.rho0.copy(), ch.rho0.copy()
    EY, Eh, EYY, EhY, EwY, Ewh = (np.zeros((S, d)) for _ in range(6))
    M1, M2 = np.zeros(d), np.zeros(d)
    r = ch.R[:, :, None]
    er2 = (ch.R * ch.R + ch.var)[:, :, None]
    rh = rho[:, :, None]
    for t in range(ch.cap):
        c = ch.gamma ** t
        w1 = Ew[:, None, None]
        w2 = Ew2[:, None, None]
        y = rh * (ch.gamma * EY[:, None, :] + c * u * w1)
        yy = rh ** 2 * (ch.gamma ** 2 * EYY[:, None, :] + 2 * ch.gamma * c * u * EwY[:, None, :] + c * c * uu * w2)
        hy = rh * (ch.gamma * EhY[:, None, :] + c * u * Ewh[:, None, :])
        wy = rh ** 2 * (ch.gamma * EwY[:, None, :] + c * u * w2)
        M1 += (mu[:, :, None] * r * y).sum(axis=(0, 1))
        M2 += (mu[:, :, None] * (2 * r * hy + er2 * yy)).sum(axis=(0, 1))
        if t + 1 == ch.cap:
            break
        Pa = np.broadcast_to(P[:, None, None], (S, A, 1))
        sc = ch.step(np.concatenate([Pa, rh * w1 + 0 * Pa, rh ** 2 * w2 + 0 * Pa], axis=2))
        P, Ew, Ew2 = sc[:, 0], sc[:, 1], sc[:, 2]
        nx = ch.step(np.stack([y, Eh[:, None, :] + r * y, yy, hy + r * yy, wy, rh * Ewh[:, None, :] + r * wy], axis=2))
        EY, Eh, EYY, EhY, EwY, Ewh = (nx[:, k] for k in range(6))
    return M1, M2.sum()



def ppo_gae_by_listing(problem, lam: float, theta=None):
    """Mean (d,) and second moment ``E[g g^T]`` (d, d) of one episode of ``ppo_gae(lam)`` by listing
    every trajectory and writing psi out by hand: ``delta_t = r_t + gamma V_(t+1)(s_(t+1)) - V_t(s_t)``
    (V of a terminal state and the horizon's row 0; an unbounded episode cut by the cap bootstraps
    on V of its last state), ``A_t = sum_l (gamma lam)^l delta_(t+l)``, ``g = sum_t A_t u_t`` with
    no gamma^t. The reward noise adds ``sum_k Var(r_k) Y_k Y_k^T`` with ``Y_k = sum_(t <= k)
    (gamma lam)^(k-t) u_t`` (the noise of r_k enters every A_t, t <= k)."""
    from pgbench import exact
    from pgbench.exact.moments import enumerate_trajectories
    th = problem.resolve_theta(theta)
    gt = exact(problem, th)
    mdp = problem.mdp
    V = np.vstack([gt.V, np.zeros((1, mdp.S))]) if gt.V.ndim == 2 else gt.V[None, :]
    u = problem.policy.score_table(th)
    var = mdp.reward_variance()
    g, al = mdp.gamma, mdp.gamma * lam
    tr = enumerate_trajectories(problem)
    p = tr.probs(gt.pi)
    d = u.shape[2]
    mean, second = np.zeros(d), np.zeros((d, d))
    for i in range(len(tr)):
        L = int(tr.lengths[i])
        s, a = tr.states[i, :L + 1], tr.actions[i, :L]

        def v(t):
            return 0.0 if mdp.terminal[s[t]] else V[min(t, V.shape[0] - 1), s[t]]
        delta = [mdp.R[s[t], a[t]] + g * v(t + 1) - v(t) for t in range(L)]
        adv = [sum(al ** (k - t) * delta[k] for k in range(t, L)) for t in range(L)]
        est = sum((adv[t] * u[s[t], a[t]] for t in range(L)), np.zeros(d))
        mean += p[i] * est
        second += p[i] * np.outer(est, est)
        for k in range(L):
            Y = sum((al ** (k - t) * u[s[t], a[t]] for t in range(k + 1)), np.zeros(d))
            second += p[i] * var[s[k], a[k]] * np.outer(Y, Y)
    return mean, second

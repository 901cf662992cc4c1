"""Slow, obvious references for the exact ground truth (the contract's Conventions and ground truth, docs/contract.rst).

Everything here is written from the definitions with explicit loops and explicit matrix
inverses, independently of ``pgbench.exact``: dense arrays only, no sparse forms, no
reuse of pgbench's policies. Use on small problems only.
"""
from __future__ import annotations

import numpy as np


def naive_softmax_policy(features: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``pi[s, a] = exp(theta . phi[s, a]) / sum_b exp(theta . phi[s, b])`` by loops."""
    S, A, _ = features.shape
    pi = np.zeros((S, A))
    for s in range(S):
        logits = np.array([features[s, a] @ theta for a in range(A)])
        e = np.exp(logits - logits.max())
        pi[s] = e / e.sum()
    return pi


def one_hot_features(S: int, A: int) -> np.ndarray:
    """Tabular softmax as linear softmax: ``phi[s, a] = e_{(s, a)}`` in R^{S*A} (row-major theta)."""
    phi = np.zeros((S, A, S * A))
    for s in range(S):
        for a in range(A):
            phi[s, a, s * A + a] = 1.0
    return phi


def naive_scores(features: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """``g[s, a] = phi[s, a] - sum_b pi(b|s) phi[s, b]`` by loops."""
    S, A, d = features.shape
    g = np.zeros((S, A, d))
    for s in range(S):
        mean = sum(pi[s, b] * features[s, b] for b in range(A))
        for a in range(A):
            g[s, a] = features[s, a] - mean
    return g


def _policy_matrix(P, R, pi, terminal):
    """``P_pi`` with terminal rows and columns zeroed (nothing happens after entering a terminal
    state) and ``r_pi`` with terminal entries zeroed, by loops."""
    S, A, _ = P.shape
    M = np.zeros((S, S))
    r = np.zeros(S)
    for s in range(S):
        if terminal[s]:
            continue
        for a in range(A):
            r[s] += pi[s, a] * R[s, a]
            for s2 in range(S):
                if not terminal[s2]:
                    M[s, s2] += pi[s, a] * P[s, a, s2]
    return M, r


def naive_solution(P, R, rho0, gamma, horizon, terminal, pi):
    """Exact J, V, Q and visitation from the definitions.

    Finite horizon T: ``V_t``/``Q_t`` by backward loops, ``d_t`` by forward loops (arrays with a
    leading time axis). Unbounded: ``V = inv(I - gamma P_pi) r_pi`` and
    ``d = rho0^T inv(I - gamma P_pi)`` with an explicit inverse.
    """
    P = np.asarray(P, float)
    R = np.asarray(R, float)
    S, A, _ = P.shape
    terminal = np.zeros(S, bool) if terminal is None else np.asarray(terminal, bool)
    Rz = np.where(terminal[:, None], 0.0, R)
    M, r = _policy_matrix(P, Rz, pi, terminal)
    if horizon is None:
        inv = np.linalg.inv(np.eye(S) - gamma * M)
        V = inv @ r
        Q = np.zeros((S, A))
        for s in range(S):
            if terminal[s]:
                continue
            for a in range(A):
                Q[s, a] = Rz[s, a] + gamma * sum(P[s, a, s2] * V[s2] for s2 in range(S) if not terminal[s2])
        d = rho0 @ inv
        return dict(J=float(rho0 @ V), V=V, Q=Q, d=d)
    T = int(horizon)
    V = np.zeros((T + 1, S))
    Q = np.zeros((T, S, A))
    for t in range(T - 1, -1, -1):
        for s in range(S):
            if terminal[s]:
                continue
            for a in range(A):
                Q[t, s, a] = Rz[s, a] + gamma * sum(P[s, a, s2] * V[t + 1, s2] for s2 in range(S))
            V[t, s] = sum(pi[s, a] * Q[t, s, a] for a in range(A))
    d = np.zeros((T, S))
    d[0] = rho0
    for t in range(1, T):
        d[t] = d[t - 1] @ M
    return dict(J=float(rho0 @ V[0]), V=V[:T], Q=Q, d=d)


def naive_forward_J(P, R, rho0, gamma, horizon, terminal, pi, n_steps=None):
    """``J = sum_t gamma^t E[r_t]`` summed forward in time (a third route besides the backward
    recursion and the matrix inverse); unbounded problems are summed for ``n_steps`` steps."""
    S = P.shape[0]
    terminal = np.zeros(S, bool) if terminal is None else np.asarray(terminal, bool)
    Rz = np.where(terminal[:, None], 0.0, R)
    M, r = _policy_matrix(P, Rz, pi, terminal)
    steps = horizon if horizon is not None else n_steps
    dist, J = np.array(rho0, float), 0.0
    for t in range(steps):
        J += gamma ** t * (dist @ r)
        dist = dist @ M
    return J


def naive_gradient(sol, pi, scores, gamma):
    """Policy-gradient theorem with Q (not A): ``sum_t gamma^t sum_s d_t(s) sum_a pi g Q_t``."""
    Q, d = sol["Q"], sol["d"]
    S, A, dim = scores.shape
    grad = np.zeros(dim)
    if d.ndim == 1:
        Q, d, disc = Q[None], d[None], [1.0]  # d already carries the gamma^t weights
    else:
        disc = [gamma ** t for t in range(d.shape[0])]
    for t in range(d.shape[0]):
        for s in range(S):
            for a in range(A):
                grad += disc[t] * d[t, s] * pi[s, a] * scores[s, a] * Q[t, s, a]
    return grad


def naive_state_weight(sol, gamma):
    """``w(s) = sum_t gamma^t d_t(s)`` (the discounted visitation for unbounded problems)."""
    d = sol["d"]
    if d.ndim == 1:
        return d
    return sum(gamma ** t * d[t] for t in range(d.shape[0]))


def naive_fisher(weight, pi, scores):
    """``F = sum_s w(s) sum_a pi(a|s) g g^T`` by loops."""
    S, A, dim = scores.shape
    F = np.zeros((dim, dim))
    for s in range(S):
        for a in range(A):
            F += weight[s] * pi[s, a] * np.outer(scores[s, a], scores[s, a])
    return F


def naive_still_running(P, rho0, terminal, pi, n_steps):
    """``Pr(s_n = s, episode still running)`` after ``n_steps`` steps by propagating ``rho0``."""
    S = P.shape[0]
    terminal = np.zeros(S, bool) if terminal is None else np.asarray(terminal, bool)
    M, _ = _policy_matrix(P, np.zeros(P.shape[:2]), pi, terminal)
    dist = np.array(rho0, float)
    for _ in range(n_steps):
        dist = dist @ M
    return dist

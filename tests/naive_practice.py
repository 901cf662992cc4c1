"""Slow, obvious references for the practice estimators (loops over episodes, steps, coordinates)."""
from __future__ import annotations

import numpy as np


def episodes(batch):
    """[(states, actions, rewards)] with the padding stripped."""
    out = []
    for i in range(batch.N):
        L = int(batch.lengths[i])
        out.append((batch.states[i, :L + 1], batch.actions[i, :L], batch.rewards[i, :L]))
    return out


def v_of(batch, t, s):
    return batch.V[min(t, batch.V.shape[0] - 1), s]


def gae_no_gamma(batch, lam):
    """psi per episode: A^GAE_t = sum_l (gamma lam)^l delta_(t+l), exact V, V(terminal) = 0."""
    out = []
    for s, a, r in episodes(batch):
        L = len(a)
        delta = [r[t] + batch.gamma * v_of(batch, t + 1, s[t + 1]) - v_of(batch, t, s[t]) for t in range(L)]
        out.append([sum((batch.gamma * lam) ** (k - t) * delta[k] for k in range(t, L)) for t in range(L)])
    return out


def grad_from_psi(batch, psi):
    g = batch.policy.score_table(batch.theta)
    total = np.zeros(g.shape[2])
    for (s, a, _), p in zip(episodes(batch), psi):
        for t in range(len(a)):
            total += p[t] * g[s[t], a[t]]
    return total / batch.N


def normalized(psi):
    flat = np.array([x for p in psi for x in p])
    m, sd = flat.mean(), flat.std()
    return [[(x - m) / (sd + 1e-8) for x in p] for p in psi]


def gpomdp_baseline(batch):
    """g_k = (1/N) sum_i sum_t gamma^t (r_t - b^k_t,-i) c^k_t, b leave-one-out over the other
    episodes of E[r_t c_t^2] / E[c_t^2] with c frozen after an episode ends and r = 0 there."""
    g = batch.policy.score_table(batch.theta)
    d = g.shape[2]
    T = batch.actions.shape[1]
    N = batch.N
    c = np.zeros((N, T, d))
    r = np.zeros((N, T))
    for i, (s, a, rew) in enumerate(episodes(batch)):
        acc = np.zeros(d)
        for t in range(T):
            if t < len(a):
                acc = acc + g[s[t], a[t]]
                r[i, t] = rew[t]
            c[i, t] = acc
    est = np.zeros(d)
    for i in range(N):
        for t in range(T):
            for k in range(d):
                num = sum(r[j, t] * c[j, t, k] ** 2 for j in range(N) if j != i)
                den = sum(c[j, t, k] ** 2 for j in range(N) if j != i)
                b = num / den if den > 0 else 0.0
                est[k] += batch.gamma ** t * (r[i, t] - b) * c[i, t, k]
    return est / N


def ppo_gae_mean_weights(problem, pi, A_t, cap):
    """sum_{t < cap} Pr(s_t = s, running) pi(a|s) A_t(s, a), stepping a dense P forward."""
    mdp = problem.mdp
    P = mdp.P.copy()
    live = ~mdp.terminal
    P[~live] = 0.0
    P[:, :, ~live] = 0.0
    d = mdp.rho0.copy()
    C = np.zeros((mdp.S, mdp.A))
    for t in range(cap):
        At = A_t[t] if A_t.ndim == 3 else A_t
        C += d[:, None] * pi * At
        d = np.einsum("s,sa,sap->p", d, pi, P)
    return C

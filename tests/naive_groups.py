"""Plain references for sequence problems and the group estimators: every complete sequence
listed by an explicit depth-first walk over the dense arrays, every G-tuple of sequences listed by
itertools.product, each estimate computed from its definition with explicit loops."""
from __future__ import annotations

from itertools import product

import numpy as np


def naive_pi(problem, theta):
    """pi (S, A) by an explicit softmax of theta . phi (tabular: theta[s, a])."""
    pol = problem.policy
    th = np.asarray(theta, dtype=float)
    if pol.kind == "tabular":
        logits = th.reshape(problem.mdp.S, problem.mdp.A)
    else:
        logits = np.einsum("sad,d->sa", pol.features, th.reshape(-1))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def naive_score(problem, theta, s, a):
    """grad log pi(a|s) as a flat vector."""
    pi = naive_pi(problem, theta)
    pol = problem.policy
    if pol.kind == "tabular":
        g = np.zeros((problem.mdp.S, problem.mdp.A))
        g[s, a] += 1.0
        g[s] -= pi[s]
        return g.reshape(-1)
    phi = pol.features
    return phi[s, a] - sum(pi[s, b] * phi[s, b] for b in range(problem.mdp.A))


def list_sequences(problem, theta, theta_ref=None):
    """For each start state: a list of dicts (prob, ret, klsum, n, steps) of its complete sequences."""
    mdp = problem.mdp
    P = mdp.P
    pi = naive_pi(problem, theta)
    ref = naive_pi(problem, theta_ref) if theta_ref is not None else pi
    out = {}
    for s0 in range(mdp.S):
        if mdp.rho0[s0] == 0:
            continue
        seqs = []

        def walk(s, prob, ret, kl, steps):
            for a in range(mdp.A):
                for s2 in range(mdp.S):
                    if P[s, a, s2] == 0:
                        continue
                    st = steps + [(s, a)]
                    p2 = prob * pi[s, a] * P[s, a, s2]
                    r2 = ret + mdp.R[s, a]
                    k2 = kl + np.log(pi[s, a]) - np.log(ref[s, a])
                    if mdp.terminal[s2] or len(st) == mdp.horizon:
                        seqs.append(dict(prob=p2, ret=r2, klsum=k2, n=len(st), steps=st))
                    else:
                        walk(s2, p2, r2, k2, st)

        walk(s0, 1.0, 0.0, 0.0, [])
        out[s0] = seqs
    return out


def naive_J(problem, theta, beta=0.0, theta_ref=None):
    """J_beta = sum over sequences of rho0 q (R - beta sum_t l_t)."""
    seqs = list_sequences(problem, theta, theta_ref if beta else None)
    return sum(problem.mdp.rho0[s] * q["prob"] * (q["ret"] - beta * q["klsum"]) for s, lst in seqs.items()
               for q in lst)


def kprime(kl, l):
    return {"k1": 1.0, "k2": l, "k3": 1.0 - np.exp(-l)}[kl]


def naive_group_estimate(problem, theta, p, groups, theta_ref=None):
    """One estimate from its definition. ``groups``: a list of P lists of G sequences (the dicts of
    :func:`list_sequences`), every group's sequences from one start state."""
    G = len(groups[0])
    N = G * len(groups)
    beta = p["beta"]
    pi = naive_pi(problem, theta)
    ref = naive_pi(problem, theta_ref) if theta_ref is not None else pi
    Lmax = problem.mdp.horizon
    R = [[q["ret"] - (beta * q["klsum"] if beta > 0 and p["kl_in"] == "reward" else 0.0) for q in g] for g in groups]
    A = []
    for r in R:
        r = np.array(r)
        m = r.mean()
        if p["adv"] == "none":
            A.append(r)
        elif p["adv"] == "loo":
            A.append(np.array([r[i] - (r.sum() - r[i]) / (G - 1) for i in range(G)]))
        elif p["adv"] == "mean_std":
            A.append((r - m) / (np.std(r, ddof=p["ddof"]) + p["eps"]))
        else:
            A.append(r - m)
    if p["adv"] == "mean_batchstd":
        allc = np.concatenate(A)
        sd = np.std(allc, ddof=p["ddof"])
        A = [a / (sd + p["eps"]) for a in A]
    ntok = sum(q["n"] for g in groups for q in g)
    d = problem.policy.dim
    g_hat = np.zeros(d)
    for gi, grp in enumerate(groups):
        for i, q in enumerate(grp):
            h = {"seq-mean-token-sum": 1.0 / N, "seq-mean-token-mean": 1.0 / (N * q["n"]),
                 "token-mean": 1.0 / ntok, "seq-mean-token-sum-norm": 1.0 / (N * Lmax)}[p["agg"]]
            for (s, a) in q["steps"]:
                w = A[gi][i]
                if beta > 0 and p["kl_in"] == "loss":
                    w -= beta * kprime(p["kl"], np.log(pi[s, a]) - np.log(ref[s, a]))
                g_hat += h * w * naive_score(problem, theta, s, a)
    return g_hat


def naive_group_moments(problem, theta, p, G, P=1, theta_ref=None):
    """Exact E[g] and tr Var(g) by listing every start state of every group and every ordered G-tuple."""
    seqs = list_sequences(problem, theta, theta_ref)
    starts = list(seqs)
    rho = problem.mdp.rho0
    d = problem.policy.dim
    m1 = np.zeros(d)
    m2 = 0.0
    for combo in product(starts, repeat=P):
        w0 = np.prod([rho[s] for s in combo])
        for picks in product(*[product(range(len(seqs[s])), repeat=G) for s in combo]):
            groups = [[seqs[s][j] for j in pk] for s, pk in zip(combo, picks)]
            w = w0 * np.prod([q["prob"] for g in groups for q in g])
            g = naive_group_estimate(problem, theta, p, groups, theta_ref)
            m1 += w * g
            m2 += w * g @ g
    return m1, m2 - m1 @ m1

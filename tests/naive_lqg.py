"""Slow, obvious references for pgbench.kernels.lqg (plain NumPy, one episode at a time).

Each (trial k, episode i) replays its stream's uniforms with ``pgbench.kernels.rng.uniforms``
and turns them into normals by Box-Muller pairs (cos, then sin), in the kernel's documented
order: n for s_0, then per step m for eps_t and n for xi_t. The estimators are evaluated from
their formulas with matrix algebra; the pathwise gradient by forward-mode sensitivities
``ds_t/dtheta`` (not by the kernel's backward pass). Only the uniforms are shared with the kernel.
"""
from __future__ import annotations

import math

import numpy as np

from pgbench.exact.lqg import exact_lqg, sampling_steps
from pgbench.kernels.rng import seed_u64, uniforms
from pgbench.problems.lqg import psd_sqrt


def episode_normals(seed, cell, k: int, i: int, count: int) -> np.ndarray:
    pairs = (count + 1) // 2
    u = uniforms(seed_u64(seed), np.uint64(int(cell) % (1 << 64)), np.uint64(k), np.uint64(i), 2 * pairs)
    out = []
    for p in range(pairs):
        r = math.sqrt(-2.0 * math.log(1.0 - u[2 * p]))
        ang = 2.0 * math.pi * u[2 * p + 1]
        out += [r * math.cos(ang), r * math.sin(ang)]
    return np.array(out[:count])


def rollout(problem, theta, T, normals):
    n, m = problem.n, problem.m
    K, sigma = problem.unpack(theta)
    L0, Lw = psd_sqrt(problem.Sigma0), psd_sqrt(problem.W)
    s = problem.mu0 + L0 @ normals[:n]
    pos = n
    S, Aa, E, Xi, r = [s], [], [], [], []
    for t in range(T):
        eps = normals[pos:pos + m]
        xi = normals[pos + m:pos + m + n]
        pos += m + n
        a = K @ s + sigma * eps
        r.append(-(s @ problem.Q @ s + a @ problem.R @ a))
        s = problem.A @ s + problem.B @ a + Lw @ xi
        S.append(s)
        Aa.append(a)
        E.append(eps)
        Xi.append(xi)
    return np.array(S), np.array(Aa), np.array(E), np.array(Xi), np.array(r), Lw


def scores(problem, theta, S, E):
    _, sigma = problem.unpack(theta)
    return np.array([np.concatenate([np.outer(E[t] / sigma, S[t]).reshape(-1), E[t] ** 2 - 1.0])
                     for t in range(len(E))])


def pathwise(problem, theta, S, E, Xi, Lw):
    """d(return)/dtheta with every noise fixed, by forward sensitivities ds_t/dtheta (n, d)."""
    n, m, d = problem.n, problem.m, problem.dim
    K, sigma = problem.unpack(theta)
    g = problem.gamma
    ds = np.zeros((n, d))
    s = S[0]
    grad = np.zeros(d)
    for t in range(len(E)):
        da = K @ ds
        for i in range(m):
            for j in range(n):
                da[i, i * n + j] += s[j]
            da[i, m * n + i] += sigma[i] * E[t][i]
        a = K @ s + sigma * E[t]
        grad += g ** t * (-2.0 * (s @ problem.Q @ ds) - 2.0 * (a @ problem.R @ da))
        ds = problem.A @ ds + problem.B @ da
        s = problem.A @ s + problem.B @ a + Lw @ Xi[t]
    return grad


def reference_lqg(problem, names_params, N, Ktr, seed, cell, theta=None):
    """(Ktr, n_estimators, d) from the formulas; names_params: list of (name, params dict)."""
    th = problem.resolve_theta(theta)
    T = sampling_steps(problem, th)
    n, m, d = problem.n, problem.m, problem.dim
    g = problem.gamma
    gt = exact_lqg(problem, th)
    finite = problem.horizon is not None
    Kmat, sigma = problem.unpack(th)
    out = np.zeros((Ktr, len(names_params), d))
    for k in range(Ktr):
        per = {j: [] for j in range(len(names_params))}
        Rs, zs = [], []
        for i in range(N):
            S, Aa, E, Xi, r, Lw = rollout(problem, th, T, episode_normals(seed, cell, k, i, n + T * (m + n)))
            sc = scores(problem, th, S, E)
            disc = g ** np.arange(T)
            G = np.array([sum(g ** (l - t) * r[l] for l in range(t, T)) for t in range(T)])
            R = float(disc @ r)
            z = sc.sum(axis=0)
            Rs.append(R)
            zs.append(z)
            for j, (name, p) in enumerate(names_params):
                if name == "reinforce":
                    est = R * z
                elif name == "reinforce_rtg":
                    est = (disc * G) @ sc
                elif name == "value_baseline":
                    V = np.array([-(S[t] @ gt.P[t if finite else 0] @ S[t] + gt.c[t if finite else 0])
                                  for t in range(T)])
                    est = (disc * (G - V)) @ sc
                elif name == "svg_inf":
                    est = pathwise(problem, th, S, E, Xi, Lw)
                elif name == "svg0":
                    est = np.zeros(d)
                    for t in range(T):
                        Pn = gt.P[t + 1] if finite else gt.P[0]
                        s, a = S[t], Aa[t]
                        qa = -2.0 * problem.R @ a - 2.0 * g * (1.0 + p.get("scale", 0.0)) * problem.B.T @ Pn @ (
                            problem.A @ s + problem.B @ a)
                        est += g ** t * np.concatenate([np.outer(qa, s).reshape(-1), qa * sigma * E[t]])
                else:
                    est = None
                per[j].append(est)
        Rs, zs = np.array(Rs), np.array(zs)
        for j, (name, p) in enumerate(names_params):
            if name == "mppi":
                lam = p["lambda"]
                w = np.exp((Rs - Rs.max()) / lam)
                w /= w.sum()
                out[k, j] = lam * ((w - 1.0 / N) @ zs)
            else:
                out[k, j] = np.mean(per[j], axis=0)
    return out

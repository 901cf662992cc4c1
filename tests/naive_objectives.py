"""Slow, obvious references for pgbench.kernels.objectives (plain Python/NumPy loops).

Each (trial k, sample i) replays the first uniforms of its stream with
``pgbench.kernels.rng.uniforms(seed, cell, k, i, n)`` and evaluates every estimator on
that one sample, straight from the formulas; batch quantities (the RLOO baseline) are
formed explicitly. Nothing here is shared with the kernels except the uniforms.
"""
from __future__ import annotations

import math

import numpy as np

from pgbench.kernels.rng import seed_u64, uniforms

U_ZERO = 2.0 ** -54  # the kernels read u = 0 as half a grid step (G stays finite)


def box_muller(u1: float, u2: float) -> float:
    """The first Box-Muller normal from (u1, u2), as pgbench.kernels.rng.normal computes it."""
    r = math.sqrt(-2.0 * math.log(1.0 - u1))
    return r * math.cos(2.0 * math.pi * u2)


def replay(seed, cell, k: int, i: int, n: int) -> np.ndarray:
    return uniforms(seed_u64(seed), np.uint64(int(cell) % (1 << 64)), np.uint64(k), np.uint64(i), n)


def gaussian_sample(theta: float, eps: float) -> dict:
    """Per-sample estimates for f(x, theta) = x^2 theta, x = theta + eps."""
    x = theta + eps
    return {
        "naive": x * x,                                   # d/dtheta (x^2 theta), x fixed
        "score_function": x * x * theta * eps + x * x,    # f d log N(x; theta, 1)/dtheta + df/dtheta
        "reparameterization": 2.0 * (theta + eps) * theta + (theta + eps) ** 2,
    }


def softmax(v: np.ndarray) -> np.ndarray:
    w = np.exp(v - v.max())
    return w / w.sum()


def reference_objective(problem, names, params, N, K, seed, cell, theta=None) -> np.ndarray:
    """(K, len(names), d) like sample_objective, by brute force."""
    params = [{}] * len(names) if params is None else [dict(p or {}) for p in params]
    th = np.array(problem.theta if theta is None else theta, dtype=np.float64).reshape(-1)
    d = th.size
    out = np.zeros((K, len(names), d))
    if problem.kind == "gaussian":
        for k in range(K):
            per = np.zeros((N, len(names)))
            for i in range(N):
                u = replay(seed, cell, k, i, 2)
                est = gaussian_sample(th[0], box_muller(u[0], u[1]))
                per[i] = [est[n] for n in names]
            out[k, :, 0] = per.sum(axis=0) / N
        return out

    t = np.asarray(problem.target, dtype=np.float64)
    p = softmax(th)
    E = np.eye(d)
    f = lambda x: float(np.sum((E[x] - t) ** 2))  # noqa: E731
    for k in range(K):
        xs, fs, scores = [], [], []
        per = [[] for _ in names]
        for i in range(N):
            u = replay(seed, cell, k, i, d)
            u[u == 0.0] = U_ZERO
            G = -np.log(-np.log(u))
            x = int(np.argmax(th + G))
            xs.append(x)
            fs.append(f(x))
            scores.append(E[x] - p)
            for j, (name, prm) in enumerate(zip(names, params)):
                if name in ("gumbel_softmax", "straight_through"):
                    tau = float(prm.get("tau", 1.0))
                    y = softmax((th + G) / tau)
                    Jac = (np.diag(y) - np.outer(y, y)) / tau          # dy/dtheta
                    v = 2.0 * (y - t) if name == "gumbel_softmax" else 2.0 * (E[x] - t)
                    per[j].append(Jac @ v)
                elif name == "score_function":
                    per[j].append(fs[-1] * scores[-1])
        for j, name in enumerate(names):
            if name == "rloo":
                g = np.zeros(d)
                for i in range(N):
                    b = (sum(fs) - fs[i]) / (N - 1)                     # mean of the other N-1
                    g += (fs[i] - b) * scores[i]
                out[k, j] = g / N
            else:
                out[k, j] = np.sum(per[j], axis=0) / N
    return out

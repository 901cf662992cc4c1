"""Plain-NumPy reference of the bootstrap max-t test (the pre-compiled algorithm: a B x n
multinomial weight matrix and two matrix products), fed the same resample indices as the
compiled kernel (pgbench.stats.passes.max_t_resamples) so the two can be compared number
for number."""
from __future__ import annotations

import math

import numpy as np

from pgbench.stats.passes import BOOT_CELL
from pgbench.kernels.rng import seed_u64, uniforms


def resample_weights(n: int, B: int, seed: int) -> np.ndarray:
    """W[b, i]: how many times resample b draws row i (indices floor(u n) of stream (seed, BOOT_CELL, b, 0))."""
    W = np.zeros((B, n))
    for b in range(B):
        idx = np.floor(uniforms(seed_u64(seed), BOOT_CELL, np.uint64(b), np.uint64(0), n) * n).astype(np.int64)
        W[b] = np.bincount(idx, minlength=n)
    return W


def naive_max_t(C: np.ndarray, W: np.ndarray) -> np.ndarray:
    """T*_b = max_j |mean*_j| / (sd*_j / sqrt(n)) from multinomial weights W (B, n) on centred rows C (n, d)."""
    n = C.shape[0]
    mean = W @ C / n
    var = (W @ (C * C) / n - mean * mean) * (n / (n - 1))
    sd = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, np.abs(mean) / (sd / math.sqrt(n)), 0.0)
    return t.max(axis=1)


def naive_bootstrap_p(X: np.ndarray, target: np.ndarray, B: int, seed: int) -> float:
    """p-value of the max-t test when every coordinate is tested and K is at most the row limit."""
    K = X.shape[0]
    m = X.mean(axis=0)
    se = X.std(axis=0, ddof=1) / math.sqrt(K)
    t_obs = float(np.max(np.abs(m - target) / se))
    t_star = naive_max_t(X - m, resample_weights(K, B, seed))
    return (1 + int(np.sum(t_star >= t_obs * (1 - 1e-12)))) / (B + 1)

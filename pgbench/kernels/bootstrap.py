"""Compiled statistics over the K x d trial estimates, in O(d) (column moments) and O(B + d)
(bootstrap) memory beyond the trials themselves.

Resample b of the bootstrap draws its n indices from its own stream ``(seed, BOOT_CELL, b, 0)``,
one uniform each (``floor(u n)``), so resamples are independent of one another and of the
order in which threads run them: the result is the same whatever the thread count.
The plain-NumPy reference (tests/naive_bootstrap.py) replays the same streams.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from pgbench.kernels.rng import cell_key, stream, uniform

BOOT_CELL = np.uint64(cell_key("bootstrap max-t resamples") % (1 << 64))


@njit(cache=True)
def column_moments(X, g):
    """Per column of X (K, d): mean, sum of squared deviations, non-zero count; and the largest
    squared row norm ``max_k ||X_k||^2`` (two passes, no K x d temporary)."""
    K, d = X.shape
    mean = np.zeros(d)
    for k in range(K):
        for j in range(d):
            mean[j] += X[k, j]
    for j in range(d):
        mean[j] /= K
    m2 = np.zeros(d)
    nz = np.zeros(d, np.int64)
    row_max = 0.0
    for k in range(K):
        r = 0.0
        for j in range(d):
            x = X[k, j]
            c = x - mean[j]
            m2[j] += c * c
            r += x * x
            if x != 0.0:
                nz[j] += 1
        row_max = max(row_max, r)
    return mean, m2, nz, row_max


@njit(cache=True)
def _row(X, k, m, g, norm_g):
    """One trial's ``||X_k - m||^2``, ``||X_k - g||^2``, ``||X_k||^2``, ``cos(X_k, g)`` (0 if
    either is zero, clipped to [-1, 1]) and ``<X_k - m, m - g>``."""
    q = e = n = xg = rb = 0.0
    for j in range(X.shape[1]):
        x = X[k, j]
        r = x - m[j]
        ee = x - g[j]
        q += r * r
        e += ee * ee
        n += x * x
        xg += x * g[j]
        rb += r * (m[j] - g[j])
    den = math.sqrt(n) * norm_g
    c = min(1.0, max(-1.0, xg / den)) if den > 0.0 else 0.0
    return q, e, n, c, rb


@njit(cache=True)
def row_sums(X, m, g, norm_g):
    """Sums over trials of the per-trial terms of :func:`_row`, in two passes (means, then
    squared deviations about them), so no per-trial array is kept: ``out`` holds the sums of
    q, e, cos, their squared deviations from their means, the sum of ``rb^2`` and ``max ||X_k||^2``."""
    K = X.shape[0]
    sq = se = sc = srb2 = 0.0
    nmax = 0.0
    for k in range(K):
        q, e, n, c, rb = _row(X, k, m, g, norm_g)
        sq += q
        se += e
        sc += c
        srb2 += rb * rb
        nmax = max(nmax, n)
    mq, me, mc = sq / K, se / K, sc / K
    dq = de = dc = 0.0
    for k in range(K):
        q, e, n, c, rb = _row(X, k, m, g, norm_g)
        dq += (q - mq) ** 2
        de += (e - me) ** 2
        dc += (c - mc) ** 2
    out = np.empty(8)
    out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7] = sq, se, sc, dq, de, dc, srb2, nmax
    return out


@njit(cache=True)
def row_terms(X, m, g):
    """Per trial: ``||X_k - m||^2``, ``||X_k - g||^2`` and ``||X_k||^2`` (paired comparisons need
    the per-trial values; O(K) memory, no K x d temporary)."""
    K = X.shape[0]
    out = np.zeros((3, K))
    for k in range(K):
        q, e, n, c, rb = _row(X, k, m, g, 0.0)
        out[0, k] = q
        out[1, k] = e
        out[2, k] = n
    return out


@njit(parallel=True, cache=True)
def max_t_resamples(C, seed, B):
    """``T*_b = max_j |mean*_j| / (sd*_j / sqrt(n))`` for B multinomial resamples of the n rows of
    the centred matrix C (n, d); 0 where a resample's spread is zero."""
    n, d = C.shape
    out = np.zeros(B)
    for b in prange(B):
        s0, s1 = stream(seed, BOOT_CELL, np.uint64(b), np.uint64(0))
        acc = np.zeros(d)
        acc2 = np.zeros(d)
        for _ in range(n):
            u, s0, s1 = uniform(s0, s1)
            k = int(u * n)
            for j in range(d):
                c = C[k, j]
                acc[j] += c
                acc2[j] += c * c
        t_max = 0.0
        for j in range(d):
            mean = acc[j] / n
            var = (acc2[j] / n - mean * mean) * (n / (n - 1.0))
            if var > 0.0:
                sd = math.sqrt(var)
                if sd > 0.0:
                    t = abs(mean) / (sd / math.sqrt(n))
                    if t > t_max:
                        t_max = t
        out[b] = t_max
    return out


STAT_CHUNKS = 16
"""Trials are summed in this many fixed, consecutive chunks (in parallel), then the chunks in
order: the same numbers whatever the thread count."""


@njit(parallel=True, cache=True)
def gram_centred(X, m):
    """``R^T R`` for ``R = X - m``, one trial at a time (no K x d temporary, no BLAS threads)."""
    K, d = X.shape
    parts = np.zeros((STAT_CHUNKS, d, d))
    for c in prange(STAT_CHUNKS):
        G = parts[c]
        r = np.empty(d)
        for k in range(c * K // STAT_CHUNKS, (c + 1) * K // STAT_CHUNKS):
            for j in range(d):
                r[j] = X[k, j] - m[j]
            for i in range(d):
                ri = r[i]
                if ri != 0.0:
                    for j in range(i, d):
                        G[i, j] += ri * r[j]
    G = np.zeros((d, d))
    for c in range(STAT_CHUNKS):
        G += parts[c]
    for i in range(d):
        for j in range(i):
            G[i, j] = G[j, i]
    return G


@njit(parallel=True, cache=True)
def direction_norms(X, m, V):
    """``||(X - m) v||`` for each column v of V (d, p), one trial at a time."""
    K, d = X.shape
    p = V.shape[1]
    mv = np.zeros(p)
    for c in range(p):
        for j in range(d):
            mv[c] += m[j] * V[j, c]
    parts = np.zeros((STAT_CHUNKS, p))
    for ch in prange(STAT_CHUNKS):
        acc = parts[ch]
        s = np.empty(p)
        for k in range(ch * K // STAT_CHUNKS, (ch + 1) * K // STAT_CHUNKS):
            s[:] = 0.0
            for j in range(d):
                x = X[k, j]
                if x != 0.0:  # trial estimates are sparse (states an episode never visits)
                    for c in range(p):
                        s[c] += x * V[j, c]
            for c in range(p):
                acc[c] += (s[c] - mv[c]) ** 2
    acc = np.zeros(p)
    for ch in range(STAT_CHUNKS):
        acc += parts[ch]
    return np.sqrt(acc)

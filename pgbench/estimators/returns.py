"""Discounted sums along episodes, shared by the practice estimators and users' batch estimators."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def discounted_cumsum(x: np.ndarray, factor: float) -> np.ndarray:
    """``y[:, t] = sum_{k >= t} factor^(k-t) x[:, k]`` along the rows of x (N, T).

    One product with the (T, T) matrix ``M[k, t] = factor^(k-t)`` for k >= t when T is small, the
    backward recursion ``y_t = x_t + factor y_(t+1)`` as a linear filter (``scipy.signal.lfilter``,
    compiled) otherwise: at T = 220 the matrix product cost 0.6 ms a call, the filter 0.06 ms."""
    T = x.shape[1]
    if T <= 32:
        return x @ _discount_matrix(float(factor), T)
    from scipy.signal import lfilter
    y = lfilter([1.0], [1.0, -float(factor)], np.asarray(x, dtype=np.float64)[:, ::-1], axis=1)
    return np.ascontiguousarray(y[:, ::-1])


@lru_cache(maxsize=16)
def _discount_matrix(gamma: float, T: int) -> np.ndarray:
    """``M[k, t] = gamma^(k-t)`` for k >= t, else 0 (read-only, shared between batches)."""
    lag = np.arange(T)[:, None] - np.arange(T)[None, :]
    M = np.where(lag >= 0, gamma ** np.maximum(lag, 0).astype(np.float64), 0.0)
    M.setflags(write=False)
    return M

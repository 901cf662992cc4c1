"""Run Python batch estimators (:mod:`pgbench.estimators.batch`) on a cell's episodes.

Episodes are materialised per block of trials by :func:`pgbench.kernels.mdp._episodes` (the
built-ins' streams, in parallel); the user's function then runs on this thread for trial 0,
1, 2, ... in order, so its output does not depend on the numba thread count. ``psi`` weights
are folded into score weights ``C[s, a]`` in a fixed order (``np.bincount``).
"""
from __future__ import annotations

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.estimators.batch import BATCH_ESTIMATORS, Batch, as_array
from pgbench.kernels import mdp as K_

EPISODE_MEMORY_BUDGET = 64 * 2 ** 20  # bytes of padded episode arrays alive at once


def episode_blocks(t, seed64, cell64, N: int, K: int):
    """Yield ``(k0, states, actions, rewards, lengths, terminated)`` for blocks of trials."""
    cap = t.cap
    per_trial = N * (3 * cap + 3) * 8
    block = int(max(1, min(K, EPISODE_MEMORY_BUDGET // per_trial)))
    for k0 in range(0, K, block):
        nb = min(block, K - k0)
        states = np.empty((nb, N, cap + 1), np.int64)
        actions = np.empty((nb, N, cap), np.int64)
        rewards = np.empty((nb, N, cap))
        lengths = np.empty((nb, N), np.int64)
        ended = np.empty((nb, N), np.int64)
        K_._episodes(seed64, cell64, k0, nb, N, *t.sampler(), t.terminal, cap, states, actions, rewards, lengths,
                     ended)
        yield k0, states, actions, rewards, lengths, ended.astype(bool)


def run_batch(spec, problem, th, t, V, Q, seed64, cell64, N: int, K: int, horizon=None):
    """``(kind, out)``: kind ``"psi"`` with score weights (K, S, A) summed over the batch (not yet
    divided by N), or ``"grad"`` with the estimates (K, d)."""
    est = BATCH_ESTIMATORS[spec.name]
    S, A = t.pi.shape
    d = int(th.size)
    out = np.zeros((K, S, A)) if est.returns == "psi" else np.zeros((K, d))
    where = f"batch estimator {spec.name!r} on problem {problem.name!r}"
    for k0, states, actions, rewards, lengths, term in episode_blocks(t, seed64, cell64, N, K):
        for b in range(states.shape[0]):
            batch = Batch(states=states[b], actions=actions[b], rewards=rewards[b], lengths=lengths[b],
                          terminated=term[b], truncated=~term[b], gamma=t.gamma, pi=t.pi, V=V, Q=Q, theta=th,
                          policy=problem.policy, horizon=horizon)
            try:
                res = est.fn(batch)
            except Exception as exc:
                exc.add_note(f"raised by {where} (trial {k0 + b})")
                raise
            arr = as_array(res)
            if arr is None:
                raise PGBenchError(f"{where} returned {type(res).__name__}, not an array")
            if est.returns == "psi":
                if arr.shape != actions[b].shape:
                    raise PGBenchError(f"{where} returned psi of shape {arr.shape}; expected (N, T) = "
                                       f"{actions[b].shape}")
                ok = actions[b] >= 0
                w = arr[ok]
                if not np.all(np.isfinite(w)):
                    raise PGBenchError(f"{where} returned a non-finite psi (NaN or inf) in trial {k0 + b}")
                idx = states[b][:, :-1][ok] * A + actions[b][ok]
                out[k0 + b] = np.bincount(idx, weights=w, minlength=S * A).reshape(S, A)
            else:
                if arr.size != d or arr.ndim not in (1, th.ndim):
                    raise PGBenchError(f"{where} returned a gradient of shape {arr.shape}; expected ({d},)")
                if not np.all(np.isfinite(arr)):
                    raise PGBenchError(f"{where} returned a non-finite gradient (NaN or inf) in trial {k0 + b}")
                out[k0 + b] = arr.reshape(-1)
    return est.returns, out

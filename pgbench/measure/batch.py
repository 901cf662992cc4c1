"""Run Python batch estimators (:mod:`pgbench.estimators.batch`) on a cell's episodes.

Episodes are materialised per block of trials by :func:`pgbench.kernels.mdp._episodes` (the
built-ins' streams, in parallel, into buffers reused from block to block); the user's function
then runs on this thread for trial 0, 1, 2, ... in order, so its output does not depend on the
numba thread count. ``psi`` weights are folded into score weights ``C[s, a]`` in a fixed
order (``np.bincount``).
"""
from __future__ import annotations

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.estimators.batch import BATCH_ESTIMATORS, Batch, as_array
from pgbench.kernels import mdp as K_

BLOCK_BYTES = 32 * 2 ** 20  # padded episode arrays of one block (few large parallel regions: each waits for its slowest thread)


def episode_blocks(t, seed64, cell64, N: int, K: int):
    """Yield ``(k0, states, actions, rewards, lengths, terminated, slot)`` for blocks of trials
    (the arrays are overwritten by the next block: copy what must outlive it)."""
    cap = t.cap
    S, A = t.pi.shape
    block = int(max(1, min(K, BLOCK_BYTES // (N * (4 * cap + 3) * 8))))
    states = np.empty((block, N, cap + 1), np.int64)
    actions = np.empty((block, N, cap), np.int64)
    rewards = np.empty((block, N, cap))
    slot = np.empty((block, N, cap), np.int64)
    lengths = np.empty((block, N), np.int64)
    ended = np.empty((block, N), np.int64)
    for k0 in range(0, K, block):
        nb = min(block, K - k0)
        K_._episodes(seed64, cell64, k0, nb, N, *t.sampler(), t.terminal, cap, A, states, actions, rewards,
                     lengths, ended, slot)
        yield k0, states[:nb], actions[:nb], rewards[:nb], lengths[:nb], ended[:nb].astype(bool), slot[:nb]


def run_batch(spec, problem, th, t, V, Q, seed64, cell64, N: int, K: int, horizon=None):
    """``(kind, out)``: kind ``"psi"`` with score weights (K, S, A) summed over the batch (not yet
    divided by N), or ``"grad"`` with the estimates (K, d)."""
    if spec.name in BATCH_ESTIMATORS:
        fn, returns = BATCH_ESTIMATORS[spec.name].fn, BATCH_ESTIMATORS[spec.name].returns
    else:
        from pgbench.estimators.practice import function
        fn, returns = function(spec)
    S, A = t.pi.shape
    d = int(th.size)
    want_psi = returns == "psi"
    out = np.zeros((K, S, A)) if want_psi else np.zeros((K, d))
    where = f"batch estimator {spec.label!r} on problem {problem.name!r}"
    pi = t.pi.copy()
    pi.setflags(write=False)
    for k0, states, actions, rewards, lengths, term, slot in episode_blocks(t, seed64, cell64, N, K):
        for b in range(states.shape[0]):
            k = k0 + b
            batch = Batch(states=states[b], actions=actions[b], rewards=rewards[b], lengths=lengths[b],
                          terminated=term[b], truncated=~term[b], gamma=t.gamma, pi=pi, V=V, Q=Q, theta=th,
                          policy=problem.policy, horizon=horizon)
            try:
                res = fn(batch)
            except Exception as exc:
                exc.add_note(f"raised by {where} (trial {k})")
                raise
            arr = as_array(res)
            if arr is None:
                raise PGBenchError(f"{where} returned {type(res).__name__}, not an array")
            if want_psi:
                if arr.shape != actions[b].shape:
                    raise PGBenchError(f"{where} returned psi of shape {arr.shape}; expected (N, T) = "
                                       f"{actions[b].shape}")
                # padded steps land in the spare bin S A, dropped: whatever psi holds there is ignored
                C = np.bincount(slot[b].reshape(-1), weights=arr.reshape(-1), minlength=S * A + 1)[:S * A]
                if not np.all(np.isfinite(C)) and not np.all(np.isfinite(arr[actions[b] >= 0])):
                    raise PGBenchError(f"{where} returned a non-finite psi (NaN or inf) in trial {k}")
                out[k] = C.reshape(S, A)
            else:
                if arr.size != d or arr.ndim not in (1, th.ndim):
                    raise PGBenchError(f"{where} returned a gradient of shape {arr.shape}; expected ({d},)")
                if not np.all(np.isfinite(arr)):
                    raise PGBenchError(f"{where} returned a non-finite gradient (NaN or inf) in trial {k}")
                out[k] = arr.reshape(-1)
    return returns, out

"""What each estimator costs on its own.

The estimators of a cell share its episodes and its wall-clock time, so the cell's time says
nothing about which estimator is cheap. :func:`own_seconds_per_episode` times the sampler with
one estimator alone on the cell's shape (problem, theta, batch size N), once per shape and
process, and :func:`add_own_costs` scales it to the cell's ``N K`` episodes: ``own_seconds`` and
``own_mse_x_seconds = mse x own_seconds`` rank estimators by error per unit of their own compute.
The time includes the rollout every estimator needs (the cost of using that estimator alone),
and is the best of ``repeats`` runs, so a busy moment on a shared machine does not count.
"""
from __future__ import annotations

import hashlib
import math
import time

import numpy as np

OWN_COST_EPISODES = 20_000
"""Episodes per timing run at most; a cell with fewer episodes is timed at its own size (timing
more episodes than the cell ran would cost more than the cell itself)."""
OWN_COST_REPEATS = 3

_CACHE: dict = {}


def _key(prob, label: str, N: int, theta, backend: str, trials: int, group=None) -> tuple:
    th = "" if theta is None else hashlib.sha1(np.ascontiguousarray(theta, dtype=float).tobytes()).hexdigest()
    return (getattr(prob, "name", str(prob)), label, int(N), th, backend, int(trials), group)


def own_seconds_per_episode(prob, label: str, N: int, theta=None, backend: str = "cpu",
                            episodes: int = OWN_COST_EPISODES, repeats: int = OWN_COST_REPEATS, group=None) -> float:
    """Seconds per episode of sampling with estimator ``label`` alone, at batch size ``N``
    (cached per shape: problem, estimator, N, theta, backend, the number of timed trials and the
    group size of grouped sampling)."""
    from pgbench.measure.measure import run_cell
    trials = max(2, math.ceil(episodes / N))
    key = _key(prob, label, N, theta, backend, trials, group)
    if key not in _CACHE:
        best = math.inf
        for r in range(max(1, repeats)):
            t0 = time.perf_counter()
            cell = run_cell(prob, [label], N, trials, seed=1_000_003 + r, theta=theta, backend=backend, exact=False,
                            group=group)
            # the sampler's own clock where it keeps one (it leaves out set-up such as exact values)
            secs = cell.seconds if cell.seconds > 0 else time.perf_counter() - t0
            best = min(best, secs / cell.episodes)
        _CACHE[key] = best
    return _CACHE[key]


def add_own_costs(df, prob, N: int, theta=None, backend: str = "cpu", group=None):
    """``df`` (a frame of :func:`pgbench.measure.measure.measure`) with ``own_seconds`` and
    ``own_mse_x_seconds`` per estimator; returns the same frame (columns added in place)."""
    own = [own_seconds_per_episode(prob, lab, N, theta, backend, episodes=min(OWN_COST_EPISODES, int(ep)),
                                   group=group) * float(ep)
           for lab, ep in zip(df["estimator"], df["episodes"])]
    df["own_seconds"] = own
    df["own_mse_x_seconds"] = df["mse"].to_numpy(float) * np.asarray(own)
    return df

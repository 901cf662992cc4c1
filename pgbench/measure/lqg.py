"""One measurement cell on a linear-Gaussian control problem (``measure()`` dispatches here on
``problem.kind == "lqg"``): K trials of batch-N estimates on common random numbers, each
estimator against the exact gradient of :mod:`pgbench.exact.lqg`."""
from __future__ import annotations

import time

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.measure.cell import Cell


def sample_lqg(problem, names, params, N: int, K: int, seed: int, cell: int, theta=None) -> np.ndarray:
    """K trials of batch-N estimates of each named LQG estimator, (K, len(names), d), on common
    random numbers: :func:`pgbench.kernels.lqg.sample_lqg` given the episode length and the exact
    value's matrices at theta."""
    from pgbench.exact.lqg import exact_lqg, sampling_steps
    from pgbench.kernels import lqg as kernel
    th = problem.resolve_theta(theta)
    gt = exact_lqg(problem, th)
    return kernel.sample_lqg(problem, names, params, N, K, seed, cell, th, sampling_steps(problem, th), gt.P, gt.c)


def run_lqg_cell(prob, specs, batch: int, trials: int, seed: int, theta, cell, exact: bool = True):
    from dataclasses import replace

    from pgbench.exact.lqg import exact_lqg, sampling_steps
    from pgbench.kernels.rng import cell_key
    for s in specs:
        if s.info.target != "lqg":
            raise PGBenchError(f"estimator {s.name} does not apply to an lqg problem")
    th = prob.resolve_theta(theta)
    if theta is not None:
        prob = replace(prob, theta=th)
    cell = cell_key(prob.name, th, batch) if cell is None else cell
    names, params = [s.name for s in specs], [s.p for s in specs]
    sample_lqg(prob, names, params, 2, 1, seed, cell)  # compile outside the timing
    t0 = time.perf_counter()
    est = sample_lqg(prob, names, params, batch, trials, seed, cell)
    secs = time.perf_counter() - t0
    gt = exact_lqg(prob, th)
    extras = {}
    if prob.horizon is None:
        # every episode runs to the cap: the J beyond it is the truncation (reported, not hidden)
        cap = sampling_steps(prob, th)
        extras["max_steps"] = cap
        extras["truncated_J"] = gt.J - exact_lqg(prob, th, horizon=cap).J
    if exact:
        from pgbench.exact.lqg_moments import exact_columns
        extras["exact_moments"] = exact_columns(prob, specs, batch, th)
    targets = np.tile(gt.grad.reshape(1, -1), (len(specs), 1))
    return Cell(prob, specs, est, targets, batch, trials, seed, secs, batch * trials, th.shape, extras)

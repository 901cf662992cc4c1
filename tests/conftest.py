"""Shared builders for the core tests: small random problems with fixed seeds, and the
Bonferroni critical value the statistical checks use."""
from __future__ import annotations

import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(__file__))  # lets test modules import tests/naive.py
# commands' stderr is compared with "" here, and whether a command compiles depends on the order
# tests run in: no "compiling kernels" notice (tests/test_cli_output.py turns it on)
os.environ.setdefault("PGBENCH_COMPILE_NOTICE", "0")

from pgbench import MDPProblem, TabularMDP, make  # noqa: E402


def garnet(seed: int, S: int = 6, A: int = 3, b: int = 3, gamma: float = 0.9, horizon: int = 0) -> MDPProblem:
    return make(f"garnet:S={S},A={A},b={b},seed={seed},gamma={gamma},horizon={horizon}")


def random_theta(problem: MDPProblem, seed: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(1000 + seed).normal(scale=scale, size=problem.policy.theta_shape)


def linear_version(problem: MDPProblem, seed: int, d: int = 4) -> MDPProblem:
    """The same MDP under a linear-softmax policy with random features and random theta."""
    rng = np.random.default_rng(2000 + seed)
    mdp = problem.mdp
    return MDPProblem.linear(mdp, rng.normal(size=(mdp.S, mdp.A, d)), theta=rng.normal(size=d))


def random_terminal_mdp(seed: int, S: int = 7, A: int = 3, n_terminal: int = 2, gamma: float = 1.0,
                        horizon=None) -> TabularMDP:
    """Dense random MDP whose last ``n_terminal`` states are terminal; every non-terminal (s, a)
    sends at least 0.2 of its mass to a terminal state, so episodes end with probability 1 and
    ``gamma = 1`` is allowed unbounded. Terminal rows and rewards are random on purpose: they
    must not matter."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    live = S - n_terminal
    P[:live, :, :live] *= 0.8 / P[:live, :, :live].sum(axis=2, keepdims=True)
    P[:live, :, live:] = 0.2 * rng.dirichlet(np.ones(n_terminal), size=(live, A))
    R = rng.normal(size=(S, A))
    rho0 = np.zeros(S)
    rho0[:live] = rng.dirichlet(np.ones(live))
    terminal = np.zeros(S, bool)
    terminal[live:] = True
    return TabularMDP.from_dense(P, R, rho0, gamma, horizon=horizon, terminal=terminal, name=f"term{seed}")


def run_cli(capsys, *argv):
    """``pgbench.cli.main(argv)`` in-process: (exit status, stdout, stderr); usage errors exit via
    SystemExit."""
    from pgbench.cli import main
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def z_crit(m: int, alpha: float = 1e-5) -> float:
    """Two-sided Bonferroni critical value for m comparisons, never below 5."""
    return max(5.0, float(stats.norm.isf(alpha / (2 * max(m, 1)))))


def capture_batches(problem, estimators, N: int, K: int, seed: int = 0):
    """``sample_mdp(problem, estimators + [a capturing batch estimator])``: the result and copies
    of the K batches (pgbench.Batch) of the cell's episodes, in trial order."""
    from dataclasses import replace

    from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
    from pgbench.measure.engine import sample_mdp
    seen = []

    def capture(b):
        seen.append(replace(b, states=b.states.copy(), actions=b.actions.copy(), rewards=b.rewards.copy(),
                            lengths=b.lengths.copy(), terminated=b.terminated.copy(), truncated=b.truncated.copy()))
        return np.zeros(b.actions.shape)

    register_batch_estimator("t_capture_batches", unbiased=False, replace=True)(capture)
    try:
        res = sample_mdp(problem, list(estimators) + ["t_capture_batches"], N=N, K=K, seed=seed)
    finally:
        unregister_batch_estimator("t_capture_batches")
    return res, seen

"""Bring your own estimator in plain Python: a function of a whole batch of episodes.

``register_batch_estimator(name, unbiased, returns="psi" | "grad")`` decorates ``f(batch)``,
where ``batch`` is a :class:`Batch` of N episodes as padded NumPy arrays. ``returns="psi"``:
f gives per-step weights ``psi`` (N, T) and the estimate is
``(1/N) sum_i sum_t psi[i, t] grad log pi(a_t|s_t)``; ``returns="grad"``: f gives the estimate
itself (a vector of theta's size, e.g. from autograd of the user's surrogate loss).

The episodes are sampled by the numba kernels on the built-ins' streams (common random
numbers), one trial at a time; f runs on the calling thread, trial after trial, so its results
do not depend on the thread count. Batch-level steps (advantage normalisation, a critic fitted
on the batch, clipping) are expressible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgbench.arrays import as_array  # noqa: F401  (re-exported: what user functions may return)
from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import MDP_ESTIMATORS, EstimatorInfo, EstimatorSpec
from pgbench.estimators.registry import BATCH_CODE, BATCH_ESTIMATORS, USER_ESTIMATORS
from pgbench.estimators.returns import discounted_cumsum  # noqa: F401  (re-exported for users' batch estimators)

RETURNS = ("psi", "grad")


@dataclass(frozen=True)
class Batch:
    """N episodes of one trial, padded to the episode cap T (the horizon, or the sampling cap).

    ``states`` (N, T+1) int64, -1 after the last state (``states[i, lengths[i]]`` is the state
    the episode ended in); ``actions`` (N, T) int64, -1 after the last step; ``rewards`` (N, T)
    float64, 0 after the last step; ``lengths`` (N,); ``terminated`` (N,) bool: it entered a
    terminal state; ``truncated`` (N,) bool: cut by the horizon or the cap. ``gamma``; ``pi``
    (S, A); the exact oracle ``V`` (rows per step, a zero row after a finite horizon; one row
    when unbounded) and ``Q`` (likewise). ``theta`` and ``policy`` (``policy.probs(theta)``,
    ``policy.score_table(theta)``, ``policy.contract(theta, C)``) for estimators that return
    the gradient themselves. The arrays are read-only and reused for the next batch: copy what
    must outlive the call.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    lengths: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    gamma: float
    pi: np.ndarray
    V: np.ndarray
    Q: np.ndarray
    theta: np.ndarray
    policy: object
    horizon: object = None  # T for a finite horizon, None when unbounded
    group: np.ndarray = None  # (N,) int64: each episode's group (grouped sampling), None when ungrouped
    theta_ref: np.ndarray = None  # the reference policy's parameters (KL penalties), where the problem has one
    log_pi_ref: np.ndarray = None  # (S, A) log pi_ref(a|s), where the problem has a reference policy

    @property
    def N(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """(N, T) bool: True on the steps the episode took."""
        return self.actions >= 0

    def discount(self) -> np.ndarray:
        """``gamma^t`` for t < T, shape (T,)."""
        return self.gamma ** np.arange(self.actions.shape[1], dtype=np.float64)

    def reward_to_go(self) -> np.ndarray:
        """``G_t = sum_{k >= t} gamma^(k-t) r_k`` (N, T), 0 after the last step."""
        return discounted_cumsum(self.rewards, self.gamma)

    def values(self):
        """``V(s_t)`` (N, T+1) and ``Q(s_t, a_t)`` (N, T) along the episodes, 0 off the episode."""
        T = self.actions.shape[1]
        rows_v = np.minimum(np.arange(T + 1), self.V.shape[0] - 1)
        rows_q = np.minimum(np.arange(T), self.Q.shape[0] - 1)
        s = np.maximum(self.states, 0)
        a = np.maximum(self.actions, 0)
        v = np.where(self.states >= 0, self.V[rows_v[None, :], s], 0.0)
        q = np.where(self.actions >= 0, self.Q[rows_q[None, :], s[:, :T], a], 0.0)
        return v, q


@dataclass(frozen=True)
class BatchEstimator:
    name: str
    fn: object
    unbiased: bool
    returns: str
    doc: str

    def spec(self, params: dict):
        if params:
            raise PGBenchError(f"batch estimator {self.name} takes no parameters; got {', '.join(params)}")
        info = EstimatorInfo(self.name, self.doc, "yes" if self.unbiased else "no", target="mdp", code=BATCH_CODE)
        return EstimatorSpec(info, ())


def register_batch_estimator(name: str, unbiased: bool, returns: str = "psi", doc: str = "user batch estimator",
                             replace: bool = False):
    """Decorator: register a Python function of a :class:`Batch` under ``name``.

    ``returns="psi"``: f returns per-step weights (N, T); ``returns="grad"``: the gradient
    estimate (theta's size). ``unbiased`` is your claim; pgbench tests it against the exact gradient.
    NumPy arrays, torch tensors and JAX arrays are accepted.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise PGBenchError(f"an estimator name must be an identifier; got {name!r}")
    if name in MDP_ESTIMATORS:
        raise PGBenchError(f"{name!r} is a built-in estimator; choose another name")
    if returns not in RETURNS:
        raise PGBenchError(f"returns must be 'psi' or 'grad'; got {returns!r}")

    def deco(fn):
        if not callable(fn):
            raise PGBenchError(f"batch estimator {name!r} must be callable (got {type(fn).__name__})")
        if (name in BATCH_ESTIMATORS or name in USER_ESTIMATORS) and not replace:
            raise PGBenchError(f"estimator {name!r} is already registered (pass replace=True to redefine it)")
        USER_ESTIMATORS.pop(name, None)
        BATCH_ESTIMATORS[name] = BatchEstimator(name, fn, bool(unbiased), returns, doc)
        return fn

    return deco


def unregister_batch_estimator(name: str) -> None:
    BATCH_ESTIMATORS.pop(name, None)

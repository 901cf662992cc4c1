"""Bring your own estimator in plain Python: a function of a whole batch of episodes.

``register_batch_estimator(name, unbiased, returns="psi" | "grad")`` decorates ``f(batch)``,
where ``batch`` is a :class:`Batch` of N episodes as NumPy arrays padded to the batch's longest
episode. ``returns="psi"``:
f gives per-step weights ``psi`` (N, T) and the estimate is
``(1/N) sum_i sum_t psi[i, t] grad log pi(a_t|s_t)``; ``returns="grad"``: f gives the estimate
itself (a vector of theta's size, e.g. from autograd of the user's surrogate loss).

The episodes are sampled by the numba kernels on the built-ins' streams (common random
numbers), one trial at a time; f runs on the calling thread, trial after trial, so its results
do not depend on the thread count. Batch-level steps (advantage normalisation, a critic fitted
on the batch, clipping) are expressible.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from pgbench.arrays import as_array  # noqa: F401  (re-exported: what user functions may return)
from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import MDP_ESTIMATORS, EstimatorInfo, EstimatorSpec
from pgbench.estimators.registry import BATCH_CODE, BATCH_ESTIMATORS, USER_ESTIMATORS
from pgbench.estimators.returns import discounted_cumsum  # noqa: F401  (re-exported for users' batch estimators)

RETURNS = ("psi", "grad")


@dataclass(frozen=True)
class Batch:
    """N episodes of one trial, padded to T steps: the longest episode of the batch (pgbench hands
    every estimator batches trimmed so, see :meth:`trim`), at most the episode cap (the horizon,
    or the sampling cap of an unbounded problem).

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
    def T(self) -> int:
        """Steps of the padded arrays (``actions.shape[1]``): the longest episode once trimmed."""
        return int(self.actions.shape[1])

    def trim(self) -> "Batch":
        """This batch with its arrays cut to its longest episode, ``T = max(lengths)`` (views, no copy).

        The batches pgbench passes to an estimator are already trimmed, trial by trial: on a
        problem whose sampling cap is far beyond its typical episode (gridworld: cap 449, episodes
        of about 60 steps) the padding is what a NumPy estimator spent its time on. Episodes
        shorter than the longest one are still padded (``rewards`` 0, ``actions`` and ``states``
        -1): statistics over the steps (a mean or std for advantage normalisation, a loss averaged
        over (N, T)) must use :attr:`mask`, or the padding enters them."""
        L = int(self.lengths.max()) if self.lengths.size else 0
        if self.actions.shape[1] == L:
            return self
        return dataclasses.replace(self, states=self.states[:, :L + 1], actions=self.actions[:, :L],
                                   rewards=self.rewards[:, :L])

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


ORACLE_FIELDS = ("V", "Q")
"""The fields of a :class:`Batch` that no agent has: the exact value tables."""


@dataclass(frozen=True)
class BatchEstimator:
    name: str
    fn: object
    unbiased: bool
    returns: str
    doc: str
    reads: tuple = ()  # oracle fields declared by the user (register_batch_estimator(reads=...))
    oracle_declared: object = None  # True / False given by the user, None: declared reads and what is seen
    seen: set = field(default_factory=set, compare=False)  # oracle fields the function was seen reading

    @property
    def oracle(self) -> str:
        """The oracle fields it reads (``"V"``, ``"Q"``, ``"V,Q"``), ``""`` for none: what the user
        declared, plus what pgbench saw it read on a first trial, unless ``oracle=False`` was given."""
        if self.oracle_declared is False:
            return ""
        got = [f for f in ORACLE_FIELDS if f in self.reads or f in self.seen]
        if not got and self.oracle_declared:
            return "V,Q"
        return ",".join(got)

    def spec(self, params: dict):
        if params:
            raise PGBenchError(f"batch estimator {self.name} takes no parameters; got {', '.join(params)}")
        info = EstimatorInfo(self.name, self.doc, "yes" if self.unbiased else "no", target="mdp", code=BATCH_CODE,
                             oracle=self.oracle)
        return EstimatorSpec(info, ())


class WatchedBatch(Batch):
    """A :class:`Batch` that notes which oracle fields (``V``, ``Q``) are read, directly or through
    :meth:`Batch.values`: pgbench hands one to a user's function on the first trial of a cell."""

    def __getattribute__(self, key):
        if key in ORACLE_FIELDS:
            object.__getattribute__(self, "__dict__").setdefault("_seen", set()).add(key)
        return object.__getattribute__(self, key)


def register_batch_estimator(name: str, unbiased: bool, returns: str = "psi", doc: str = "user batch estimator",
                             replace: bool = False, reads: tuple = (), oracle=None):
    """Decorator: register a Python function of a :class:`Batch` under ``name``.

    ``returns="psi"``: f returns per-step weights (N, T); ``returns="grad"``: the gradient
    estimate (theta's size). ``unbiased`` is your claim; pgbench tests it against the exact gradient.
    NumPy arrays, torch tensors and JAX arrays are accepted.

    ``reads=("V",)`` (or ``("Q",)``, ``("V", "Q")``) or ``oracle=True`` declares that f reads the
    exact ``batch.V`` / ``batch.Q`` (directly or through ``batch.values()``): such an estimator is
    classed ``oracle``, as the built-in ``gae`` is, and reports rank it among the references, not
    the practical estimators. Undeclared reads are seen on the first trial of each cell and class
    it the same way; ``oracle=False`` keeps it ``practical`` (or ``biased``) whatever it reads.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise PGBenchError(f"an estimator name must be an identifier; got {name!r}")
    if name in MDP_ESTIMATORS:
        raise PGBenchError(f"{name!r} is a built-in estimator; choose another name")
    if returns not in RETURNS:
        raise PGBenchError(f"returns must be 'psi' or 'grad'; got {returns!r}")
    if isinstance(reads, str):
        reads = (reads,)
    try:
        reads = tuple(reads)
    except TypeError:
        raise PGBenchError(f"reads must be a tuple of {', '.join(ORACLE_FIELDS)}; got {reads!r}") from None
    bad = [r for r in reads if r not in ORACLE_FIELDS]
    if bad:
        raise PGBenchError(f"reads names what the estimator reads of the exact oracle ({', '.join(ORACLE_FIELDS)}); "
                           f"got {bad[0]!r}")
    if oracle not in (None, True, False):
        raise PGBenchError(f"oracle must be True, False or None; got {oracle!r}")
    if oracle is False and reads:
        raise PGBenchError(f"batch estimator {name!r}: reads={reads} contradicts oracle=False")

    def deco(fn):
        if not callable(fn):
            raise PGBenchError(f"batch estimator {name!r} must be callable (got {type(fn).__name__})")
        if (name in BATCH_ESTIMATORS or name in USER_ESTIMATORS) and not replace:
            raise PGBenchError(f"estimator {name!r} is already registered (pass replace=True to redefine it)")
        USER_ESTIMATORS.pop(name, None)
        BATCH_ESTIMATORS[name] = BatchEstimator(name, fn, bool(unbiased), returns, doc, reads, oracle)
        return fn

    return deco


def unregister_batch_estimator(name: str) -> None:
    BATCH_ESTIMATORS.pop(name, None)

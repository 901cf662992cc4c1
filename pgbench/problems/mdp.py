"""The tabular MDP type (the contract's :ref:`contract-mdps`).

Transitions are stored in a fixed-width sparse form: for every (s, a) the K possible
next states ``next_idx[s, a, :K]`` with probabilities ``next_prob[s, a, :K]`` (padding has
probability 0). Dense ``P`` is the special case K = S; garnets with b successors use K = b,
which is what lets ``garnet:S=100000`` exist at all and what the sampling kernels want.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pgbench import inputs
from pgbench.errors import PGBenchError

_PROB_ATOL = 1e-9
_DENSE_LIMIT = 50_000_000  # entries of a dense P we are willing to materialise

NOISE_KINDS = ("none", "gaussian", "uniform")


def _as_float(name: str, x, shape: Optional[tuple] = None) -> np.ndarray:
    """Real, finite float64 entries (complex, bool, strings refused: numpy would convert them silently)."""
    return inputs.real_array(name, x, shape)


def _bounded(name: str, x: np.ndarray) -> None:
    """Rewards beyond :data:`pgbench.inputs.MAX_REWARD` overflow returns or their squares."""
    big = np.abs(x) > inputs.MAX_REWARD
    if np.any(big):
        i = tuple(int(j) for j in np.argwhere(big)[0])
        raise PGBenchError(f"{name} has an entry of magnitude {abs(x[i]):.3g} at index {i}: returns and their "
                           f"variances would overflow; rescale it below {inputs.MAX_REWARD:.0e}")


def _noise_scale(name: str, x, shape: tuple) -> np.ndarray:
    """A scalar or an (S, A) array of noise scales."""
    arr = _as_float(name, x)
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise PGBenchError(f"{name} has shape {arr.shape}, expected a scalar or {shape}") from None
    return arr.copy()


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP ``(P, R, rho0, gamma, horizon, terminal, reward noise)``; immutable, validated.

    Build it with :meth:`from_dense` (a full ``P[s, a, s']``) or :meth:`from_sparse`.

    Conventions (the contract's :ref:`contract-ground-truth`): ``J = E[sum_{t<T} gamma^t r_t]``; entering a terminal state
    ends the episode; ``horizon=None`` means unbounded, and sampling such a problem stops at
    ``max_steps`` (the exact truncated mass is reported by :func:`pgbench.exact.truncation`).
    """

    next_idx: np.ndarray  # (S, A, K) int64
    next_prob: np.ndarray  # (S, A, K) float64
    R: np.ndarray  # (S, A) mean reward
    rho0: np.ndarray  # (S,)
    gamma: float
    horizon: Optional[int] = None
    terminal: np.ndarray = None  # (S,) bool
    reward_noise: str = "none"
    reward_scale: np.ndarray = None  # (S, A): std (gaussian) or full width (uniform)
    max_steps: Optional[int] = None
    name: str = "mdp"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dense(cls, P, R, rho0, gamma, horizon=None, terminal=None, reward_std=None,
                   reward_width=None, max_steps=None, name="mdp") -> "TabularMDP":
        shape = np.shape(P)
        if len(shape) == 3:
            # P itself, the mask, the stable argsort (int64) and the gathered probabilities
            inputs.require_memory(4 * 8 * float(np.prod(shape, dtype=float)), f"a dense P of shape {shape}",
                                  "build large problems in the sparse form (TabularMDP.from_sparse)")
        P = _as_float("P", P)  # numeric and finite; error indices refer to P[s, a, s'] as given
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise PGBenchError(f"P must have shape (S, A, S); got {P.shape}")
        S, A, _ = P.shape
        if S < 1 or A < 1:
            raise PGBenchError(f"P must have at least one state and action; got shape {P.shape}")
        # keep only the successors that can occur: the kernels sample among K entries per (s, a)
        nz = P != 0  # NaN and negative entries stay, so validation still sees them
        K = max(1, int(nz.sum(axis=2).max()))
        order = np.argsort(~nz, axis=2, kind="stable")[:, :, :K]
        idx = order.astype(np.int64)
        prob = np.take_along_axis(P, order, axis=2)
        return cls.from_sparse(idx, prob, R, rho0, gamma, horizon=horizon, terminal=terminal,
                               reward_std=reward_std, reward_width=reward_width,
                               max_steps=max_steps, name=name)

    @classmethod
    def from_sparse(cls, next_idx, next_prob, R, rho0, gamma, horizon=None, terminal=None,
                    reward_std=None, reward_width=None, max_steps=None, name="mdp") -> "TabularMDP":
        next_prob = _as_float("P", next_prob)
        if next_prob.ndim != 3:
            raise PGBenchError(f"next_prob must have shape (S, A, K); got {next_prob.shape}")
        S, A, K = next_prob.shape
        if S < 1 or A < 1 or K < 1:
            raise PGBenchError(f"P must have at least one state, action and successor; got shape {next_prob.shape}")
        try:
            next_idx = np.asarray(next_idx)
        except Exception as exc:  # pragma: no cover - defensive
            raise PGBenchError(f"next_idx must be an integer array: {exc}") from None
        if next_idx.shape != (S, A, K):
            raise PGBenchError(f"next_idx has shape {next_idx.shape}, expected {(S, A, K)}")
        if not np.issubdtype(next_idx.dtype, np.integer):
            raise PGBenchError("next_idx must hold integers")
        next_idx = next_idx.astype(np.int64)
        if next_idx.min() < 0 or next_idx.max() >= S:
            raise PGBenchError(f"next_idx has a state outside 0..{S - 1}")
        R = _as_float("R", R, (S, A))
        _bounded("R", R)
        rho0 = _as_float("rho0", rho0, (S,))
        gamma = _check_gamma(gamma)
        horizon = _check_horizon(horizon)
        if terminal is None:
            terminal = np.zeros(S, dtype=bool)
        else:
            terminal = np.asarray(terminal)
            if terminal.shape != (S,):
                raise PGBenchError(f"terminal has shape {terminal.shape}, expected {(S,)}")
            if terminal.dtype != bool:
                if terminal.dtype.kind not in "iuf" or not np.all(np.isin(terminal, (0, 1))):
                    raise PGBenchError("terminal must be boolean (0/1)")
                terminal = terminal.astype(bool)
            else:
                terminal = terminal.copy()
        if reward_std is not None and reward_width is not None:
            raise PGBenchError("give reward_std (gaussian noise) or reward_width (uniform noise), not both")
        noise, scale = "none", np.zeros((S, A))
        if reward_std is not None:
            noise, scale = "gaussian", _noise_scale("reward_std", reward_std, (S, A))
        elif reward_width is not None:
            noise, scale = "uniform", _noise_scale("reward_width", reward_width, (S, A))
        _bounded("reward noise scale", scale)
        if np.any(scale < 0):
            raise PGBenchError("reward noise scale must be non-negative")
        # probabilities: non-negative rows summing to one
        if np.any(next_prob < 0):
            s, a, k = np.argwhere(next_prob < 0)[0]
            raise PGBenchError(f"P has a negative entry at (s={s}, a={a}, s'={next_idx[s, a, k]}): {next_prob[s, a, k]}")
        sums = next_prob.sum(axis=2)
        bad = np.abs(sums - 1.0) > _PROB_ATOL
        if np.any(bad):
            s, a = np.argwhere(bad)[0]
            raise PGBenchError(f"P[s={s}, a={a}, :] sums to {sums[s, a]:.12g}, not 1")
        if np.any(rho0 < 0) or abs(rho0.sum() - 1.0) > _PROB_ATOL:
            raise PGBenchError(f"rho0 must be a probability vector (non-negative, summing to 1); it sums to {rho0.sum():.12g}")
        if np.any(rho0[terminal] > 0):
            s = int(np.flatnonzero(terminal & (rho0 > 0))[0])
            raise PGBenchError(f"rho0 puts mass on terminal state {s}")
        if max_steps is not None:
            max_steps = inputs.integer("max_steps", max_steps, 1)
        # exact normalisation within tolerance; rows already within rounding of 1 are kept as they
        # are, so that normalising is idempotent (a saved and reloaded problem is bit-identical)
        renorm = np.abs(sums - 1.0) > 2 * K * np.finfo(np.float64).eps
        next_prob = np.where(renorm[..., None], next_prob / sums[..., None], next_prob)
        mdp = cls(next_idx=next_idx, next_prob=next_prob, R=R, rho0=rho0, gamma=gamma, horizon=horizon,
                  terminal=terminal, reward_noise=noise, reward_scale=scale, max_steps=max_steps, name=name)
        _readonly(next_idx, next_prob, R, rho0, terminal, scale)
        mdp._check_termination()
        if horizon is None and max_steps is None:
            object.__setattr__(mdp, "max_steps", mdp.default_max_steps())
        return mdp

    # ------------------------------------------------------------------ properties
    @property
    def S(self) -> int:
        return self.next_prob.shape[0]

    @property
    def A(self) -> int:
        return self.next_prob.shape[1]

    @property
    def K(self) -> int:
        return self.next_prob.shape[2]

    @property
    def unbounded(self) -> bool:
        return self.horizon is None

    @property
    def episode_cap(self) -> int:
        """Steps a sampled episode may take at most (the horizon, or the cap)."""
        return self.horizon if self.horizon is not None else self.max_steps

    @property
    def P(self) -> np.ndarray:
        """Dense ``P[s, a, s']`` (refused for problems too large to materialise)."""
        if "P" not in self._cache:
            S, A = self.S, self.A
            if S * A * S > _DENSE_LIMIT:
                raise PGBenchError(f"dense P would have {S * A * S} entries; use the sparse form (next_idx, next_prob)")
            P = np.zeros((S, A, S))
            s_i = np.repeat(np.arange(S), A * self.K)
            a_i = np.tile(np.repeat(np.arange(A), self.K), S)
            np.add.at(P, (s_i, a_i, self.next_idx.ravel()), self.next_prob.ravel())
            P.setflags(write=False)
            self._cache["P"] = P
        return self._cache["P"]

    def transition_matrix(self, pi: np.ndarray):
        """``P_pi[s, s'] = sum_a pi(a|s) P[s, a, s']`` as a scipy CSR matrix."""
        import scipy.sparse as sp
        S, A, K = self.next_prob.shape
        rows = np.repeat(np.arange(S), A * K)
        vals = (pi[:, :, None] * self.next_prob).ravel()
        M = sp.csr_matrix((vals, (rows, self.next_idx.ravel())), shape=(S, S))
        M.sum_duplicates()
        return M

    def reward_variance(self) -> np.ndarray:
        """Per-(s, a) variance of the reward noise."""
        if self.reward_noise == "gaussian":
            return self.reward_scale ** 2
        if self.reward_noise == "uniform":
            return self.reward_scale ** 2 / 12.0
        return np.zeros((self.S, self.A))

    def default_max_steps(self) -> int:
        """Cap for sampling an unbounded problem: discounting leaves < 1e-10 of the return beyond it."""
        if self.gamma == 0.0:  # only step 0 counts (and log(0) would warn)
            return 10
        if self.gamma < 1.0:
            return int(min(100_000, max(10, np.ceil(np.log(1e-10) / np.log(self.gamma)))))
        return 10_000

    # ------------------------------------------------------------------ checks
    def _check_termination(self) -> None:
        """Unbounded with gamma = 1 needs every non-terminal state to reach a terminal one.

        Softmax policies put positive probability on every action, so the reachability
        argument does not depend on theta.
        """
        if self.horizon is not None or self.gamma < 1.0:
            return
        import scipy.sparse as sp
        from scipy.sparse.csgraph import breadth_first_order
        S = self.S
        if not self.terminal.any():
            raise PGBenchError("unbounded horizon with gamma = 1 and no terminal state: I - gamma P_pi is singular "
                               "(the return is infinite); use gamma < 1, a finite horizon, or terminal states")
        rows = np.repeat(np.arange(S), self.A * self.K)
        mask = self.next_prob.ravel() > 0
        # reverse graph: from terminal states walk edges backwards
        G = sp.csr_matrix((np.ones(mask.sum()), (self.next_idx.ravel()[mask], rows[mask])), shape=(S + 1, S + 1))
        sink = np.flatnonzero(self.terminal)
        G = G.tolil()
        for t in sink:
            G[S, t] = 1.0
        order = breadth_first_order(G.tocsr(), S, directed=True, return_predecessors=False)
        reach = np.zeros(S + 1, dtype=bool)
        reach[order] = True
        stuck = np.flatnonzero(~reach[:S] & ~self.terminal)
        if stuck.size:
            raise PGBenchError(f"unbounded horizon with gamma = 1, but state {stuck[0]} cannot reach a terminal state: "
                               "I - gamma P_pi is singular (the episode need not end)")

    def __repr__(self) -> str:
        hz = "unbounded" if self.horizon is None else f"T={self.horizon}"
        return f"TabularMDP({self.name!r}, S={self.S}, A={self.A}, gamma={self.gamma}, {hz})"


def _check_gamma(gamma) -> float:
    g = inputs.real_scalar("gamma", gamma)
    if g < 0.0 or g > 1.0:
        raise PGBenchError(f"gamma must be in [0, 1]; got {gamma!r}")
    return g


def _check_horizon(horizon) -> Optional[int]:
    if horizon is None:
        return None
    if isinstance(horizon, (float, np.floating)) and float(horizon).is_integer():
        horizon = int(horizon)  # 20.0 from a file or a computation is the integer 20
    return inputs.integer("horizon (a positive integer, or None for unbounded)", horizon, 1)

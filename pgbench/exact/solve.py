"""Exact ground truth for tabular MDPs (the contract's :ref:`contract-ground-truth`): no sampling anywhere.

Finite horizon T: backward recursion ``V_T = 0, Q_t = R + gamma P V_{t+1}, V_t = sum_a pi Q_t``
and forward visitation ``d_0 = rho0, d_{t+1} = P_pi^T d_t`` (terminal states absorb, so
``d_t(s) = Pr(s_t = s, episode still running)``).

Unbounded: ``V = (I - gamma P_pi)^{-1} r_pi`` on non-terminal states and the discounted
visitation ``d = rho0^T (I - gamma P_pi)^{-1}`` (it carries the gamma^t weights).

Policy-gradient theorem: ``grad J = sum_t gamma^t sum_s d_t(s) sum_a pi(a|s) g(s,a) A_t(s,a)``
(Sutton et al. 2000), evaluated as score weights ``C[s,a]`` contracted by the policy.
Dense linear algebra (one LU factorisation serves V and d) for small S; scipy.sparse with GMRES
for large S. ``P_pi`` is built from the fixed-width sparse form, never from a dense ``P``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pgbench import inputs
from pgbench.errors import PGBenchError, PGBenchWarning
from pgbench.exact.limits import STEP_LIMIT
from pgbench.exact.lqg import exact_lqg
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.problem import MDPProblem

DENSE_MAX_S = 1500  # "auto" solves densely up to this many states
DENSE_MAX_ENTRIES = 25_000_000  # method="dense" refuses a P_pi larger than this (200 MB)


def _gather_next(mdp: TabularMDP, V: np.ndarray) -> np.ndarray:
    """``(P V)[s, a] = sum_s' P[s, a, s'] V[s']`` from the fixed-width sparse form."""
    return np.einsum("sak,sak->sa", mdp.next_prob, V[mdp.next_idx])


_SINGULAR = ("I - gamma P_pi is singular: the episode need not end (use gamma < 1, "
             "a finite horizon, or terminal states every state can reach)")


class _Dynamics:
    """``P_pi`` with the rows and columns of terminal states zeroed, built once per (mdp, pi).

    Built straight from the fixed-width sparse form (never from a dense ``P``): a dense array
    for the dense method, a CSR matrix for the sparse one, and a CSR matrix for stepping
    distributions forward whenever that is cheaper than a dense matrix-vector product.
    Terminal rows and columns are zero, so ``(I - gamma P_pi) x = b`` is the identity on terminal
    states: solving it on all states gives the non-terminal solution and ``x = b = 0`` on terminals.
    """

    def __init__(self, mdp: TabularMDP, pi: np.ndarray, method: str):
        if method == "auto":
            method = "dense" if mdp.S <= DENSE_MAX_S else "sparse"
        if method not in ("dense", "sparse"):
            raise PGBenchError(f"method must be 'auto', 'dense' or 'sparse'; got {method!r}")
        S, A, K = mdp.next_prob.shape
        if method == "dense" and S * S > DENSE_MAX_ENTRIES:
            raise PGBenchError(f"dense P_pi would have {S}x{S} entries; use method='sparse' for S > {DENSE_MAX_S}")
        self.method = method
        self.mdp = mdp
        self.live = ~mdp.terminal
        w = pi[:, :, None] * mdp.next_prob
        if mdp.terminal.any():
            # terminal states earn nothing after entry: drop their rows and the columns into them
            w = w * (self.live[:, None, None] & self.live[mdp.next_idx])
        self._lu = None
        self._csr = self._csr_T = None
        if method == "sparse" or (S >= 256 and S * A * K * 4 <= S * S):
            # duplicate column indices within a row are allowed: every product below sums them
            self._csr = sp.csr_matrix((w.ravel(), mdp.next_idx.ravel(), np.arange(0, S * A * K + 1, A * K)),
                                      shape=(S, S))
        if method == "dense":
            flat = (np.arange(S)[:, None, None] * S + mdp.next_idx).ravel()
            self.P_pi = np.bincount(flat, weights=w.ravel(), minlength=S * S).reshape(S, S)
        else:
            self.P_pi = self._csr

    def step_forward(self, d: np.ndarray) -> np.ndarray:
        """``P_pi^T d``: one step of a (sub-)distribution over states."""
        if self._csr is not None:
            if self._csr_T is None:
                self._csr_T = self._csr.T  # a CSC view, made once (building it costs more than a product)
            return self._csr_T @ d
        return d @ self.P_pi

    def solve(self, gamma: float, b: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Solve ``(I - gamma P_pi) x = b`` (or its transpose) on non-terminal states (x = 0 on terminal ones)."""
        b = np.where(self.live, b, 0.0)
        if self.method == "dense":
            if self._lu is None or self._lu[0] != gamma:
                lhs = -gamma * self.P_pi
                lhs.flat[::lhs.shape[0] + 1] += 1.0
                lu, piv = sla.lu_factor(lhs, overwrite_a=True, check_finite=False)
                if not np.all(np.diag(lu) != 0):
                    raise PGBenchError(_SINGULAR)
                self._lu = (gamma, (lu, piv))
            return sla.lu_solve(self._lu[1], b, trans=1 if transpose else 0, check_finite=False)
        M = self.P_pi.T if transpose else self.P_pi
        S = self.mdp.S
        op = spla.LinearOperator((S, S), matvec=lambda x: x - gamma * (M @ x), dtype=np.float64)
        x, info = spla.gmres(op, b, rtol=1e-13, atol=0.0, restart=60, maxiter=200)
        res = np.linalg.norm(op.matvec(x) - b)
        if info != 0 or not res <= 1e-9 * max(1.0, np.linalg.norm(b)):
            lhs = (sp.identity(S, format="csc") - gamma * M).tocsc()
            x = spla.spsolve(lhs, b)
            if not np.all(np.isfinite(x)):
                raise PGBenchError(_SINGULAR)
        return x


@dataclass
class GroundTruth:
    """Exact quantities of one (problem, theta): finite-horizon arrays carry a leading time axis."""

    problem: MDPProblem
    theta: np.ndarray
    pi: np.ndarray  # (S, A)
    J: float
    V: np.ndarray  # (S,) or (T, S)
    Q: np.ndarray  # (S, A) or (T, S, A)
    d: np.ndarray  # (S,) discounted visitation, or (T, S) per-step occupancy
    grad: np.ndarray  # shaped like theta
    beta: float = 0.0
    method: str = "dense"
    truncated_mass: Optional[float] = None  # Pr(episode still running at the sampling cap)
    truncated_J: Optional[float] = None  # J minus the expected capped return
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def A(self) -> np.ndarray:
        """Advantage ``Q - V`` (per step for finite horizons)."""
        return self.Q - self.V[..., None]

    @property
    def state_weight(self) -> np.ndarray:
        """``w(s) = sum_t gamma^t d_t(s)``: the weight of state s in the gradient and Fisher."""
        if self.d.ndim == 1:
            return self.d
        g = self.problem.mdp.gamma ** np.arange(self.d.shape[0])
        return g @ self.d

    @property
    def grad_norm(self) -> float:
        return safe_norm(self.grad)

    @property
    def score_weights(self) -> np.ndarray:
        """``C[s, a]`` with ``grad = sum C[s,a] g(s,a)``."""
        if self.d.ndim == 1:
            return self.d[:, None] * self.pi * self.A
        g = self.problem.mdp.gamma ** np.arange(self.d.shape[0])
        return np.einsum("t,ts,sa,tsa->sa", g, self.d, self.pi, self.A)

    def fisher(self):
        """``F = sum_t gamma^t sum_s d_t(s) sum_a pi g g^T`` in the policy's compact form."""
        if "F" not in self._cache:
            pol = self.problem.policy
            self._cache["F"] = pol.fisher(self.theta, self.state_weight[:, None] * self.pi)
        return self._cache["F"]

    def fisher_matrix(self) -> np.ndarray:
        """The Fisher as a dense (d, d) matrix (small problems)."""
        return self.problem.policy.fisher_dense(self.fisher())

    def natural_gradient(self) -> np.ndarray:
        """Minimum-norm ``F^+ grad J`` (the softmax Fisher is singular along per-state constants)."""
        if "nat" not in self._cache:
            pol = self.problem.policy
            self._cache["nat"] = pol.fisher_solve(self.theta, self.fisher(), self.grad).reshape(self.theta.shape)
        return self._cache["nat"]


def safe_norm(x) -> float:
    """``||x||_2``, computed as ``m ||x / m||`` (m the largest magnitude) when the squares
    overflow: a gradient of 1e200 has a finite norm."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore"):
        n = float(np.linalg.norm(x))
    if not np.isfinite(n) and np.all(np.isfinite(x)):
        m = float(np.abs(x).max())
        n = m * float(np.linalg.norm(x / m))
    return n


class _LoopClock:
    """Say once (a :class:`PGBenchWarning`, printed at once by the CLI) when a step loop that has
    not reached a fixed point after a few seconds still has long to run, with the time left at the
    rate measured so far. ``tick(k)`` is called with the steps done (``2 T`` loops count as ``2 T``)."""

    CHECK_EVERY = 4096
    AFTER = 2.0  # seconds of looping before the time left is estimated

    def __init__(self, steps: int, what: str, loops: int = 2):
        self.total = int(steps) * loops
        self.what = what
        self.start = time.perf_counter()
        self.done = False

    def tick(self, k: int) -> None:
        if self.done or k % self.CHECK_EVERY or k <= 0:
            return
        elapsed = time.perf_counter() - self.start
        if elapsed < self.AFTER:
            return
        self.done = True
        left = elapsed / k * max(self.total - k, 0)
        if left > inputs.SECONDS_WARNING:
            warnings.warn(f"{self.what}: no fixed point after {k} steps ({elapsed:.3g} s); the remaining "
                          f"{self.total - k} steps take roughly {left:.3g} s more", PGBenchWarning, stacklevel=3)


def sparse_solve_seconds(mdp: TabularMDP, max_steps: int) -> float:
    """Rough seconds of an unbounded sparse solve: two GMRES solves (about ``log(1e-13) / log gamma``
    iterations, each a product with ``P_pi`` plus orthogonalisation against up to 60 vectors) and
    ``max_steps`` products for the truncation check, at about 1 ns per entry touched (measured:
    garnet S=300000, A=4, b=3, 8.6 s)."""
    S, A, K = mdp.next_prob.shape
    gamma = mdp.gamma
    iters = 12000.0 if gamma >= 1.0 else min(12000.0, np.log(1e-13) / np.log(max(gamma, 1e-300)))
    return 1e-9 * S * (A * K + 40) * (2.0 * iters + max_steps)


def require_exact_memory(mdp: TabularMDP, method: str = "auto") -> None:
    """Refuse, before allocating, an exact solve whose arrays exceed the memory limit; warn when
    the finite-horizon recursion is long (it is a Python loop over the steps)."""
    S, A, K = mdp.next_prob.shape
    per_state = 8.0 * (4 * A + 4)
    if mdp.horizon is not None:
        T = mdp.horizon
        if T > STEP_LIMIT:
            raise inputs.ResourceLimitError(f"horizon {T} is beyond {STEP_LIMIT} steps: the exact solve loops over "
                                            "every step; use horizon=0 (unbounded) with gamma < 1")
        # V, Q, d, the advantage and its weighted sum: (T, S) and (T, S, A) arrays
        inputs.require_memory(T * S * per_state, f"the exact solve of {mdp.name} with horizon {T} ({T} x {S} x {A} "
                              "arrays)", "use a shorter horizon, or horizon=0 (unbounded) with gamma < 1")
        if T > inputs.STEP_WARNING:
            warnings.warn(f"the exact solve of {mdp.name} with horizon {T} loops over up to {T:.3g} steps "
                          f"({inputs.fmt_bytes(T * S * per_state)} of arrays): it stops early once the values "
                          f"reach a fixed point (gamma < 1, or every episode absorbed), else it takes roughly "
                          f"{T * (1.3e-5 + 3e-9 * S * A * K):.3g} s", PGBenchWarning, stacklevel=3)
    dense = method == "dense" or (method == "auto" and S <= DENSE_MAX_S)
    need = S * per_state + 8.0 * S * A * K * 3 + (16.0 * S * S if dense else 0.0)
    what = f"the exact solve of {mdp.name}" + (f" (dense P_pi: {S} x {S})" if dense else "")
    inputs.require_memory(need, what, "use method='sparse'" if dense else "")


def exact(problem: MDPProblem, theta=None, beta: float = 0.0, method: str = "auto",
          max_steps: Optional[int] = None, policy=None) -> GroundTruth:
    """Exact J, V, Q, A, visitation and gradient of ``problem`` at ``theta``.

    ``policy``: evaluate another policy on the problem's MDP (e.g. a
    :class:`pgbench.policies.LogitsPolicy`; theta defaults to its own); the gradient then has
    theta's shape, by the chain rule through the policy's vector-Jacobian product.

    ``beta > 0`` gives the entropy-regularised objective ``J + beta E[sum_t gamma^t H(pi(.|s_t))]``:
    since ``E_a[-log pi(a|s)] = H(pi(.|s))`` it is J under the reward ``R - beta log pi``, and its
    gradient is the policy-gradient theorem with that reward's Q (the extra score term has mean zero).
    """
    if getattr(problem, "kind", None) == "lqg":  # linear-Gaussian control: closed form
        if beta:
            raise PGBenchError("exact(): no entropy regularisation for lqg problems")
        return exact_lqg(problem, theta)
    if not isinstance(problem, MDPProblem):
        raise PGBenchError(f"exact() takes an MDP problem; got {type(problem).__name__} (objectives have .J and .grad)")
    if policy is not None:
        problem = problem.with_policy(policy, theta)
    mdp = problem.mdp
    pol = problem.policy
    th = problem.resolve_theta(theta)
    beta = inputs.real_scalar("beta", beta)
    if beta < 0:
        raise PGBenchError(f"beta must be a non-negative number; got {beta}")
    require_exact_memory(mdp, method)
    pi = pol.probs(th)
    R = mdp.R
    if beta > 0:
        # log pi from the logits: np.log(pi) is -inf where pi underflows to 0, and 0 * inf = NaN
        R = R - beta * pol.log_probs(th)
    R = np.where(mdp.terminal[:, None], 0.0, R)
    dyn = _Dynamics(mdp, pi, method)
    gamma = mdp.gamma
    trunc_mass = trunc_J = None
    if mdp.horizon is not None:
        T = mdp.horizon
        V = np.zeros((T + 1, mdp.S))
        Q = np.zeros((T, mdp.S, mdp.A))
        clock = _LoopClock(T, f"the exact solve of {problem.name} with horizon {T}")
        for t in range(T - 1, -1, -1):
            Q[t] = R + gamma * _gather_next(mdp, V[t + 1])
            Q[t][mdp.terminal] = 0.0
            V[t] = (pi * Q[t]).sum(axis=1)
            if np.array_equal(V[t], V[t + 1]):
                # a fixed point in floating point: every earlier step computes the same numbers
                # from the same V, so they are filled in (bit for bit what the loop would give)
                Q[:t] = Q[t]
                V[:t] = V[t]
                break
            clock.tick(T - t)
        V = V[:T]
        d = np.zeros((T, mdp.S))
        d[0] = mdp.rho0
        for t in range(1, T):
            d[t] = dyn.step_forward(d[t - 1])
            if np.array_equal(d[t], d[t - 1]):  # stationary (or all mass absorbed): the same from here on
                d[t + 1:] = d[t]
                break
            clock.tick(T + t)
        J = float(mdp.rho0 @ V[0])
        Adv = Q - V[..., None]
        C = np.einsum("t,ts,sa,tsa->sa", gamma ** np.arange(T), d, pi, Adv)
    else:
        if max_steps is None:
            max_steps = mdp.max_steps
        max_steps = inputs.integer("max_steps", max_steps, 0, STEP_LIMIT)
        if dyn.method == "sparse":
            inputs.warn_seconds(sparse_solve_seconds(mdp, max_steps),
                                f"the exact solve of {problem.name} (sparse GMRES on {mdp.S} states, then a "
                                f"{max_steps}-step truncation check)")
        r_pi = (pi * R).sum(axis=1)
        V = dyn.solve(gamma, r_pi)
        Q = R + gamma * _gather_next(mdp, V)
        Q[mdp.terminal] = 0.0
        d = dyn.solve(gamma, mdp.rho0, transpose=True)
        J = float(mdp.rho0 @ V)
        C = d[:, None] * pi * (Q - V[:, None])
        inputs.warn_steps(max_steps, f"the truncation check of {problem.name} over {max_steps} steps (it stops "
                          "early once the visitation reaches a fixed point)")
        dt = mdp.rho0.copy()
        clock = _LoopClock(max_steps, f"the truncation check of {problem.name} over {max_steps} steps", loops=1)
        for k in range(int(max_steps)):
            nxt = dyn.step_forward(dt)
            if np.array_equal(nxt, dt):  # a fixed point (stationary, or no mass left): later steps change nothing
                break
            dt = nxt
            clock.tick(k)
        trunc_mass = float(dt.sum())
        trunc_J = float(gamma ** max_steps * (dt @ V)) if gamma > 0 else 0.0
    grad = pol.contract(th, C).reshape(th.shape)
    if not (np.isfinite(J) and np.all(np.isfinite(grad))):
        if np.all(np.isfinite(V)) and np.abs(V).max(initial=0.0) > 1e150:
            raise PGBenchError(f"the exact values overflow (|V| reaches {np.abs(V).max():.3g}): rescale the rewards")
        raise PGBenchError("the exact solution is not finite (is I - gamma P_pi nearly singular?)")
    return GroundTruth(problem=problem, theta=th, pi=pi, J=J, V=V, Q=Q, d=d, grad=grad, beta=beta,
                       method=dyn.method, truncated_mass=trunc_mass, truncated_J=trunc_J)


def objective(problem: MDPProblem, theta=None, beta: float = 0.0, method: str = "auto") -> float:
    """Exact ``J(theta)`` (or ``J_beta``): the quantity finite differences check the gradient against."""
    return exact(problem, theta, beta=beta, method=method, max_steps=0).J


def visitation_per_step(problem: MDPProblem, pi: np.ndarray, steps: int) -> np.ndarray:
    """``d_t(s) = Pr(s_t = s, episode still running)`` for ``t < steps`` (no gamma^t), (steps, S)."""
    dyn = _Dynamics(problem.mdp, pi, "auto")
    d = np.zeros((int(steps), problem.mdp.S))
    if steps > 0:
        d[0] = problem.mdp.rho0
    for t in range(1, int(steps)):
        d[t] = dyn.step_forward(d[t - 1])
        if np.array_equal(d[t], d[t - 1]):  # a fixed point: the same from here on
            d[t + 1:] = d[t]
            break
    return d

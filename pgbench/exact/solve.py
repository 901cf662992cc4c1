"""Exact ground truth for tabular MDPs (SPEC section 2): no sampling anywhere.

Finite horizon T: backward recursion ``V_T = 0, Q_t = R + gamma P V_{t+1}, V_t = sum_a pi Q_t``
and forward visitation ``d_0 = rho0, d_{t+1} = P_pi^T d_t`` (terminal states absorb, so
``d_t(s) = Pr(s_t = s, episode still running)``).

Unbounded: ``V = (I - gamma P_pi)^{-1} r_pi`` on non-terminal states and the discounted
visitation ``d = rho0^T (I - gamma P_pi)^{-1}`` (it carries the gamma^t weights).

Policy-gradient theorem: ``grad J = sum_t gamma^t sum_s d_t(s) sum_a pi(a|s) g(s,a) A_t(s,a)``
(Sutton et al. 2000), evaluated as score weights ``C[s,a]`` contracted by the policy.
Dense linear algebra for small S; scipy.sparse with an iterative solver for large S.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from pgbench.errors import PGBenchError
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.problem import MDPProblem

DENSE_MAX_S = 1500


def _gather_next(mdp: TabularMDP, V: np.ndarray) -> np.ndarray:
    """``(P V)[s, a] = sum_s' P[s, a, s'] V[s']`` from the fixed-width sparse form."""
    return np.einsum("sak,sak->sa", mdp.next_prob, V[mdp.next_idx])


class _Dynamics:
    """``P_pi`` restricted to the rows that matter, dense or sparse, built once per (mdp, pi)."""

    def __init__(self, mdp: TabularMDP, pi: np.ndarray, method: str):
        if method == "auto":
            method = "dense" if mdp.S <= DENSE_MAX_S else "sparse"
        if method not in ("dense", "sparse"):
            raise PGBenchError(f"method must be 'auto', 'dense' or 'sparse'; got {method!r}")
        self.method = method
        self.mdp = mdp
        self.live = ~mdp.terminal
        if method == "dense":
            M = np.einsum("sa,sat->st", pi, mdp.P)
        else:
            M = mdp.transition_matrix(pi)
        # terminal states earn nothing after entry: zero their rows and columns
        if mdp.terminal.any():
            keep = self.live.astype(float)
            if method == "dense":
                M = M * keep[:, None] * keep[None, :]
            else:
                D = sp.diags(keep)
                M = (D @ M @ D).tocsr()
        self.P_pi = M

    def step_forward(self, d: np.ndarray) -> np.ndarray:
        return self.P_pi.T @ d

    def solve(self, gamma: float, b: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Solve ``(I - gamma P_pi) x = b`` (or its transpose) on non-terminal states."""
        live = self.live
        if self.method == "dense":
            M = self.P_pi[np.ix_(live, live)]
            if transpose:
                M = M.T
            lhs = np.eye(M.shape[0]) - gamma * M
            try:
                x_live = np.linalg.solve(lhs, b[live])
            except np.linalg.LinAlgError:
                raise PGBenchError("I - gamma P_pi is singular: the episode need not end (use gamma < 1, "
                                   "a finite horizon, or terminal states every state can reach)") from None
        else:
            idx = np.flatnonzero(live)
            M = self.P_pi[idx][:, idx]
            if transpose:
                M = M.T.tocsr()
            lhs = (sp.identity(M.shape[0], format="csr") - gamma * M).tocsr()
            rhs = b[live]
            x_live, info = spla.gmres(lhs, rhs, rtol=1e-13, atol=0.0, restart=60, maxiter=200)
            res = np.linalg.norm(lhs @ x_live - rhs)
            if info != 0 or not res <= 1e-9 * max(1.0, np.linalg.norm(rhs)):
                x_live = spla.spsolve(lhs.tocsc(), rhs)
                if not np.all(np.isfinite(x_live)):
                    raise PGBenchError("I - gamma P_pi is singular: the episode need not end")
        x = np.zeros(self.mdp.S)
        x[live] = x_live
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
        return float(np.linalg.norm(self.grad))

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


def exact(problem: MDPProblem, theta=None, beta: float = 0.0, method: str = "auto",
          max_steps: Optional[int] = None) -> GroundTruth:
    """Exact J, V, Q, A, visitation and gradient of ``problem`` at ``theta``.

    ``beta > 0`` gives the entropy-regularised objective ``J + beta E[sum_t gamma^t H(pi(.|s_t))]``:
    since ``E_a[-log pi(a|s)] = H(pi(.|s))`` it is J under the reward ``R - beta log pi``, and its
    gradient is the policy-gradient theorem with that reward's Q (the extra score term has mean zero).
    """
    if not isinstance(problem, MDPProblem):
        raise PGBenchError(f"exact() takes an MDP problem; got {type(problem).__name__} (objectives have .J and .grad)")
    mdp = problem.mdp
    pol = problem.policy
    th = problem.resolve_theta(theta)
    beta = float(beta)
    if not np.isfinite(beta) or beta < 0:
        raise PGBenchError(f"beta must be a non-negative number; got {beta}")
    pi = pol.probs(th)
    R = mdp.R
    if beta > 0:
        # log pi from the logits: np.log(pi) is -inf where pi underflows to 0, and 0 * inf = NaN
        R = R - beta * pol.log_probs(th)
    R = np.where(mdp.terminal[:, None], 0.0, R)
    dyn = _Dynamics(mdp, pi, method)
    gamma = mdp.gamma
    live = (~mdp.terminal).astype(float)
    trunc_mass = trunc_J = None
    if mdp.horizon is not None:
        T = mdp.horizon
        V = np.zeros((T + 1, mdp.S))
        Q = np.zeros((T, mdp.S, mdp.A))
        for t in range(T - 1, -1, -1):
            Q[t] = R + gamma * _gather_next(mdp, V[t + 1])
            Q[t][mdp.terminal] = 0.0
            V[t] = (pi * Q[t]).sum(axis=1)
        V = V[:T]
        d = np.zeros((T, mdp.S))
        d[0] = mdp.rho0
        for t in range(1, T):
            d[t] = dyn.step_forward(d[t - 1]) * live
        J = float(mdp.rho0 @ V[0])
        Adv = Q - V[..., None]
        C = np.einsum("t,ts,sa,tsa->sa", gamma ** np.arange(T), d, pi, Adv)
    else:
        r_pi = (pi * R).sum(axis=1)
        V = dyn.solve(gamma, r_pi)
        Q = R + gamma * _gather_next(mdp, V)
        Q[mdp.terminal] = 0.0
        d = dyn.solve(gamma, mdp.rho0, transpose=True)
        J = float(mdp.rho0 @ V)
        C = d[:, None] * pi * (Q - V[:, None])
        if max_steps is None:
            max_steps = mdp.max_steps
        dt = mdp.rho0.copy()
        for _ in range(int(max_steps)):
            dt = dyn.step_forward(dt) * live
        trunc_mass = float(dt.sum())
        trunc_J = float(gamma ** max_steps * (dt @ V)) if gamma > 0 else 0.0
    grad = pol.contract(th, C).reshape(th.shape)
    if not (np.isfinite(J) and np.all(np.isfinite(grad))):
        raise PGBenchError("the exact solution is not finite (is I - gamma P_pi nearly singular?)")
    return GroundTruth(problem=problem, theta=th, pi=pi, J=J, V=V, Q=Q, d=d, grad=grad, beta=beta,
                       method=dyn.method, truncated_mass=trunc_mass, truncated_J=trunc_J)


def objective(problem: MDPProblem, theta=None, beta: float = 0.0, method: str = "auto") -> float:
    """Exact ``J(theta)`` (or ``J_beta``): the quantity finite differences check the gradient against."""
    return exact(problem, theta, beta=beta, method=method, max_steps=0).J

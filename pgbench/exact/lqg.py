"""Exact J, gradient and Fisher of a linear-Gaussian control problem (no sampling).

With ``F = A + B K``, ``D = diag(sigma^2)``, ``E = B D B^T + W`` (the noise one step adds) and
``Qk = Q + K^T R K``:

* second moments ``M_t = E[s_t s_t^T]``: ``M_0 = Sigma0 + mu0 mu0^T``, ``M_{t+1} = F M_t F^T + E``;
* quadratic values ``V_t(s) = -(s^T P_t s + c_t)``: ``P_T = 0``, ``P_t = Qk + gamma F^T P_{t+1} F``,
  ``c_t = tr(R D) + gamma (tr(P_{t+1} E) + c_{t+1})``, so ``J = -(tr(P_0 M_0) + c_0)``;
* ``Q_t(s, a) = -(s^T Q s + a^T R a) - gamma ((A s + B a)^T P_{t+1} (A s + B a) + tr(P_{t+1} W) + c_{t+1})``,
  whose action gradient is ``-2 H_t a - 2 gamma B^T P_{t+1} A s`` with ``H_t = R + gamma B^T P_{t+1} B``.

The gradient is ``E[sum_t gamma^t dQ_t/da * da/dtheta]`` (a = K s + sigma eps, eps independent of s):
``dJ/dK = -2 sum_t gamma^t (R K + gamma B^T P_{t+1} F) M_t`` and
``dJ/dlog sigma_i = -2 sum_t gamma^t (H_t)_ii sigma_i^2``.
The Fisher of the Gaussian policy, weighted like the gradient, is block diagonal:
``kron(D^-1, sum_t gamma^t M_t)`` on K (row-major) and ``2 sum_t gamma^t I`` on log sigma.

Unbounded (gamma < 1, ``rho(sqrt(gamma) F) < 1``): P, c are stationary (a discrete Lyapunov
equation for P) and the discounted moment ``Mbar = sum_t gamma^t M_t`` solves
``Mbar = gamma F Mbar F^T + M_0 + gamma E / (1 - gamma)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.linalg as sla

from pgbench import inputs
from pgbench.errors import PGBenchError, ResourceLimitError
from pgbench.exact.limits import STEP_LIMIT
from pgbench.problems.lqg import CAP_REL, LQGProblem


@dataclass(frozen=True)
class LQGGroundTruth:
    """Exact quantities at one theta. ``P[t], c[t]`` give ``V_t(s) = -(s^T P[t] s + c[t])``
    (finite horizon: t = 0..T with ``P[T] = 0``; unbounded: one row, stationary)."""

    J: float
    grad: np.ndarray
    P: np.ndarray  # (T+1, n, n) or (1, n, n)
    c: np.ndarray  # (T+1,) or (1,)
    Mbar: np.ndarray  # sum_t gamma^t E[s_t s_t^T]
    weight: float  # sum_t gamma^t
    sigma: np.ndarray
    horizon: Optional[int]

    @property
    def grad_norm(self) -> float:
        return float(np.linalg.norm(self.grad))

    def fisher_matrix(self) -> np.ndarray:
        m = self.sigma.size
        n = self.Mbar.shape[0]
        F = np.zeros((m * n + m, m * n + m))
        F[:m * n, :m * n] = np.kron(np.diag(1.0 / self.sigma ** 2), self.Mbar)
        F[m * n:, m * n:] = 2.0 * self.weight * np.eye(m)
        return F

    def natural_gradient(self) -> np.ndarray:
        return np.linalg.lstsq(self.fisher_matrix(), self.grad, rcond=None)[0]

    def V(self, t: int, s: np.ndarray) -> float:
        i = t if self.horizon is not None else 0
        return -float(s @ self.P[i] @ s + self.c[i])


def _parts(problem: LQGProblem, theta):
    th = problem.resolve_theta(theta)
    K, sigma = problem.unpack(th)
    A, B = problem.A, problem.B
    F = A + B @ K
    D = np.diag(sigma ** 2)
    E = B @ D @ B.T + problem.W
    Qk = problem.Q + K.T @ problem.R @ K
    M0 = problem.Sigma0 + np.outer(problem.mu0, problem.mu0)
    return K, sigma, F, D, E, Qk, M0


def exact_lqg(problem: LQGProblem, theta=None, horizon: Optional[int] = -1) -> LQGGroundTruth:
    """Exact J, gradient and Fisher at theta. ``horizon``: override (e.g. the sampling cap of an
    unbounded problem); the default -1 uses the problem's."""
    T = problem.horizon if horizon == -1 else horizon
    K, sigma, F, D, E, Qk, M0 = _parts(problem, theta)
    g = problem.gamma
    A, B, R = problem.A, problem.B, problem.R
    n, m = problem.n, problem.m
    trRD = float(np.trace(R @ D))
    if T is None:
        Fs = math.sqrt(g) * F
        if not np.abs(np.linalg.eigvals(Fs)).max() < 1.0:
            raise PGBenchError("lqg: unbounded horizon with an unstable discounted closed loop (J is infinite)")
        P = sla.solve_discrete_lyapunov(Fs.T, Qk)
        P = (P + P.T) / 2
        c = (trRD + g * float(np.trace(P @ E))) / (1.0 - g)
        Mbar = sla.solve_discrete_lyapunov(Fs, M0 + g * E / (1.0 - g))
        Mbar = (Mbar + Mbar.T) / 2
        H = R + g * B.T @ P @ B
        gK = -2.0 * (R @ K + g * B.T @ P @ F) @ Mbar
        gS = -2.0 * np.diag(H) * sigma ** 2 / (1.0 - g)
        J = -(float(np.trace(P @ M0)) + c)
        return LQGGroundTruth(J, np.concatenate([gK.reshape(-1), gS]), P[None], np.array([c]), Mbar,
                              1.0 / (1.0 - g), sigma, None)
    if T > STEP_LIMIT:
        raise ResourceLimitError(f"lqg: horizon {T} is beyond {STEP_LIMIT} steps: the exact recursion loops over "
                                 "every step; use T=0 (unbounded) with gamma < 1")
    inputs.require_memory(8.0 * (T + 1) * (n * n + 1), f"the exact solve of {problem.name} ({T + 1} x {n} x {n} "
                          "Riccati matrices)", "use a shorter horizon, or T=0 (unbounded) with gamma < 1")
    inputs.warn_steps(T, f"the exact solve of {problem.name} with horizon {T}")
    P = np.zeros((T + 1, n, n))
    c = np.zeros(T + 1)
    for t in range(T - 1, -1, -1):
        Pn = P[t + 1]
        P[t] = Qk + g * F.T @ Pn @ F
        P[t] = (P[t] + P[t].T) / 2
        c[t] = trRD + g * (float(np.trace(Pn @ E)) + c[t + 1])
    Mt = M0.copy()
    Mbar = np.zeros((n, n))
    gK = np.zeros((m, n))
    gS = np.zeros(m)
    w = 1.0
    for t in range(T):
        Pn = P[t + 1]
        gK += w * (R @ K + g * B.T @ Pn @ F) @ Mt
        gS += w * np.diag(R + g * B.T @ Pn @ B)
        Mbar += w * Mt
        Mt = F @ Mt @ F.T + E
        w *= g
    weight = float(sum(g ** t for t in range(T))) if g < 1.0 else float(T)
    J = -(float(np.trace(P[0] @ M0)) + c[0])
    grad = np.concatenate([(-2.0 * gK).reshape(-1), -2.0 * gS * sigma ** 2])
    return LQGGroundTruth(J, grad, P, c, Mbar, weight, sigma, T)


def sampling_cap(problem: LQGProblem, theta=None) -> int:
    """Steps an unbounded problem is sampled for: the first T whose J_T is within ``CAP_REL`` of J
    (J_T decreases monotonically to J: every reward is <= 0)."""
    J = exact_lqg(problem, theta).J
    T = max(8, int(math.ceil(math.log(CAP_REL) / math.log(problem.gamma))) // 4)
    while True:
        JT = exact_lqg(problem, theta, horizon=T).J
        if abs(JT - J) <= CAP_REL * max(abs(J), 1e-300) or T > 10 ** 6:
            return T
        T = int(T * 1.5) + 1


def sampling_steps(problem: LQGProblem, theta=None) -> int:
    """Episode length when sampling at theta: the horizon T, or for an unbounded problem the cap of
    :func:`sampling_cap` (computed once per theta and kept on the problem)."""
    if problem.horizon is not None:
        return problem.horizon
    th = problem.resolve_theta(theta)
    key = th.tobytes()
    if key not in problem._caps:
        problem._caps[key] = sampling_cap(problem, th)
    return problem._caps[key]

"""Linear-Gaussian control problems (small continuous MDPs).

``s_{t+1} = A s_t + B a_t + w_t`` with ``w_t ~ N(0, W)``, ``s_0 ~ N(mu0, Sigma0)``, reward
``r_t = -(s_t^T Q s_t + a_t^T R a_t)`` and the linear-Gaussian policy ``a_t = K s_t + sigma * eps_t``,
``eps_t ~ N(0, I_m)``. The parameters are ``theta = (K, log sigma)``, flattened as
``concat(K.ravel(), log_sigma)`` (K row-major, shape (m, n)), so ``d = m n + m``.

The horizon is T steps, or unbounded (``horizon=None``) with gamma < 1; an unbounded problem
needs the discounted closed loop ``sqrt(gamma) (A + B K)`` to have spectral radius below 1,
otherwise J is infinite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pgbench.errors import PGBenchError

# The sampling cap of an unbounded problem (:func:`pgbench.exact.lqg.sampling_steps`): the first t where the exact J of the first t steps is
# within this fraction of the unbounded J (the cut-off J is reported, never hidden)
CAP_REL = 1e-10


def _matrix(name: str, x, shape) -> np.ndarray:
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise PGBenchError(f"lqg: {name} must be a numeric array") from None
    if a.shape != shape:
        raise PGBenchError(f"lqg: {name} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise PGBenchError(f"lqg: {name} has a non-finite entry (NaN or inf)")
    a.setflags(write=False)
    return a


def _sym_psd(name: str, M: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(M).max()))
    if not np.allclose(M, M.T, rtol=0.0, atol=1e-10 * scale):
        raise PGBenchError(f"lqg: {name} is not symmetric (max |{name} - {name}^T| = {np.abs(M - M.T).max():.3g})")
    lo = float(np.linalg.eigvalsh(M).min())
    if lo < -1e-10 * scale:
        raise PGBenchError(f"lqg: {name} is not positive semi-definite (smallest eigenvalue {lo:.3g})")


def psd_sqrt(M: np.ndarray) -> np.ndarray:
    """A factor L with ``L L^T = M`` for a symmetric PSD M (eigen-decomposition, so singular M is fine)."""
    w, V = np.linalg.eigh(M)
    return np.ascontiguousarray(V * np.sqrt(np.clip(w, 0.0, None))[None, :])


@dataclass(frozen=True, eq=False)
class LQGProblem:
    """A validated, immutable linear-Gaussian control problem and the parameters to evaluate at."""

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    W: np.ndarray
    mu0: np.ndarray
    Sigma0: np.ndarray
    gamma: float
    horizon: Optional[int]
    theta: np.ndarray = None
    name: str = "lqg"

    kind = "lqg"

    def __post_init__(self):
        A = np.asarray(self.A) if not isinstance(self.A, (int, float)) else np.array(self.A)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise PGBenchError(f"lqg: A must be a square (n, n) matrix; got shape {A.shape}")
        n = A.shape[0]
        B = np.asarray(self.B)
        if B.ndim != 2 or B.shape[0] != n or B.shape[1] < 1:
            raise PGBenchError(f"lqg: B must have shape ({n}, m) to match A; got {B.shape}")
        m = B.shape[1]
        for nm, shape in (("A", (n, n)), ("B", (n, m)), ("Q", (n, n)), ("R", (m, m)), ("W", (n, n)),
                          ("mu0", (n,)), ("Sigma0", (n, n))):
            object.__setattr__(self, nm, _matrix(nm, getattr(self, nm), shape))
        for nm in ("Q", "R", "W", "Sigma0"):
            _sym_psd(nm, getattr(self, nm))
        try:
            g = float(self.gamma)
        except (TypeError, ValueError):
            raise PGBenchError(f"lqg: gamma must be a number; got {self.gamma!r}") from None
        if not 0.0 <= g <= 1.0:
            raise PGBenchError(f"lqg: gamma must be in [0, 1]; got {self.gamma!r}")
        object.__setattr__(self, "gamma", g)
        h = self.horizon
        if h is not None:
            if isinstance(h, bool) or not float(h) == int(h) or int(h) < 0:
                raise PGBenchError(f"lqg: horizon must be a non-negative integer (0 or None = unbounded); got {h!r}")
            h = int(h) or None
        object.__setattr__(self, "horizon", h)
        if h is None and g >= 1.0:
            raise PGBenchError("lqg: an unbounded horizon needs gamma < 1 (J would be infinite)")
        th = np.concatenate([np.zeros(m * n), np.zeros(m)]) if self.theta is None else self.check_theta(self.theta)
        th = np.array(th, dtype=np.float64)
        th.setflags(write=False)
        object.__setattr__(self, "theta", th)
        object.__setattr__(self, "_caps", {})  # sampling cap per theta (unbounded horizon), filled by pgbench.exact.lqg

    # ----------------------------------------------------------------- shapes and parameters
    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def m(self) -> int:
        return self.B.shape[1]

    @property
    def theta_shape(self):
        return (self.m * self.n + self.m,)

    @property
    def dim(self) -> int:
        return self.m * self.n + self.m

    def pack(self, K, log_sigma) -> np.ndarray:
        return np.concatenate([np.asarray(K, dtype=np.float64).reshape(-1), np.asarray(log_sigma, dtype=np.float64)])

    def unpack(self, theta=None) -> tuple[np.ndarray, np.ndarray]:
        """``(K (m, n), sigma (m,))`` of theta (default: the problem's)."""
        th = self.resolve_theta(theta)
        mn = self.m * self.n
        return th[:mn].reshape(self.m, self.n), np.exp(th[mn:])

    def closed_loop_radius(self, theta=None) -> float:
        """Spectral radius of ``sqrt(gamma) (A + B K)``."""
        K = self.resolve_theta(theta)[:self.m * self.n].reshape(self.m, self.n)
        return float(math.sqrt(self.gamma) * np.abs(np.linalg.eigvals(self.A + self.B @ K)).max())

    def check_theta(self, theta) -> np.ndarray:
        try:
            th = np.array(theta, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise PGBenchError("lqg: theta must be a numeric array") from None
        m, n = self.B.shape[1], self.A.shape[0]
        if th.shape != (m * n + m,):
            raise PGBenchError(f"lqg: theta has {th.size} entries, expected m n + m = {m * n + m} "
                               f"(K ({m}, {n}) row-major, then log sigma ({m},))")
        if not np.all(np.isfinite(th)):
            raise PGBenchError("lqg: theta has a non-finite entry (NaN or inf)")
        if np.any(th[m * n:] < -30.0) or np.any(th[m * n:] > 30.0):
            raise PGBenchError("lqg: log sigma must be in [-30, 30]")
        if self.horizon is None:
            K = th[:m * n].reshape(m, n)
            rho = math.sqrt(self.gamma) * float(np.abs(np.linalg.eigvals(self.A + self.B @ K)).max())
            if not rho < 1.0:
                raise PGBenchError(f"lqg: unbounded horizon with an unstable discounted closed loop: spectral radius "
                                   f"of sqrt(gamma)(A + B K) is {rho:.4g} >= 1, so J is infinite")
        return th

    def resolve_theta(self, theta=None) -> np.ndarray:
        return self.theta if theta is None else self.check_theta(theta)

    def with_theta(self, theta) -> "LQGProblem":
        from dataclasses import replace
        return replace(self, theta=self.check_theta(theta))

    def __repr__(self):
        h = "unbounded" if self.horizon is None else f"T={self.horizon}"
        return f"LQGProblem({self.name!r}, n={self.n}, m={self.m}, {h}, gamma={self.gamma})"


# --------------------------------------------------------------------------------------- built-ins

def _finish(name, A, B, Q, R, W, mu0, Sigma0, gamma, T, K, sigma) -> LQGProblem:
    if not sigma > 0 or not math.isfinite(sigma):
        raise PGBenchError(f"{name}: sigma must be a finite number > 0; got {sigma}")
    m = B.shape[1]
    theta = np.concatenate([np.asarray(K, float).reshape(-1), np.full(m, math.log(sigma))])
    return LQGProblem(A, B, Q, R, W, mu0, Sigma0, gamma, int(T) or None, theta=theta, name=name)


def _label(base: str, **kw) -> str:
    return base + ":" + ",".join(f"{k}={v}" for k, v in kw.items())


def lqg(n: int = 4, m: int = 2, T: int = 50, gamma: float = 0.99, seed: int = 0, sigma: float = 0.5) -> LQGProblem:
    """Random stable linear-Gaussian system: A with spectral radius 0.9, B, Q, R random; K = 0.

    ``T=0`` is unbounded (then gamma < 1). ``A = 0.9 M / rho(M)`` for a Gaussian M, ``B`` Gaussian
    over sqrt(n), ``Q = C C^T / n + 0.1 I``, ``R = D D^T / m + 0.1 I``, ``W = 0.01 I``,
    ``mu0 ~ N(0, I)``, ``Sigma0 = 0.1 I``; the policy is ``a = sigma * eps`` (K = 0).
    """
    n, m = int(n), int(m)
    if n < 1 or m < 1 or int(seed) < 0 or int(T) < 0:
        raise PGBenchError(f"lqg needs n >= 1, m >= 1, T >= 0, seed >= 0; got n={n}, m={m}, T={T}, seed={seed}")
    from pgbench import inputs
    # a dozen n x n matrices (system, cost, covariances, Lyapunov solutions) and the Fisher over d = m n + m
    inputs.require_memory(8.0 * (12 * n * n + 4 * n * m + (m * n + m) ** 2), f"lqg:n={n},m={m}",
                          "use a smaller n or m")
    rng = np.random.default_rng(int(seed))
    M = rng.normal(size=(n, n))
    A = 0.9 * M / max(np.abs(np.linalg.eigvals(M)).max(), 1e-12)
    B = rng.normal(size=(n, m)) / math.sqrt(n)
    C = rng.normal(size=(n, n))
    D = rng.normal(size=(m, m))
    Q = C @ C.T / n + 0.1 * np.eye(n)
    R = D @ D.T / m + 0.1 * np.eye(m)
    name = _label("lqg", n=n, m=m, T=int(T), gamma=gamma, seed=int(seed), sigma=sigma)
    return _finish(name, A, B, (Q + Q.T) / 2, (R + R.T) / 2, 0.01 * np.eye(n), rng.normal(size=n),
                   0.1 * np.eye(n), gamma, T, np.zeros((m, n)), sigma)


def point_mass(T: int = 50, gamma: float = 0.99, sigma: float = 0.5, dt: float = 0.1) -> LQGProblem:
    """A point mass in the plane moved by its velocity: ``s' = s + dt a + w``, n = m = 2; K = -I.

    Reward ``-(|s|^2 + 0.1 |a|^2)``, ``W = 0.01 dt I``, start ``N((1, -1), 0.1 I)``.
    """
    if not dt > 0:
        raise PGBenchError(f"point_mass: dt must be > 0; got {dt}")
    A, B = np.eye(2), dt * np.eye(2)
    name = _label("point_mass", T=int(T), gamma=gamma, sigma=sigma, dt=dt)
    return _finish(name, A, B, np.eye(2), 0.1 * np.eye(2), 0.01 * dt * np.eye(2), np.array([1.0, -1.0]),
                   0.1 * np.eye(2), gamma, T, -np.eye(2), sigma)


def double_integrator(T: int = 50, gamma: float = 0.99, sigma: float = 0.5, dt: float = 0.1) -> LQGProblem:
    """Position and velocity driven by a force: ``x' = x + dt v + dt^2/2 a``, ``v' = v + dt a``; K = (-1, -1.5).

    n = 2, m = 1; reward ``-(x^2 + 0.1 v^2 + 0.1 a^2)``, ``W = 0.01 dt I``, start ``N((1, 0), 0.1 I)``.
    """
    if not dt > 0:
        raise PGBenchError(f"double_integrator: dt must be > 0; got {dt}")
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt * dt], [dt]])
    name = _label("double_integrator", T=int(T), gamma=gamma, sigma=sigma, dt=dt)
    return _finish(name, A, B, np.diag([1.0, 0.1]), 0.1 * np.eye(1), 0.01 * dt * np.eye(2), np.array([1.0, 0.0]),
                   0.1 * np.eye(2), gamma, T, np.array([[-1.0, -1.5]]), sigma)


NPZ_ARRAYS = ("A", "B", "Q", "R", "W", "mu0", "Sigma0", "gamma", "horizon", "K", "log_sigma")


def from_arrays(data: dict, path: str, name: str) -> LQGProblem:
    """An :class:`LQGProblem` from the arrays of an ``.npz`` with ``kind = "lqg"``."""
    missing = [k for k in NPZ_ARRAYS if k not in data]
    if missing:
        raise PGBenchError(f"{path}: an lqg problem lacks array(s) {', '.join(missing)} "
                           f"(needs {', '.join(NPZ_ARRAYS)})")
    unknown = sorted(set(data) - set(NPZ_ARRAYS) - {"kind"})
    if unknown:
        raise PGBenchError(f"{path} has unknown array(s) {', '.join(unknown)} for an lqg problem; "
                           f"allowed: kind, {', '.join(NPZ_ARRAYS)}")
    for k in ("gamma", "horizon"):
        if np.ndim(data[k]) != 0:
            raise PGBenchError(f"{path}: {k} must be a scalar")
    h = data["horizon"].item()
    if not isinstance(h, (int, float)) or not math.isfinite(h) or h != int(h) or h < 0:
        raise PGBenchError(f"{path}: horizon must be a non-negative integer (0 = unbounded); got {h!r}")
    B = np.asarray(data["B"])
    A = np.asarray(data["A"])
    if B.ndim != 2 or A.ndim != 2:
        raise PGBenchError(f"{path}: A and B must be matrices; got shapes {A.shape} and {B.shape}")
    m, n = B.shape[1], A.shape[0]
    K = np.asarray(data["K"], dtype=np.float64)
    ls = np.asarray(data["log_sigma"], dtype=np.float64)
    if K.shape != (m, n) or ls.shape != (m,):
        raise PGBenchError(f"{path}: K must have shape ({m}, {n}) and log_sigma ({m},); got {K.shape} and {ls.shape}")
    return LQGProblem(data["A"], data["B"], data["Q"], data["R"], data["W"], data["mu0"], data["Sigma0"],
                      data["gamma"].item(), int(h) or None, theta=np.concatenate([K.reshape(-1), ls]), name=name)


def to_arrays(problem: LQGProblem, theta=None) -> dict:
    K, sigma = problem.unpack(theta)
    return dict(kind=np.array("lqg"), A=problem.A, B=problem.B, Q=problem.Q, R=problem.R, W=problem.W,
                mu0=problem.mu0, Sigma0=problem.Sigma0, gamma=np.float64(problem.gamma),
                horizon=np.int64(problem.horizon or 0), K=K, log_sigma=np.log(sigma))

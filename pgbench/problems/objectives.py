"""Stochastic objectives without an MDP: ``J(theta) = E_{x ~ p(x; theta)} f(x, theta)`` (the contract's :ref:`contract-objectives`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgbench import inputs
from pgbench.errors import PGBenchError
from pgbench.problems.softmax import softmax_rows


def _numeric_theta(theta) -> np.ndarray:
    return inputs.real_array("theta", theta).reshape(-1)


@dataclass(frozen=True, eq=False)
class GaussianToy:
    """``x ~ N(theta, 1)``, ``f(x, theta) = x^2 theta``: ``J = theta (theta^2 + 1)``, ``dJ/dtheta = 1 + 3 theta^2``.

    f depends on theta directly, so differentiating the sample average alone (``naive``,
    ``x^2``) misses the score term and is biased: at theta = 1 its mean is 2, the truth 4.
    """

    theta: np.ndarray = None
    name: str = "gaussian_toy"
    kind = "gaussian"

    def __post_init__(self):
        th = np.array([1.0]) if self.theta is None else self.check_theta(self.theta)
        th.setflags(write=False)
        object.__setattr__(self, "theta", th)

    theta_shape = (1,)
    dim = 1

    def check_theta(self, theta) -> np.ndarray:
        th = _numeric_theta(theta)
        if th.shape != (1,):
            raise PGBenchError(f"gaussian_toy has one parameter; got theta of shape {np.shape(theta)}")
        if not np.isfinite(th[0]):
            raise PGBenchError("theta has a non-finite entry (NaN or inf)")
        return th

    def resolve_theta(self, theta=None):
        return self.theta if theta is None else self.check_theta(theta)

    def J(self, theta=None) -> float:
        t = float(self.resolve_theta(theta)[0])
        return t * (t * t + 1.0)

    def grad(self, theta=None) -> np.ndarray:
        t = float(self.resolve_theta(theta)[0])
        return np.array([1.0 + 3.0 * t * t])


@dataclass(frozen=True, eq=False)
class CategoricalObjective:
    """``x ~ Cat(softmax(theta))`` over K categories, ``f(x) = ||onehot(x) - t||^2``.

    Exact by enumeration: ``J = sum_x p_x f(x)``, ``grad J = sum_x p_x f(x) (e_x - p)``.
    f is defined on the simplex, so relaxations (Gumbel-softmax, straight-through) apply.
    """

    target: np.ndarray
    theta: np.ndarray = None
    name: str = "categorical"
    kind = "categorical"

    def __post_init__(self):
        t = inputs.real_array("categorical target", self.target).reshape(-1)
        if t.size < 2:
            raise PGBenchError("categorical target must be a finite vector with at least 2 entries")
        t.setflags(write=False)
        object.__setattr__(self, "target", t)
        th = np.zeros(t.size) if self.theta is None else self.check_theta(self.theta)
        th.setflags(write=False)
        object.__setattr__(self, "theta", th)

    @property
    def K(self) -> int:
        return self.target.size

    @property
    def theta_shape(self):
        return (self.K,)

    @property
    def dim(self):
        return self.K

    def check_theta(self, theta):
        th = _numeric_theta(theta)
        if th.shape != (self.K,):
            raise PGBenchError(f"theta has shape {np.shape(theta)}, expected ({self.K},)")
        if not np.all(np.isfinite(th)):
            raise PGBenchError("theta has a non-finite entry (NaN or inf)")
        return th

    def resolve_theta(self, theta=None):
        return self.theta if theta is None else self.check_theta(theta)

    def f_table(self) -> np.ndarray:
        """``f(x)`` for each category x."""
        E = np.eye(self.K)
        return ((E - self.target[None, :]) ** 2).sum(axis=1)

    def probs(self, theta=None):
        return softmax_rows(self.resolve_theta(theta))

    def J(self, theta=None) -> float:
        return float(self.probs(theta) @ self.f_table())

    def grad(self, theta=None) -> np.ndarray:
        p = self.probs(theta)
        pf = p * self.f_table()
        return pf - p * pf.sum()

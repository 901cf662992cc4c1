"""A problem = an MDP, a policy class over it, and the parameters to evaluate at."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.softmax import SoftmaxPolicy, TabularSoftmax, LinearSoftmax


@dataclass(frozen=True, eq=False)
class MDPProblem:
    """``mdp`` with a softmax ``policy`` and default parameters ``theta``."""

    mdp: TabularMDP
    policy: SoftmaxPolicy
    theta: np.ndarray
    name: str = "mdp"
    meta: dict = field(default_factory=dict)
    theta_ref: np.ndarray = None  # parameters of the reference policy pi_ref (KL penalties), or None

    kind = "mdp"

    def __post_init__(self):
        if (self.policy.S, self.policy.A) != (self.mdp.S, self.mdp.A):
            raise PGBenchError(f"policy is for S={self.policy.S}, A={self.policy.A} but the MDP has "
                               f"S={self.mdp.S}, A={self.mdp.A}")
        th = self.policy.check_theta(self.theta)
        th.setflags(write=False)
        object.__setattr__(self, "theta", th)
        if self.theta_ref is not None:
            try:
                ref = self.policy.check_theta(self.theta_ref)
            except PGBenchError as exc:
                raise PGBenchError(f"theta_ref: {exc}") from None
            ref.setflags(write=False)
            object.__setattr__(self, "theta_ref", ref)

    @classmethod
    def tabular(cls, mdp: TabularMDP, theta=None, name=None, theta_ref=None, **meta):
        pol = TabularSoftmax(mdp.S, mdp.A)
        th = np.zeros(pol.theta_shape) if theta is None else theta
        return cls(mdp, pol, th, name or mdp.name, meta, theta_ref)

    @classmethod
    def linear(cls, mdp: TabularMDP, features, theta=None, name=None, theta_ref=None, **meta):
        pol = LinearSoftmax(features)
        th = np.zeros(pol.theta_shape) if theta is None else theta
        return cls(mdp, pol, th, name or mdp.name, meta, theta_ref)

    def log_pi_ref(self) -> np.ndarray:
        """``log pi_ref(a|s)`` (S, A) of the reference policy; an error when the problem has none."""
        if self.theta_ref is None:
            raise PGBenchError(f"problem {self.name!r} has no reference policy (theta_ref): a KL penalty (beta > 0) "
                               f"needs one (sequence problems and .npz files have one)")
        return self.policy.log_probs(self.theta_ref)

    def resolve_theta(self, theta=None) -> np.ndarray:
        return self.theta if theta is None else self.policy.check_theta(theta)

    def with_policy(self, policy, theta=None) -> "MDPProblem":
        """The same MDP under another policy (e.g. a :class:`pgbench.policies.LogitsPolicy`), at
        ``theta`` or the policy's own default parameters."""
        if not isinstance(policy, SoftmaxPolicy):
            raise PGBenchError(f"policy must be a pgbench policy (e.g. pgbench.policies.LogitsPolicy); "
                               f"got {type(policy).__name__}")
        th = getattr(policy, "theta", None) if theta is None else theta
        if th is None:
            raise PGBenchError("give theta for this policy")
        ref = self.theta_ref if policy is self.policy else None
        return MDPProblem(self.mdp, policy, th, self.name, dict(self.meta), ref)

    def with_theta(self, theta) -> "MDPProblem":
        return MDPProblem(self.mdp, self.policy, self.policy.check_theta(theta), self.name, dict(self.meta),
                          self.theta_ref)

    def __repr__(self):
        return f"MDPProblem({self.name!r}, {self.mdp!r}, {self.policy!r})"

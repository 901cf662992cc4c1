"""Exact means of the practice estimators (:mod:`pgbench.estimators.practice`) where they are known in
closed form: ``ppo_gae`` from the undiscounted running visitation, ``gpomdp_baseline`` (unbiased)."""
from __future__ import annotations

import numpy as np

from pgbench.exact.solve import visitation_per_step


def exact_mean(problem, theta, gt, spec):
    """The exact mean of the estimate where it is known in closed form (else None): ``ppo_gae``'s
    ``sum_{t < cap} d_t(s) pi(a|s) A_t(s, a)`` score weights (undiscounted visitation, the
    episode cap included), ``gpomdp_baseline``'s ``grad J``."""
    if spec.name == "gpomdp_baseline":
        return np.asarray(gt.grad, dtype=np.float64).reshape(-1)
    if spec.name != "ppo_gae":
        return None
    mdp = problem.mdp
    if mdp.horizon is not None:
        C = np.einsum("ts,sa,tsa->sa", gt.d, gt.pi, gt.A)
    else:
        D = visitation_per_step(problem, gt.pi, mdp.episode_cap).sum(axis=0)
        C = D[:, None] * gt.pi * gt.A
    return problem.policy.contract(theta, C).reshape(-1)

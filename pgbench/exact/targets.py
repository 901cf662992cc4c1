"""What each estimator estimates, exactly (the target its bias is measured against)."""
from __future__ import annotations

import numpy as np

from pgbench.estimators.catalogue import EstimatorSpec
from pgbench.exact.solve import GroundTruth, exact


def estimator_target(problem, th, gt: GroundTruth, sp: EstimatorSpec) -> np.ndarray:
    """What an estimator estimates: grad J, grad J_beta, or the natural gradient F^+ grad J."""
    if getattr(sp.info, "code", None) == -4 and sp.p.get("beta", 0.0) > 0:  # a group estimator with a KL penalty
        from pgbench.exact.groups import kl_exact
        return kl_exact(problem, th, sp.p["beta"]).grad.reshape(-1)
    if sp.name == "entropy_bonus":
        return exact(problem, th, beta=sp.p["beta"]).grad.reshape(-1)
    if sp.name == "natural":
        # F^+ applied to whatever the base estimates (grad J, or grad J_beta for entropy_bonus)
        base = estimator_target(problem, th, gt, sp.base).reshape(th.shape)
        return problem.policy.fisher_solve(th, gt.fisher(), base).reshape(-1)
    return gt.grad.reshape(-1)

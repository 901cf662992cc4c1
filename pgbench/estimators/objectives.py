"""The catalogue's stochastic-objective estimators (Gaussian toy, categorical): names, parameters,
unbiasedness (the kernels in :mod:`pgbench.kernels.objectives` compute them)."""
from __future__ import annotations

_TAU = {"tau": 1.0}

OBJECTIVE_ESTIMATORS: dict[str, dict[str, dict]] = {
    "gaussian": {
        "naive": {"params": {}, "unbiased": False,
                  "doc": "d/dtheta of the sample average with x held fixed (x^2): misses the score term"},
        "score_function": {"params": {}, "unbiased": True,
                           "doc": "f(x,theta) (x - theta) + df/dtheta at fixed x (likelihood ratio)"},
        "reparameterization": {"params": {}, "unbiased": True,
                               "doc": "pathwise: d/dtheta f(theta + eps, theta) with eps ~ N(0,1) fixed"},
    },
    "categorical": {
        "score_function": {"params": {}, "unbiased": True,
                           "doc": "f(x) (e_x - softmax(theta)) (REINFORCE)"},
        "rloo": {"params": {}, "unbiased": True,
                 "doc": "score function with the leave-one-out batch mean of f as baseline (N >= 2)"},
        "gumbel_softmax": {"params": dict(_TAU), "unbiased": False,
                           "doc": "pathwise gradient of f(y), y = softmax((theta + G)/tau) relaxed sample"},
        "straight_through": {"params": dict(_TAU), "unbiased": False,
                             "doc": "f at the hard one-hot e_x forward, backward through the relaxed y"},
    },
}

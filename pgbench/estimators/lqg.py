"""The catalogue's linear-Gaussian control estimators: names, parameters, unbiasedness (the kernels
in :mod:`pgbench.kernels.lqg` compute them)."""
from __future__ import annotations

LQG_ESTIMATORS: dict[str, dict] = {
    "reinforce": {"params": {}, "unbiased": True, "doc": "R z: discounted return times the trajectory score"},
    "reinforce_rtg": {"params": {}, "unbiased": True, "doc": "sum_t gamma^t G_t grad log pi_t (reward-to-go)"},
    "value_baseline": {"params": {}, "unbiased": True,
                       "doc": "sum_t gamma^t (G_t - V_t(s_t)) grad log pi_t, exact quadratic V"},
    "svg_inf": {"params": {}, "unbiased": True,
                "doc": "pathwise: backprop the realised return through the known dynamics, noises fixed"},
    "svg0": {"params": {"scale": 0.0}, "unbiased": "yes with scale=0 (exact Q); no otherwise",
             "doc": "sum_t gamma^t dQ_t/da da/dtheta with Q's P scaled by (1 + scale)"},
    "mppi": {"params": {"lambda": 1.0}, "unbiased": False,
             "doc": "lambda sum_i (softmax_i(R/lambda) - 1/N) z_i: exponentially weighted perturbations"},
}

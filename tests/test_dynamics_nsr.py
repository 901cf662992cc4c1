"""Noise-to-signal ratio columns and the shifted oracle baselines.

Two-armed bandit, tabular softmax, one sample: g = (r_a - b)(e_a - pi), grad J = p(1-p)(r1-r2)(1,-1),
so E||g||^2 = 2p(1-p)^2 (r1-b)^2 + 2(1-p)p^2 (r2-b)^2 and ||grad J||^2 = 2p^2(1-p)^2 (r1-r2)^2:
tr Var(g) / ||grad J||^2 = [(r1-b)^2/p + (r2-b)^2/(1-p)] / (r1-r2)^2 - 1 at N = 1, divided by N
for a batch mean of N samples; zero at b* = (1-p) r1 + p r2.
"""
import numpy as np
import pytest

from pgbench.exact.moments import exact_moments
from pgbench.measure import measure

R1, R2, P = 1.0, 0.3, 0.35
THETA = f"{float(np.log(P / (1 - P)))!r};0"
BANDIT = f"bandit:r={R1};{R2},theta={THETA}"


def closed_form(b, p=P, r1=R1, r2=R2):
    return ((r1 - b) ** 2 / p + (r2 - b) ** 2 / (1 - p)) / (r1 - r2) ** 2 - 1.0


def test_bandit_theta_gives_p():
    from pgbench.problems.registry import make
    prob = make(BANDIT)
    pi = np.exp(prob.theta[0]) / np.exp(prob.theta[0]).sum()
    assert abs(pi[0] - P) < 1e-12


@pytest.mark.parametrize("N", [1, 4])
def test_exact_nsr_two_armed_closed_form(N):
    df = measure(BANDIT, ["reinforce", "const_baseline:b=-1.0", "const_baseline:b=0.5", "optimal_const_baseline"],
                 batch=N, trials=400, seed=3)
    b_pilot = df.attrs["optimal_const_baseline_b"]
    for est, b in zip(df["estimator"], [0.0, -1.0, 0.5, b_pilot]):
        row = df[df["estimator"] == est].iloc[0]
        assert abs(row["exact_nsr"] - closed_form(b) / N) < 1e-9, est
        # the measured NSR is the measured variance over the same ||grad J||^2, with its interval
        assert row["nsr_lo"] <= row["nsr"] <= row["nsr_hi"]
        assert abs(row["nsr"] * row["exact_grad_norm"] ** 2 - row["variance"]) < 1e-12 * max(1.0, row["variance"])


def test_exact_nsr_zero_at_b_star():
    em = exact_moments(BANDIT, ["optimal_const_baseline", "optimal_const_baseline:shift=0.5"], batch=1)
    g2 = float(np.sum(em.target[0] ** 2))
    b_star = (1 - P) * R1 + P * R2
    assert abs(em.extras["optimal_const_baseline_b"] - b_star) < 1e-12
    assert abs(em.variance[0] / g2) < 1e-9
    assert abs(em.variance[1] / g2 - closed_form(b_star + 0.5)) < 1e-9


def test_shifted_baselines_match_constant_baselines():
    """On a bandit V = J: value_baseline:shift=d is const_baseline:b=J+d on the same episodes, and
    optimal_const_baseline:shift=d is const_baseline:b=b*+d (exact moments, DP and enumeration)."""
    J = P * R1 + (1 - P) * R2
    d = -0.5
    df = measure(BANDIT, ["value_baseline:shift=-0.5", f"const_baseline:b={J + d!r}"], batch=3, trials=50, seed=1)
    assert np.allclose(np.array(df["mean"][0]), np.array(df["mean"][1]), atol=1e-12)
    assert abs(df["variance"][0] - df["variance"][1]) < 1e-12
    b_star = (1 - P) * R1 + P * R2
    for method in ("dp", "enumerate"):
        em = exact_moments(BANDIT, ["optimal_const_baseline:shift=0.25", f"const_baseline:b={b_star + 0.25!r}",
                                    "value_baseline:shift=-0.5"], batch=2, method=method)
        assert abs(em.variance[0] - em.variance[1]) < 1e-12
        assert abs(em.variance[2] / np.sum(em.target[2] ** 2) - closed_form(J + d) / 2) < 1e-9
        assert np.allclose(em.mean, em.target, atol=1e-12)  # still unbiased


def test_value_shift_dp_matches_enumeration_on_an_mdp():
    ests = ["value_baseline", "value_baseline:shift=0.7"]
    a = exact_moments("three_step_bandit", ests, batch=2, method="dp")
    b = exact_moments("three_step_bandit", ests, batch=2, method="enumerate")
    assert np.allclose(a.variance, b.variance, rtol=1e-10)
    assert a.variance[1] > a.variance[0]  # V is not the best baseline, but V + 0.7 is worse here
    assert np.allclose(a.mean, a.target, atol=1e-12)

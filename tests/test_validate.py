"""``pgbench validate`` / pgbench.validate.validate / pgbench.testing.assert_unbiased, and the
calibration of the unbiasedness test (false-rejection rate, power, interval coverage).

Every run has a fixed seed, so the outcomes are deterministic; the calibration checks allow
Monte-Carlo error at binomial tail probabilities below 1e-3.
"""
from __future__ import annotations

import json

import numba
import numpy as np
import pytest
from scipy import stats

from pgbench import PGBenchError
from pgbench.cli import main
from pgbench.estimators import register_estimator, unregister_estimator
from pgbench.testing import assert_unbiased
from pgbench.validate import PANEL, calibration, format_validation, holm, validate
from conftest import run_cli as run  # noqa: E402

DISCOUNTED = "garnet:S=6,A=3,b=3,seed=1,gamma=0.8"  # unbounded, gamma = 0.8: dropping gamma^t shows


@numba.njit
def _user_rtg(states, actions, rewards, L, gamma, pi, V, Q, psi):
    G = 0.0
    for t in range(L - 1, -1, -1):
        G = rewards[t] + gamma * G
        psi[t] = gamma ** t * G


@numba.njit
def _user_rtg_no_discount_weight(states, actions, rewards, L, gamma, pi, V, Q, psi):
    G = 0.0
    for t in range(L - 1, -1, -1):
        G = rewards[t] + gamma * G
        psi[t] = G  # the gamma^t factor forgotten: biased on a discounted problem


@pytest.fixture(scope="module")
def user_estimators():
    register_estimator("t_user_rtg", unbiased=True, doc="reward-to-go by hand", replace=True)(_user_rtg)
    register_estimator("t_user_rtg_biased", unbiased=True, doc="reward-to-go without gamma^t",
                       replace=True)(_user_rtg_no_discount_weight)
    yield "t_user_rtg", "t_user_rtg_biased"
    unregister_estimator("t_user_rtg")
    unregister_estimator("t_user_rtg_biased")




# ----------------------------------------------------------------------------- validate()

def test_holm_adjusts_in_input_order():
    p = [0.01, 0.04, 0.03, 0.5]
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, 0.5])
    assert holm([]).size == 0


def test_default_panel_passes_a_correct_estimator():
    df = validate("gae:lambda=0.9", batch=8, trials=200, seed=1)
    assert len(df) == len(PANEL) and df.attrs["passed"] and df["passed"].all()
    assert (df["tested"] > 0).all()
    assert np.isfinite(df["p_metrics"]).all()
    # the verdict's p: the larger of the two tests' (no bootstrap at its floor for a correct estimator here)
    assert (df["p_bootstrap"] > 2 / 2000).all()
    assert np.array_equal(df["p_value"], np.maximum(df["p_metrics"], df["p_bootstrap"]))
    assert all(t == ("bootstrap max-t" if pb >= pm else {"hotelling": "Hotelling T2", "holm": "Holm t-tests"}[tm])
               for t, pb, pm, tm in zip(df["test"], df["p_bootstrap"], df["p_metrics"], df["test_metrics"]))
    assert list(df["problem"]) == [p.problem for p in PANEL]
    assert (df["p_holm"] >= df["p_value"] - 1e-15).all()
    for col in ("var_ratio_reinforce_rtg", "var_ratio_value_baseline", "var_ratio_reinforce_rtg_lo"):
        assert np.isfinite(df[col]).all(), col
    assert (df["var_ratio_reinforce_rtg"] < 1).all()  # a critic beats plain reward-to-go everywhere here
    # exact bias by enumeration where the problem is small enough, nan elsewhere
    assert np.isfinite(df.loc[df["problem"] == "three_step_bandit", "exact_bias_norm"]).all()
    assert df["exact_bias_norm"].max() < 1e-12
    assert np.isnan(df.loc[df["problem"] == "frozen_lake", "exact_bias_norm"]).all()
    text = format_validation(df)
    assert text.splitlines()[-1].startswith("PASS") and "Holm" in text


def test_reference_estimators_share_the_episodes():
    """reinforce_rtg is itself a reference: its ratio to itself is exactly 1, and value_baseline's
    ratio is that of the two on the same episodes (so the interval is narrow)."""
    df = validate("reinforce_rtg", problems=["three_step_bandit"], batch=4, trials=300)
    r = df.iloc[0]
    assert r["var_ratio_reinforce_rtg"] == 1.0
    assert r["var_ratio_value_baseline_hi"] / r["var_ratio_value_baseline_lo"] < 1.5
    assert df.attrs["references"] == ["reinforce_rtg", "value_baseline"]


def test_a_biased_builtin_fails_and_holm_controls_the_panel():
    df = validate("batch_mean_baseline", problems=["three_step_bandit", "boltzmann_bandit"], batch=2, trials=200)
    assert not df.attrs["passed"]
    row = df[df["problem"] == "three_step_bandit"].iloc[0]
    assert not row["passed"] and row["p_holm"] <= 2 / 2000  # no resample of 1999 reaches the observed max-t
    assert row["p_metrics"] < 1e-6
    assert row["exact_bias_norm"] == pytest.approx(row["exact_grad_norm"] / 2, rel=1e-10)  # -grad / 2
    assert row["bias_norm_lo"] <= row["exact_bias_norm"] <= row["bias_norm_hi"]
    assert not row["claimed_unbiased"]


def test_user_estimators_correct_passes_and_forgotten_discount_fails(user_estimators):
    good, bad = user_estimators
    problems = ["three_step_bandit", DISCOUNTED]
    ok = validate(good, problems=problems, batch=8, trials=200)
    assert ok.attrs["passed"]
    np.testing.assert_allclose(ok["var_ratio_reinforce_rtg"], 1.0, rtol=1e-9)  # same estimator, same episodes
    assert np.isnan(ok["exact_bias_norm"]).all()  # user estimators are not enumerated
    ko = validate(bad, problems=problems, batch=8, trials=200)
    assert not ko.attrs["passed"]
    assert ko.set_index("problem").loc["three_step_bandit", "passed"]  # gamma = 1: nothing to forget
    assert not ko.set_index("problem").loc[DISCOUNTED, "passed"]


def test_assert_unbiased(user_estimators):
    good, bad = user_estimators
    row = assert_unbiased(good, DISCOUNTED, batch=8, trials=200, seed=3)
    assert row["passed"] and row["p_value"] > 1e-3
    with pytest.raises(AssertionError) as info:
        assert_unbiased(bad, DISCOUNTED, batch=8, trials=200, seed=3)
    msg = str(info.value)
    for w in ("t_user_rtg_biased", DISCOUNTED, "p = ", "bias norm", "95% CI", "relative bias", "reinforce_rtg",
              "variance"):
        assert w in msg, msg
    with pytest.raises(AssertionError, match="exact bias norm by enumeration: 0.2357"):
        assert_unbiased("batch_mean_baseline", "three_step_bandit", batch=2, trials=200)
    assert_unbiased("reinforce", "three_step_bandit", batch=2, trials=100, theta=np.ones((3, 3)))


def test_bad_input_is_refused():
    with pytest.raises(PGBenchError, match="alpha"):
        validate("reinforce", problems=["three_step_bandit"], alpha=1.5)
    with pytest.raises(PGBenchError, match="unknown estimator"):
        validate("no_such_estimator", problems=["three_step_bandit"])
    with pytest.raises(PGBenchError, match="empty"):
        validate("reinforce", problems=[])
    with pytest.raises(PGBenchError, match="trials"):
        validate("reinforce", problems=["three_step_bandit"], trials=1)


# ----------------------------------------------------------------------------- CLI

def test_cli_exit_status_is_0_when_all_pass_and_1_when_biased(capsys):
    rc, out, err = run(capsys, "validate", "reinforce_rtg", "-p", "three_step_bandit", "boltzmann_bandit",
                       "-N", "4", "-K", "100")
    assert rc == 0 and err == ""
    assert out.splitlines()[-1].startswith("PASS")
    rc, out, err = run(capsys, "validate", "batch_mean_baseline", "-p", "three_step_bandit", "-N", "2", "-K", "200",
                       "--json")
    assert rc == 1 and err == ""
    obj = json.loads(out)
    assert obj["passed"] is False and obj["alpha"] == 0.05 and obj["correction"] == "holm"
    assert obj["problems"][0]["problem"] == "three_step_bandit" and obj["problems"][0]["passed"] is False


@pytest.mark.parametrize("argv, words", [
    (["validate", "no_such_estimator", "-p", "three_step_bandit"], ["no_such_estimator"]),
    (["validate", "reinforce", "-p", "no_such_problem"], ["no_such_problem"]),
    (["validate", "reinforce", "-p", "three_step_bandit", "--alpha", "0"], ["alpha"]),
    (["validate", "reinforce", "-p", "three_step_bandit", "-K", "1"], ["trials"]),
    (["validate", "reinforce", "--import", "/no/such/plugin.py"], ["plugin.py"]),
    (["validate", "reinforce", "-N", "abc"], ["-N", "abc"]),
])
def test_cli_errors_are_one_line_with_status_2(capsys, argv, words):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith("pgbench: error:") and err.count("\n") == 1
    for w in words:
        assert w in err, err


def test_cli_imports_a_plugin_file_that_registers_an_estimator(capsys, tmp_path):
    """The plugin's estimator never moves the gradient (psi = 0): every coordinate the reference
    sees is flat at 0 while grad J is not, a certain violation (p = 0) on every problem."""
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "import numba\n"
        "from pgbench.estimators import register_estimator\n\n"
        "@register_estimator('t_cli_zero', unbiased=True, replace=True)\n"
        "@numba.njit\n"
        "def f(states, actions, rewards, L, gamma, pi, V, Q, psi):\n"
        "    for t in range(L):\n"
        "        psi[t] = 0.0\n")
    try:
        rc, out, err = run(capsys, "validate", "t_cli_zero", "--import", str(plugin), "-p", DISCOUNTED,
                           "frozen_lake", "-N", "8", "-K", "100", "--json")
    finally:
        unregister_estimator("t_cli_zero")
    assert rc == 1, err
    obj = json.loads(out)
    assert [r["passed"] for r in obj["problems"]] == [False, False]
    assert all(r["p_value"] == 0.0 and r["unobserved"] < r["d"] for r in obj["problems"])


# ----------------------------------------------------------------------------- calibration

def test_false_rejection_rate_power_and_coverage_are_calibrated():
    """200 repetitions of cells of K = 100 trials at N = 8 (three-step bandit): an unbiased
    estimator is rejected at about the test's level (5%); batch_mean_baseline at N = 2 (bias exactly
    -grad/2) is rejected almost always at K = 60; the 95% intervals for the variance and MSE contain
    the exact values (by enumeration) at about their nominal rate."""
    reps = 200
    cal = calibration(unbiased=("reinforce_rtg", "value_baseline"), biased=None, batch=8, trials=100, reps=reps,
                      alpha=0.05, seed=5, bootstrap=499)
    lo, hi = stats.binom.ppf([5e-4, 1 - 5e-4], reps, 0.05) / reps  # two-sided 1e-3 acceptance region
    for name, c in cal["estimators"].items():
        assert c["tests"] == ["hotelling"]
        assert lo <= c["rejection_rate"] <= hi, (name, c["rejection_rate"])
        assert c["rejection_ci"][0] <= c["rejection_rate"] <= c["rejection_ci"][1]
        assert c["exact_bias_norm"] < 1e-12
        for key in ("variance_coverage", "mse_coverage"):
            assert 0.88 <= c[key] <= 0.99, (name, key, c[key])
        assert lo <= c["rejection_rate_bootstrap"] <= hi, (name, c["rejection_rate_bootstrap"])
    pw = calibration(unbiased=(), biased="batch_mean_baseline", batch=2, trials=60, reps=reps, seed=6)
    c = pw["estimators"]["batch_mean_baseline"]
    assert c["exact_bias_norm"] == pytest.approx(np.sqrt(18 / 81) / 2, rel=1e-10)
    assert c["rejection_rate"] >= 0.9 and c["predicted_power_hotelling"] >= 0.95
    assert 0.85 <= c["variance_coverage"] <= 0.99


def test_bootstrap_test_holds_its_level_on_a_sparse_reward_problem():
    """FrozenLake at theta = 0 reaches the goal in about 1% of episodes: trial estimates are
    zero-inflated and skewed, where normal-theory tests over-reject (see the module docstring of
    pgbench.validate). The bootstrap max-t test of validate() keeps its level there."""
    reps = 60
    cal = calibration(problem="frozen_lake", unbiased=("reinforce_rtg",), biased=None, batch=10, trials=400,
                      reps=reps, alpha=0.05, seed=3, bootstrap=499)
    c = cal["estimators"]["reinforce_rtg"]
    assert c["rejection_rate_bootstrap"] <= stats.binom.ppf(1 - 1e-3, reps, 0.05) / reps
    # too many trajectories to enumerate, but the moment DP gives the exact covariance, hence coverage
    from pgbench.exact.moments import exact_moments
    em = exact_moments("frozen_lake", ["reinforce_rtg"], batch=10, method="dp")
    assert c["exact_variance"] == pytest.approx(em.variance[0], rel=1e-10)
    assert 0.0 <= c["variance_coverage"] <= 1.0 and c["rank"] > 0

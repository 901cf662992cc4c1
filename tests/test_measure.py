"""The measurement API (pgbench.measure.measure.measure) and ``pgbench measure`` (the contract's Metrics, docs/contract.rst)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pgbench import PGBenchError, make
from pgbench.cli import main
from pgbench.exact import exact
from pgbench.measure.measure import RESULT_COLUMNS, measure, run_cell
from conftest import run_cli as run  # noqa: E402

CLI_KEYS = {"estimator", "mean", "bias_norm", "bias_norm_se", "variance", "variance_se", "mse", "mse_se", "cosine",
            "p_value", "seconds", "episodes_per_second"}




def measure_json(capsys, *argv):
    rc, out, err = run(capsys, "measure", *argv, "--json")
    assert rc == 0, err
    assert err == ""
    return json.loads(out)


def strip_time(obj):
    """Drop the wall-clock fields (seconds, rates) that legitimately change between runs."""
    rows = obj if isinstance(obj, list) else [obj]
    return [{k: v for k, v in r.items() if k not in ("seconds", "episodes_per_second", "mse_x_seconds")}
            for r in rows]


# ----------------------------------------------------------------------------- measure()

def test_measure_returns_one_tidy_row_per_estimator():
    names = ["reinforce", "reinforce_rtg", "rloo", "natural"]
    df = measure("three_step_bandit", names, batch=8, trials=50, seed=1)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == RESULT_COLUMNS
    assert list(df["estimator"]) == names and len(df) == 4
    assert list(df["unbiased"]) == [True, True, True, False]
    assert (df["N"] == 8).all() and (df["K"] == 50).all() and (df["seed"] == 1).all() and (df["d"] == 9).all()
    assert (df["problem"] == "three_step_bandit").all()
    for col in ("bias_norm", "bias_norm_se", "variance", "variance_se", "mse", "mse_se", "seconds", "episodes",
                "episodes_per_second"):
        assert np.all(np.isfinite(df[col].astype(float))) and (df[col] >= 0).all(), col
    assert ((df["p_value"] >= 0) & (df["p_value"] <= 1)).all()
    assert ((df["cosine"] >= -1) & (df["cosine"] <= 1)).all()
    assert np.isnan(df["truncated_mass"]).all()  # finite horizon: nothing cut off
    # the row's numbers are those of the raw trials
    cell = run_cell("three_step_bandit", names, batch=8, trials=50, seed=1)
    gt = exact(make("three_step_bandit"))
    for j, row in df.iterrows():
        est = cell.estimates[:, j, :]
        m = est.mean(axis=0)
        assert np.shape(row["mean"]) == (3, 3)  # shaped like theta
        np.testing.assert_allclose(np.array(row["mean"]).reshape(-1), m, rtol=1e-12, atol=1e-15)
        target = gt.natural_gradient().reshape(-1) if names[j] == "natural" else gt.grad.reshape(-1)
        np.testing.assert_allclose(cell.targets[j], target, rtol=1e-12, atol=1e-15)
        assert row["exact_grad_norm"] == pytest.approx(np.linalg.norm(target), rel=1e-12)
        assert row["bias_norm"] == pytest.approx(np.linalg.norm(m - target), rel=1e-9, abs=1e-15)
        assert row["variance"] == pytest.approx(((est - m) ** 2).sum() / 49, rel=1e-9)
        assert row["mse"] == pytest.approx(((est - target) ** 2).sum() / 50, rel=1e-9)
        assert row["mse"] == pytest.approx(row["bias_norm"] ** 2 + row["variance"] * 49 / 50, rel=1e-9)
        assert row["episodes"] == cell.episodes
    # paired comparisons against the first estimator (same target only)
    paired = df.attrs["paired"]
    assert isinstance(paired, list) and {r["estimator"] for r in paired} == {"reinforce_rtg", "rloo"}
    assert {r["reference"] for r in paired} == {"reinforce"}
    # attrs hold no DataFrame, so frames of two cells concatenate
    both = pd.concat([df, df])
    assert len(both) == 2 * len(df) and list(both.columns) == list(df.columns)


def test_measure_unbounded_reports_truncated_mass_and_optimal_b():
    df = measure("garnet:S=5,A=2,b=2,seed=1,gamma=0.8", ["reinforce_rtg", "optimal_const_baseline"], batch=4,
                 trials=20, seed=0)
    gt = exact(make("garnet:S=5,A=2,b=2,seed=1,gamma=0.8"))
    assert (df["truncated_mass"] == gt.truncated_mass).all()
    assert np.isfinite(df.attrs["optimal_const_baseline_b"])


def test_measure_proxy_diagnostics():
    theta = np.random.default_rng(0).normal(size=(4, 3))  # at theta = 0, W(tau) would be constant (corr nan)
    df = measure("garnet:S=4,A=3,b=2,seed=1,gamma=0.8", ["rloo", "w_baseline"], batch=6, trials=40, seed=2,
                 proxy=True, theta=theta)
    px = df.attrs["proxy"]
    assert {"corr_W_znorm2", "mean_W", "mean_znorm2", "predicted_var_ratio_w_vs_rloo",
            "measured_var_ratio_w_vs_rloo"} <= set(px)
    assert -1 <= px["corr_W_znorm2"] <= 1 and px["mean_W"] > 0 and px["mean_znorm2"] > 0
    assert px["predicted_var_ratio_w_vs_rloo"] > 0 and px["measured_var_ratio_w_vs_rloo"] > 0
    # the measured ratio is the ratio of the table's variances
    assert px["measured_var_ratio_w_vs_rloo"] == pytest.approx(df["variance"][1] / df["variance"][0], rel=1e-9)
    assert "proxy" not in measure("garnet:S=4,A=3,b=2,seed=1,gamma=0.8", ["rloo"], batch=6, trials=5).attrs


def test_measure_is_a_pure_function_of_the_seed():
    kw = dict(batch=6, trials=30)
    a = measure("garnet:S=4,A=2,b=2,seed=2,gamma=0.9,horizon=5", ["reinforce", "gae:lambda=0.5"], seed=3, **kw)
    b = measure("garnet:S=4,A=2,b=2,seed=2,gamma=0.9,horizon=5", ["reinforce", "gae:lambda=0.5"], seed=3, **kw)
    c = measure("garnet:S=4,A=2,b=2,seed=2,gamma=0.9,horizon=5", ["reinforce", "gae:lambda=0.5"], seed=4, **kw)
    cols = ["bias_norm", "variance", "mse", "cosine", "p_value"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert list(a["mean"]) == list(b["mean"])
    assert not np.any(a[cols[:3]].to_numpy() == c[cols[:3]].to_numpy())


def test_measure_stochastic_objective():
    df = measure("gaussian_toy", ["naive", "score_function", "reparameterization"], batch=10, trials=2000, seed=0)
    assert list(df["estimator"]) == ["naive", "score_function", "reparameterization"]
    assert list(df["unbiased"]) == [False, True, True]
    assert (df["exact_grad_norm"] == 4.0).all()  # dJ/dtheta = 1 + 3 theta^2 at theta = 1
    naive = df.iloc[0]
    assert naive["mean"][0] == pytest.approx(2.0, abs=5 * np.sqrt(naive["variance"] / 2000))  # bias -2 (the contract)
    assert naive["p_value"] < 1e-6
    for j in (1, 2):
        row = df.iloc[j]
        assert abs(row["mean"][0] - 4.0) <= 5 * np.sqrt(row["variance"] / 2000)
    # reparameterisation has far lower variance than the score function here
    assert df.iloc[2]["variance"] < df.iloc[1]["variance"]


@pytest.mark.parametrize("kw, words", [
    (dict(problem="three_step_bandit", estimators="no_such", batch=4, trials=10), ["no_such"]),
    (dict(problem="three_step_bandit", estimators=["reinforce:x=1"], batch=4, trials=10), ["'x'", "reinforce"]),
    (dict(problem="three_step_bandit", estimators=["rloo"], batch=1, trials=10), ["rloo", "N"]),
    (dict(problem="three_step_bandit", estimators=[], batch=4, trials=10), ["no estimator"]),
    (dict(problem="three_step_bandit", estimators=["reinforce"], batch=0, trials=10), ["batch"]),
    (dict(problem="three_step_bandit", estimators=["reinforce"], batch=4, trials=1), ["trials"]),
    (dict(problem="gaussian_toy", estimators=["reinforce"], batch=4, trials=10), ["reinforce"]),
    (dict(problem="three_step_bandit", estimators=["reparameterization"], batch=4, trials=10), ["reparameterization"]),
    (dict(problem="no_such_problem", estimators=["reinforce"], batch=4, trials=10), ["no_such_problem"]),
])
def test_measure_refuses_bad_input(kw, words):
    prob = kw.pop("problem")
    with pytest.raises(PGBenchError) as info:
        measure(prob, **kw)
    for w in words:
        assert w in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- pgbench measure --json

def test_cli_measure_json_one_estimator(capsys):
    out = measure_json(capsys, "three_step_bandit", "--estimator", "reinforce_rtg", "--batch", "8", "--trials", "40",
                       "--seed", "5")
    assert isinstance(out, dict)
    assert CLI_KEYS <= set(out)
    assert out["estimator"] == "reinforce_rtg"
    assert np.shape(out["mean"]) == (3, 3)  # shaped like theta
    for k in CLI_KEYS - {"estimator", "mean"}:
        assert isinstance(out[k], float) and np.isfinite(out[k]), k
    assert out["seconds"] >= 0 and out["episodes_per_second"] > 0
    assert 0 <= out["p_value"] <= 1 and -1 <= out["cosine"] <= 1
    # the same numbers as the API
    df = measure("three_step_bandit", "reinforce_rtg", batch=8, trials=40, seed=5)
    for k in ("bias_norm", "variance", "mse", "cosine", "p_value"):
        assert out[k] == df[k][0], k
    assert out["mean"] == df["mean"][0]


def test_cli_measure_json_several_estimators_and_linear_mean_shape(capsys):
    out = measure_json(capsys, "boltzmann_bandit", "-e", "reinforce", "-e", "rloo", "-e", "natural", "-N", "4", "-K",
                       "30")
    assert isinstance(out, list) and [r["estimator"] for r in out] == ["reinforce", "rloo", "natural"]
    for r in out:
        assert CLI_KEYS <= set(r)
        assert np.shape(r["mean"]) == (1,)


def test_cli_measure_stochastic_objectives(capsys):
    out = measure_json(capsys, "gaussian_toy", "-e", "naive", "-e", "score_function", "-e", "reparameterization",
                       "--batch", "10", "--trials", "500", "--seed", "1")
    assert [r["estimator"] for r in out] == ["naive", "score_function", "reparameterization"]
    for r in out:
        assert CLI_KEYS <= set(r) and np.shape(r["mean"]) == (1,)
    assert out[0]["mean"][0] == pytest.approx(2.0, abs=0.3)  # biased: 2 instead of 4
    assert out[0]["bias_norm"] == pytest.approx(2.0, abs=0.3)
    assert out[2]["mean"][0] == pytest.approx(4.0, abs=0.3)
    out = measure_json(capsys, "categorical:K=3,seed=1", "-e", "score_function", "-e", "rloo", "-e",
                       "straight_through", "-N", "4", "-K", "50")
    assert [r["estimator"] for r in out] == ["score_function", "rloo", "straight_through"]
    assert all(np.shape(r["mean"]) == (3,) for r in out)


def test_cli_measure_json_proxy(capsys):
    out = measure_json(capsys, "garnet:S=4,A=3,b=2,seed=1,gamma=0.8", "-e", "rloo", "-e", "w_baseline", "-N", "6",
                       "-K", "20", "--proxy")
    assert all("corr_W_znorm2" in r["proxy"] for r in out)


def test_cli_measure_seed_determinism(capsys):
    args = ["garnet:S=4,A=2,b=2,seed=0,gamma=0.8", "-e", "reinforce_rtg", "-e", "rloo", "-N", "5", "-K", "25"]
    a = measure_json(capsys, *args, "--seed", "11")
    b = measure_json(capsys, *args, "--seed", "11")
    c = measure_json(capsys, *args, "--seed", "12")
    assert strip_time(a) == strip_time(b)
    for ra, rc in zip(a, c):
        assert ra["mean"] != rc["mean"] and ra["variance"] != rc["variance"]


def test_cli_measure_text_output(capsys):
    rc, out, err = run(capsys, "measure", "three_step_bandit", "-e", "reinforce", "-e", "reinforce_rtg", "-N", "4",
                       "-K", "20")
    assert rc == 0 and err == ""
    assert "reinforce_rtg" in out and "variance" in out


@pytest.mark.parametrize("argv, words", [
    (["three_step_bandit", "-e", "no_such_estimator", "-N", "4"], ["no_such_estimator"]),
    (["three_step_bandit", "-e", "gae:lambda=2", "-N", "4"], ["lambda"]),
    (["three_step_bandit", "-e", "gae:critic=oracle", "-N", "4"], ["oracle"]),
    (["three_step_bandit", "-e", "const_baseline", "-N", "4"], ["const_baseline", "b"]),
    (["three_step_bandit", "-e", "rloo", "-N", "1"], ["rloo"]),
    (["three_step_bandit", "-e", "reinforce", "-N", "0"], ["batch"]),
    (["three_step_bandit", "-e", "reinforce", "-N", "4", "-K", "1"], ["trials"]),
    (["no_such_problem", "-e", "reinforce", "-N", "4"], ["no_such_problem"]),
    (["three_step_bandit", "-e", "reinforce", "-N", "four"], ["four"]),
    (["three_step_bandit", "-e", "reinforce"], ["batch"]),
    (["three_step_bandit", "-N", "4"], ["estimator"]),
    (["gaussian_toy", "-e", "reinforce", "-N", "4"], ["reinforce"]),
    (["three_step_bandit", "-e", "reinforce", "-N", "4", "--theta", "bogus"], ["theta"]),
])
def test_cli_measure_bad_input_one_line_exit_2(capsys, argv, words):
    rc, out, err = run(capsys, "measure", *argv, "--json")
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgbench: error: "), err
    for w in words:
        assert w in lines[0], lines[0]

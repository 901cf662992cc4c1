"""``pgbench bench`` and the vectorised-NumPy reference it is compared with (issue: throughput
benchmark). Speed itself is never asserted here: these check that the reference computes the
right estimator and that the benchmark reports every figure, consistently."""
from __future__ import annotations

import json
import math

import numpy as np

from pgbench.exact import exact
from pgbench.kernels.numpy_ref import reinforce_rtg_numpy
from pgbench.measure.engine import sample_mdp

from conftest import garnet, random_terminal_mdp, random_theta, run_cli, z_crit
from pgbench import MDPProblem


def test_numpy_reference_is_reinforce_rtg():
    """Its batch estimates average to the exact gradient, as the kernel's do, within 5 standard
    errors (Bonferroni over coordinates); and both have the same total variance (within 5 standard
    errors of a ratio of 1)."""
    for prob in (garnet(3, S=5, A=3, gamma=0.9, horizon=6), MDPProblem.tabular(random_terminal_mdp(4, gamma=0.95))):
        prob = prob.with_theta(random_theta(prob, 1))
        g = exact(prob, prob.theta).grad.reshape(-1)
        K, N = 300, 20
        est_np = np.array([reinforce_rtg_numpy(prob, None, N, seed=k).reshape(-1) for k in range(K)])
        est_k = sample_mdp(prob, ["reinforce_rtg"], N=N, K=K, seed=0).estimates[:, 0]
        zc = z_crit(g.size)
        for est in (est_np, est_k):
            se = est.std(axis=0, ddof=1) / math.sqrt(K)
            live = se > 0
            assert np.all(np.abs(est.mean(axis=0) - g)[live] <= zc * se[live])
        # trace of the covariance, with its standard error from the spread of ||x - mean||^2
        (t_np, se_np), (t_k, se_k) = (_trace(est) for est in (est_np, est_k))
        ratio = t_np / t_k
        assert abs(ratio - 1.0) <= 5 * ratio * math.hypot(se_np / t_np, se_k / t_k)


def _trace(est: np.ndarray) -> tuple[float, float]:
    d2 = ((est - est.mean(axis=0)) ** 2).sum(axis=1)
    return float(d2.mean()), float(d2.std(ddof=1) / math.sqrt(len(d2)))


def test_bench_json_reports_every_figure(capsys):
    rc, out, err = run_cli(capsys, "bench", "--quick", "--json")
    assert rc == 0, err
    r = json.loads(out)
    for key in ("ns_per_step", "ns_per_step_numpy", "ns_per_step_rng_floor", "speedup_vs_numpy",
                "ratio_to_rng_floor", "threads", "ns_per_step_1thread", "ns_per_step_all_threads",
                "thread_scaling", "ns_per_step_all_estimators", "passes_all_estimators"):
        assert key in r, key
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["speedup_vs_numpy"] == r["ns_per_step_numpy"] / r["ns_per_step"]
    assert r["ratio_to_rng_floor"] == r["ns_per_step"] / r["ns_per_step_rng_floor"]
    assert r["thread_scaling"] == r["ns_per_step_1thread"] / r["ns_per_step_all_threads"]
    assert r["passes_all_estimators"] == 2  # the all-estimator set has in-batch estimators
    rc, out, err = run_cli(capsys, "bench", "--quick")
    assert rc == 0 and "generator floor" in out and "vectorised NumPy" in out

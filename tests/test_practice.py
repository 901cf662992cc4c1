"""Practice estimators (ppo_gae, normalized_advantage, gpomdp_baseline): kernel against a naive
reference on the same episodes, the exact mean of ppo_gae, unbiasedness of gpomdp_baseline."""
from __future__ import annotations

import numpy as np
import pytest

import naive_practice as nv
from pgbench import PGBenchError, make
from pgbench.estimators import parse, register_batch_estimator, unregister_batch_estimator
from pgbench.exact import exact
from pgbench.measure.engine import sample_mdp
from conftest import random_terminal_mdp, z_crit  # noqa: E402
from pgbench import MDPProblem

PROBLEMS = ["garnet:S=4,A=2,b=2,seed=2,gamma=0.8", "garnet:S=4,A=3,b=2,seed=5,gamma=0.9,horizon=5",
            "frozen_lake:gamma=0.9"]


def _with_batches(prob, names, N, K, seed):
    """Estimates of `names` and copies of the batches the cell's episodes make."""
    seen = []
    register_batch_estimator("t_capture", unbiased=False, replace=True)(
        lambda b: (seen.append(_copy(b)), np.zeros(b.actions.shape))[1])
    try:
        res = sample_mdp(prob, names + ["t_capture"], N=N, K=K, seed=seed)
    finally:
        unregister_batch_estimator("t_capture")
    return res, seen


def _copy(b):
    from dataclasses import replace
    return replace(b, states=b.states.copy(), actions=b.actions.copy(), rewards=b.rewards.copy(),
                   lengths=b.lengths.copy(), terminated=b.terminated.copy(), truncated=b.truncated.copy())


@pytest.mark.parametrize("problem", PROBLEMS)
def test_practice_estimators_match_naive_references(problem):
    prob = make(problem)
    names = ["ppo_gae:lambda=0.7", "normalized_advantage:base=ppo_gae:lambda=0.7",
             "normalized_advantage:base=reinforce_rtg", "gpomdp_baseline"]
    res, batches = _with_batches(prob, names, N=3, K=4, seed=1)
    for k, b in enumerate(batches):
        gae = nv.gae_no_gamma(b, 0.7)
        rtg = [[b.gamma ** t * sum(b.gamma ** (j - t) * r[j] for j in range(t, len(r))) for t in range(len(r))]
               for _, _, r in nv.episodes(b)]
        refs = [nv.grad_from_psi(b, gae), nv.grad_from_psi(b, nv.normalized(gae)),
                nv.grad_from_psi(b, nv.normalized(rtg)), nv.gpomdp_baseline(b)]
        for j, ref in enumerate(refs):
            np.testing.assert_allclose(res.estimates[k, j], ref, rtol=1e-9, atol=1e-11, err_msg=names[j])


def test_ppo_gae_is_gae_without_gamma_t_when_gamma_is_one():
    prob = MDPProblem.tabular(random_terminal_mdp(3, gamma=1.0), theta=np.random.default_rng(3).normal(size=(7, 3)))
    res = sample_mdp(prob, ["gae:lambda=0.6", "ppo_gae:lambda=0.6"], N=5, K=20, seed=0)
    np.testing.assert_allclose(res.estimates[:, 1], res.estimates[:, 0], rtol=0,
                               atol=1e-12 * np.abs(res.estimates[:, 0]).max())


@pytest.mark.parametrize("problem", PROBLEMS + ["chain:n=4,gamma=0.9"])
def test_ppo_gae_exact_mean(problem):
    """Closed form (pgbench) against a dense forward recursion (reference) and the sample mean."""
    prob = make(problem)
    th = np.random.default_rng(7).normal(size=prob.policy.theta_shape)
    gt = exact(prob, th)
    res = sample_mdp(prob, ["ppo_gae:lambda=0.9"], N=4, K=3000, seed=3, theta=th)
    mean = res.extras["exact_mean"]["ppo_gae:lambda=0.9"]
    C = nv.ppo_gae_mean_weights(prob, gt.pi, gt.A, prob.mdp.episode_cap)
    np.testing.assert_allclose(mean, prob.policy.contract(th, C).reshape(-1), rtol=1e-10, atol=1e-12)
    est = res.estimates[:, 0]
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - mean) <= z_crit(mean.size) * se + 1e-12)
    assert np.linalg.norm(mean - gt.grad.reshape(-1)) > 0.05 * np.linalg.norm(gt.grad)  # biased


@pytest.mark.parametrize("problem", ["garnet:S=4,A=2,b=2,seed=2,gamma=0.8", "frozen_lake:gamma=0.9"])
def test_gpomdp_baseline_is_unbiased(problem):
    prob = make(problem)
    th = np.random.default_rng(8).normal(size=prob.policy.theta_shape)
    res = sample_mdp(prob, ["gpomdp_baseline", "reinforce_rtg"], N=6, K=3000, seed=4, theta=th)
    g = res.targets[0]
    est = res.estimates[:, 0]
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(axis=0) - g) <= z_crit(g.size) * se + 1e-12)


def test_parameters_are_checked():
    with pytest.raises(PGBenchError, match="normalized_advantage takes a base"):
        parse("normalized_advantage:base=rloo")
    with pytest.raises(PGBenchError, match="lambda must be in"):
        parse("ppo_gae:lambda=2")
    with pytest.raises(PGBenchError, match="natural takes a built-in"):
        parse("natural:base=ppo_gae")
    assert not parse("ppo_gae").unbiased and parse("gpomdp_baseline").unbiased
    with pytest.raises(PGBenchError, match="N >= 2"):
        sample_mdp(make("three_step_bandit"), ["gpomdp_baseline"], N=1, K=2)

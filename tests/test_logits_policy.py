"""Any differentiable policy: exact J, gradient and Fisher through the logits' vjp."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

import pgbench
from pgbench import PGBenchError, make
from pgbench.exact import exact
from pgbench.measure.engine import sample_mdp
from pgbench.policies import LogitsPolicy
from conftest import garnet, linear_version, random_theta, run_cli, z_crit  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def _example(name):
    spec = importlib.util.spec_from_file_location(f"_ex_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def mlp_mod():
    mod = _example("mlp_policy")
    yield mod
    pgbench.estimators.unregister_batch_estimator("mlp_rtg_grad")


def _fd_grad(problem, policy, theta, h=1e-5):
    g = np.zeros(theta.size)
    for i in range(theta.size):
        e = np.zeros(theta.size)
        e[i] = h
        g[i] = (exact(problem, theta + e, policy=policy, max_steps=0).J
                - exact(problem, theta - e, policy=policy, max_steps=0).J) / (2 * h)
    return g


@pytest.mark.parametrize("spec", ["garnet:S=5,A=3,b=2,seed=3,gamma=0.9",
                                  "garnet:S=4,A=2,b=2,seed=1,gamma=0.95,horizon=6", "frozen_lake"])
def test_mlp_exact_gradient_matches_finite_differences(mlp_mod, spec):
    prob = make(spec)
    feats = np.random.default_rng(0).normal(size=(prob.mdp.S, 3))  # given state features
    for pol in (mlp_mod.mlp_policy(prob.mdp.S, prob.mdp.A, hidden=4),
                mlp_mod.mlp_policy(prob.mdp.S, prob.mdp.A, hidden=3, features=feats, seed=1)):
        gt = exact(prob, policy=pol)
        assert gt.grad.shape == pol.theta.shape
        fd = _fd_grad(prob, pol, pol.theta)
        np.testing.assert_allclose(gt.grad, fd, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(fd).max()))


def test_tabular_and_linear_softmax_are_special_cases():
    prob = garnet(4)
    th = random_theta(prob, 4)
    tab = LogitsPolicy(lambda t: t, lambda t, c: c, th)
    ref = exact(prob, th)
    gt = exact(prob, policy=tab)
    np.testing.assert_allclose(gt.grad, ref.grad, rtol=1e-12, atol=1e-14)
    assert gt.J == pytest.approx(ref.J, rel=1e-13)
    np.testing.assert_allclose(gt.fisher_matrix(), ref.fisher_matrix(), atol=1e-12)
    np.testing.assert_allclose(gt.natural_gradient().reshape(-1), ref.natural_gradient().reshape(-1), atol=1e-9)
    lin = linear_version(prob, 4)
    phi = lin.policy.features
    lp = LogitsPolicy(lambda t: phi @ t, lambda t, c: np.einsum("sa,sad->d", c, phi), lin.theta)
    ref = exact(lin)
    gt = exact(prob, policy=lp)
    np.testing.assert_allclose(gt.grad, ref.grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gt.natural_gradient(), ref.natural_gradient(), rtol=1e-8, atol=1e-10)


def test_sampling_with_a_logits_policy_is_the_tabular_path(mlp_mod):
    """Same MDP, same pi: the tabular problem at theta = logits gives the same score weights, so
    reinforce_rtg's estimates are the tabular ones pushed through the chain rule."""
    prob = make("garnet:S=5,A=3,b=2,seed=3,gamma=0.9")
    pol = mlp_mod.mlp_policy(5, 3, hidden=4)
    mine = sample_mdp(prob.with_policy(pol), ["reinforce_rtg", "mlp_rtg_grad"], N=6, K=40, seed=2, cell=11)
    tab = sample_mdp(prob.with_theta(pol.logits(pol.theta)), ["reinforce_rtg"], N=6, K=40, seed=2, cell=11)
    # tabular estimate g_tab[k] is the logit-space gradient: chain rule by the vjp
    chained = np.stack([pol.vjp(pol.theta, g.reshape(5, 3)) for g in tab.estimates[:, 0]])
    scale = np.abs(chained).max()
    np.testing.assert_allclose(mine.estimates[:, 0], chained, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(mine.estimates[:, 1], chained, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(mine.targets[0], exact(prob, policy=pol).grad, rtol=1e-12)


def test_mlp_batch_estimator_is_unbiased(mlp_mod):
    prob = make("garnet:S=5,A=3,b=2,seed=3,gamma=0.8")
    pol = mlp_mod.mlp_policy(5, 3, hidden=4)
    res = sample_mdp(prob.with_policy(pol), ["mlp_rtg_grad"], N=8, K=3000, seed=5)
    g = res.targets[0]
    est = res.estimates[:, 0]
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    zc = z_crit(g.size)
    assert np.all(np.abs(est.mean(axis=0) - g) <= zc * se + 1e-12)


def test_measure_and_cli_take_a_policy(mlp_mod, capsys):
    df = pgbench.measure.measure("garnet:S=5,A=3,b=2,seed=3", ["reinforce_rtg"], batch=4, trials=20,
                                 policy=mlp_mod.mlp_policy(5, 3, hidden=4))
    assert df["d"][0] == mlp_mod.mlp_policy(5, 3, hidden=4).dim
    target = os.path.join(EXAMPLES, "mlp_policy.py") + ":mlp"
    rc, out, err = run_cli(capsys, "exact", "garnet:S=5,A=3,b=2,seed=3", "--policy", target, "--json")
    assert rc == 0, err
    res = json.loads(out)
    prob = make("garnet:S=5,A=3,b=2,seed=3")
    np.testing.assert_allclose(res["grad"], exact(prob, policy=mlp_mod.mlp(prob)).grad, rtol=1e-12)
    assert res["policy"] == "logits"
    rc, out, err = run_cli(capsys, "measure", "garnet:S=5,A=3,b=2,seed=3", "-N", "4", "-K", "10", "-e", "reinforce_rtg",
                           "-e", "mlp_rtg_grad", "--policy", target, "--json")
    assert rc == 0, err
    rows = json.loads(out)
    np.testing.assert_allclose(rows[1]["mean"], rows[0]["mean"], rtol=1e-10)


@pytest.mark.parametrize("logits, vjp, match", [
    (lambda t: np.zeros(3), lambda t, c: t, "must be an \\(S, A\\) array"),
    (lambda t: np.full((2, 2), np.nan), lambda t, c: t, "non-finite"),
    (lambda t: "x", lambda t, c: t, "did not return an array"),
])
def test_bad_logits_functions_are_refused(logits, vjp, match):
    with pytest.raises(PGBenchError, match=match):
        LogitsPolicy(logits, vjp, np.zeros(4))


def test_bad_vjp_is_refused():
    with pytest.raises(PGBenchError, match="vjp returned 3 numbers, expected 4"):  # checked when made
        LogitsPolicy(lambda t: t.reshape(2, 2), lambda t, c: np.zeros(3), np.zeros(4))
    pol = LogitsPolicy(lambda t: t.reshape(2, 2), lambda t, c: np.asarray(c).reshape(-1), np.zeros(4))
    with pytest.raises(PGBenchError, match="S=2, A=2"):
        exact(make("garnet:S=3,A=2,b=2,seed=0"), policy=pol)


def test_jax_adapter():
    jax = pytest.importorskip("jax")
    from pgbench.policies import jax_policy
    jnp = jax.numpy
    prob = make("garnet:S=4,A=2,b=2,seed=1,gamma=0.9")
    X = np.eye(4)

    def logits(theta):
        W1 = theta[:12].reshape(4, 3)
        W2 = theta[12:].reshape(3, 2)
        return jnp.tanh(jnp.asarray(X) @ W1) @ W2

    pol = jax_policy(logits, np.random.default_rng(0).normal(size=18))
    gt = exact(prob, policy=pol)
    np.testing.assert_allclose(gt.grad, _fd_grad(prob, pol, pol.theta), rtol=1e-5, atol=1e-8)

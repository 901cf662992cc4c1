"""Problems: registry ids, built-ins, the .npz format (docs/howto/mdp.rst), input validation, immutability."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pgbench import LinearSoftmax, MDPProblem, PGBenchError, TabularMDP, TabularSoftmax, make
from pgbench.exact import exact
from pgbench.problems import REGISTRY, load_npz, save_npz
from pgbench.problems.registry import describe, parse_spec

from conftest import garnet, linear_version, random_terminal_mdp, random_theta


def _small_dense(S=3, A=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(S), size=(S, A)), rng.random((S, A)), np.full(S, 1.0 / S)


# ---------------------------------------------------------------------------- registry
def test_parse_spec():
    assert parse_spec("garnet") == ("garnet", {})
    assert parse_spec("garnet:S=5, A=2 ,b=2") == ("garnet", {"S": "5", "A": "2", "b": "2"})


def test_registry_parameters_reach_the_problem():
    p = make("garnet:S=5,A=2,b=2,seed=3")
    assert isinstance(p, MDPProblem)
    assert (p.mdp.S, p.mdp.A) == (5, 2)
    # b = 2 successors per (s, a): every row of P has exactly two non-zero entries
    assert np.all((p.mdp.P > 0).sum(axis=2) == 2)
    # the seed selects the instance: same seed same MDP, other seed another one
    np.testing.assert_array_equal(make("garnet:S=5,A=2,b=2,seed=3").mdp.P, p.mdp.P)
    assert not np.array_equal(make("garnet:S=5,A=2,b=2,seed=4").mdp.P, p.mdp.P)
    q = make("garnet:S=7,A=3,b=1,seed=0,gamma=0.5,horizon=4,noise=0.25")
    assert (q.mdp.S, q.mdp.A, q.mdp.gamma, q.mdp.horizon) == (7, 3, 0.5, 4)
    assert np.all((q.mdp.P > 0).sum(axis=2) == 1)  # b = 1: deterministic
    assert q.mdp.reward_noise == "gaussian"
    np.testing.assert_array_equal(q.mdp.reward_scale, 0.25)
    assert make("garnet:S=7").mdp.unbounded and make("garnet").mdp.gamma == 0.9
    c = make("chain:n=9,gamma=0.7")
    assert (c.mdp.S, c.mdp.A, c.mdp.gamma) == (9, 2, 0.7)
    g = make("gridworld:n=5,slip=0")
    assert g.mdp.S == 25 and g.mdp.terminal.sum() == 1 and np.all(g.mdp.P.max(axis=2) == 1.0)
    assert make("gaussian_toy:theta=2.5").theta[0] == 2.5
    assert make("categorical:K=6").K == 6


def test_registry_theta_argument():
    th = random_theta(garnet(0), 0)
    p = make("garnet:S=6,A=3,b=3,seed=0", theta=th)
    np.testing.assert_array_equal(p.theta, th)
    assert make(p) is p
    np.testing.assert_array_equal(make("gaussian_toy", theta=[3.0]).theta, [3.0])


def test_builtin_name_wins_over_a_same_named_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chain").mkdir()
    (tmp_path / "garnet").write_text("not a problem")
    assert make("chain").mdp.S == 6
    assert make("garnet:S=4").mdp.S == 4
    P, R, rho0 = _small_dense()
    np.savez(tmp_path / "mine.npz", P=P, R=R, rho0=rho0, gamma=0.5)
    assert make("mine.npz").mdp.gamma == 0.5  # a relative path still works


def test_describe_lists_every_builtin():
    names = [row[0] for row in describe()]
    assert sorted(names) == sorted(REGISTRY)
    for name, params, doc in describe():
        assert doc, name


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_builtins_are_valid(name):
    prob = make(name)
    if prob.kind == "lqg":
        gt = exact(prob)
        assert np.isfinite(gt.J) and np.all(np.isfinite(gt.grad))
        return
    if prob.kind != "mdp":
        assert np.isfinite(prob.J()) and np.all(np.isfinite(prob.grad()))
        return
    mdp = prob.mdp
    P = mdp.P
    assert P.shape == (mdp.S, mdp.A, mdp.S)
    assert np.all(P >= 0)
    np.testing.assert_allclose(P.sum(axis=2), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.isfinite(mdp.R))
    assert np.all(mdp.rho0 >= 0) and mdp.rho0.sum() == pytest.approx(1.0, abs=1e-12)
    assert not np.any(mdp.rho0[mdp.terminal] > 0)
    assert 0.0 <= mdp.gamma <= 1.0
    assert prob.theta.shape == prob.policy.theta_shape
    gt = exact(prob)
    assert np.isfinite(gt.J) and np.all(np.isfinite(gt.grad))


def test_frozen_lake_is_the_standard_slippery_4x4():
    p = make("frozen_lake")
    mdp = p.mdp
    assert (mdp.S, mdp.A) == (16, 4) and mdp.unbounded
    holes, goal = [5, 7, 11, 12], 15
    np.testing.assert_array_equal(np.flatnonzero(mdp.terminal), sorted(holes + [goal]))
    np.testing.assert_array_equal(mdp.rho0, np.eye(16)[0])
    UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3  # pgbench's action order (pgbench.problems.builtins._MOVES)
    P = mdp.P
    # slippery: the intended move or either perpendicular one, 1/3 each; walls keep you in place
    np.testing.assert_allclose(P[0, LEFT], np.bincount([0, 0, 4], minlength=16) / 3)  # left/up: wall, down: 4
    np.testing.assert_allclose(P[0, RIGHT], np.bincount([1, 0, 4], minlength=16) / 3)  # right: 1, up: wall, down: 4
    np.testing.assert_allclose(P[6, DOWN], np.bincount([10, 5, 7], minlength=16) / 3)
    np.testing.assert_allclose(P[14, RIGHT], np.bincount([15, 10, 14], minlength=16) / 3)
    # reward 1 on entering the goal only: from 14, right/up/down reach 15 w.p. 1/3, left never
    np.testing.assert_allclose(mdp.R[14], [1 / 3, 1 / 3, 0.0, 1 / 3])
    np.testing.assert_allclose(mdp.R[10], [0.0, 0.0, 0.0, 0.0])
    # the goal is entered only from 14 (13 and 11 are not beside it / 11 is a hole): 3 actions x 1/3
    assert mdp.R.sum() == pytest.approx(1.0, abs=1e-15)
    assert mdp.gamma == 0.99


def test_three_step_bandit_and_boltzmann_bandit_are_as_specified():
    t = make("three_step_bandit").mdp
    assert (t.S, t.A, t.horizon, t.gamma) == (3, 3, 3, 1.0)
    np.testing.assert_array_equal(t.R, np.eye(3))
    b = make("boltzmann_bandit")
    assert isinstance(b.policy, LinearSoftmax)
    np.testing.assert_array_equal(b.policy.features.reshape(-1), [3.0, 1.0])
    np.testing.assert_array_equal(b.mdp.R, [[1.0, 100.0]])
    np.testing.assert_array_equal(b.theta, [1.0])


# ---------------------------------------------------------------------------- .npz round trip
def _roundtrip(tmp_path, prob, name="prob.npz"):
    path = str(tmp_path / name)
    save_npz(path, prob)
    back = load_npz(path)
    assert isinstance(back, MDPProblem)
    return back


@pytest.mark.parametrize("which", ["garnet", "garnet_finite_noise", "linear", "frozen_lake", "terminal_gamma1"])
def test_npz_roundtrip(tmp_path, which):
    if which == "garnet":
        prob = garnet(0).with_theta(random_theta(garnet(0), 0))
    elif which == "garnet_finite_noise":
        prob = make("garnet:S=5,A=2,b=2,seed=1,horizon=6,gamma=1,noise=0.5")
    elif which == "linear":
        prob = linear_version(garnet(2, gamma=0.8), 2)
    elif which == "frozen_lake":
        prob = make("frozen_lake")
    else:
        prob = MDPProblem.tabular(random_terminal_mdp(3))
    back = _roundtrip(tmp_path, prob)
    a, b = prob.mdp, back.mdp
    np.testing.assert_array_equal(a.P, b.P)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.rho0, b.rho0)
    np.testing.assert_array_equal(a.terminal, b.terminal)
    assert (a.gamma, a.horizon, a.reward_noise) == (b.gamma, b.horizon, b.reward_noise)
    np.testing.assert_array_equal(a.reward_scale, b.reward_scale)
    assert back.policy.kind == prob.policy.kind
    np.testing.assert_array_equal(back.theta, prob.theta)
    ga, gb = exact(prob), exact(back)
    assert ga.J == gb.J  # identical arrays and the same dense solve: bit-identical
    # Q sums over each (s, a)'s successors, which the file stores in state order rather than the
    # garnet's order: the same numbers added in another order agree to a few ulps
    np.testing.assert_allclose(ga.grad, gb.grad, rtol=1e-13, atol=1e-16)
    # make() takes the path too
    assert exact(make(str(tmp_path / "prob.npz"))).J == ga.J


def test_npz_minimal_file_and_optional_arrays(tmp_path):
    P, R, rho0 = _small_dense()
    path = tmp_path / "mine.npz"
    np.savez(path, P=P, R=R, rho0=rho0, gamma=0.9)
    p = load_npz(str(path))
    assert p.name == "mine" and p.mdp.unbounded and p.policy.kind == "tabular"
    np.testing.assert_array_equal(p.theta, np.zeros((3, 2)))
    np.savez(path, P=P, R=R, rho0=rho0, gamma=1.0, horizon=4, theta=np.ones(5), features=np.ones((3, 2, 5)))
    p = load_npz(str(path))
    assert p.mdp.horizon == 4 and p.policy.kind == "linear" and p.theta.shape == (5,)


def test_save_npz_refuses_uniform_noise(tmp_path):
    with pytest.raises(PGBenchError, match="uniform"):
        save_npz(str(tmp_path / "x.npz"), make("three_step_bandit"))


# ---------------------------------------------------------------------------- bad input
def _raises(match, fn, *args, **kw):
    with pytest.raises(PGBenchError, match=match) as info:
        fn(*args, **kw)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)  # the CLI prints it on one line
    return str(info.value)


def test_rows_not_summing_to_one_name_the_state_and_action():
    P, R, rho0 = _small_dense()
    P[1, 0, 2] += 0.01
    msg = _raises(r"P\[s=1, a=0", TabularMDP.from_dense, P, R, rho0, 0.9)
    assert "sums to" in msg
    P, _, _ = _small_dense()
    P[2, 1] = 0.0
    _raises(r"P\[s=2, a=1", TabularMDP.from_dense, P, R, rho0, 0.9)


def test_rows_within_tolerance_are_normalised():
    P, R, rho0 = _small_dense()
    P[0, 0] *= 1 + 1e-12
    mdp = TabularMDP.from_dense(P, R, rho0, 0.9)
    np.testing.assert_allclose(mdp.P.sum(axis=2), 1.0, rtol=0, atol=1e-15)


def test_negative_entries():
    P, R, rho0 = _small_dense()
    P[0, 1] = [1.2, -0.2, 0.0]
    _raises(r"negative.*s=0, a=1, s'=1", TabularMDP.from_dense, P, R, rho0, 0.9)
    P, R, _ = _small_dense()
    _raises("rho0", TabularMDP.from_dense, P, R, [1.5, -0.5, 0.0], 0.9)
    _raises("rho0", TabularMDP.from_dense, P, R, [0.5, 0.2, 0.2], 0.9)
    _raises("noise", TabularMDP.from_dense, P, R, [1, 0, 0], 0.9, reward_std=-1.0)
    _raises("noise", make, "garnet:noise=-0.5")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_everywhere(bad):
    P, R, rho0 = _small_dense()
    P2 = P.copy()
    P2[1, 1, 2] = bad
    msg = _raises(r"P has a non-finite entry", TabularMDP.from_dense, P2, R, rho0, 0.9)
    assert "(1, 1, 2)" in msg  # the index into P as the user gave it
    R2 = R.copy()
    R2[2, 0] = bad
    _raises(r"R has a non-finite entry.*\(2, 0\)", TabularMDP.from_dense, P, R2, rho0, 0.9)
    rho2 = rho0.copy()
    rho2[0] = bad
    _raises("rho0 has a non-finite", TabularMDP.from_dense, P, R, rho2, 0.9)
    _raises("gamma", TabularMDP.from_dense, P, R, rho0, bad)
    _raises("reward_std", TabularMDP.from_dense, P, R, rho0, 0.9, reward_std=bad)
    mdp = TabularMDP.from_dense(P, R, rho0, 0.9)
    th = np.zeros((3, 2))
    th[1, 1] = bad
    _raises("theta", MDPProblem.tabular, mdp, th)
    _raises("theta", exact, MDPProblem.tabular(mdp), th)
    phi = np.ones((3, 2, 2))
    phi[0, 1, 1] = bad
    _raises("features", MDPProblem.linear, mdp, phi)
    _raises("theta", make, f"gaussian_toy:theta={bad}")
    _raises("gamma", make, f"garnet:gamma={bad}")
    _raises("noise", make, f"garnet:noise={bad}")
    _raises("slip", make, f"gridworld:slip={bad}")
    _raises("S", make, f"garnet:S={bad}")


def test_shapes_that_disagree():
    P, R, rho0 = _small_dense()
    _raises("P must have shape", TabularMDP.from_dense, P[:, :, :2], R, rho0, 0.9)
    _raises("P must have shape", TabularMDP.from_dense, P[0], R, rho0, 0.9)
    _raises("P must have", TabularMDP.from_dense, np.zeros((0, 2, 0)), np.zeros((0, 2)), np.zeros(0), 0.9)
    _raises(r"R has shape \(2, 2\)", TabularMDP.from_dense, P, R[:2], rho0, 0.9)
    _raises(r"rho0 has shape", TabularMDP.from_dense, P, R, rho0[:2], 0.9)
    _raises("terminal has shape", TabularMDP.from_dense, P, R, rho0, 0.9, terminal=[True, False])
    _raises("reward_std", TabularMDP.from_dense, P, R, rho0, 0.9, reward_std=np.ones(5))
    _raises("next_idx", TabularMDP.from_sparse, np.zeros((3, 2, 2), int), P, R, rho0, 0.9)
    _raises("next_idx", TabularMDP.from_sparse, np.full((3, 2, 3), 3), P, R, rho0, 0.9)
    mdp = TabularMDP.from_dense(P, R, rho0, 0.9)
    _raises(r"theta has shape", MDPProblem.tabular, mdp, np.zeros((2, 3)))
    _raises("features", MDPProblem.linear, mdp, np.ones((3, 2)))
    _raises("policy is for S=4", MDPProblem.linear, mdp, np.ones((4, 2, 3)))
    _raises("policy is for", MDPProblem, mdp, TabularSoftmax(3, 3), np.zeros((3, 3)))


def test_non_numeric_input():
    P, R, rho0 = _small_dense()
    _raises("P must be numeric", TabularMDP.from_dense, np.full((3, 2, 3), "x"), R, rho0, 0.9)
    _raises("R must be numeric", TabularMDP.from_dense, P, np.full((3, 2), "x"), rho0, 0.9)
    _raises("gamma", TabularMDP.from_dense, P, R, rho0, "high")
    _raises("reward_std", TabularMDP.from_dense, P, R, rho0, 0.9, reward_std="x")
    _raises("features", MDPProblem.linear, TabularMDP.from_dense(P, R, rho0, 0.9), np.full((3, 2, 1), "x"))
    _raises("terminal", TabularMDP.from_dense, P, R, rho0, 0.9, terminal=[0, 2, 0])


@pytest.mark.parametrize("gamma", [-0.1, 1.0000001, 2, "0.5x"])
def test_gamma_outside_unit_interval(gamma):
    P, R, rho0 = _small_dense()
    _raises("gamma", TabularMDP.from_dense, P, R, rho0, gamma)


def test_horizon_must_be_a_positive_integer():
    P, R, rho0 = _small_dense()
    for h in (0, -2, 2.5, "3"):
        _raises("horizon", TabularMDP.from_dense, P, R, rho0, 0.9, horizon=h)
    assert TabularMDP.from_dense(P, R, rho0, 0.9, horizon=np.int64(3)).horizon == 3
    _raises("max_steps", TabularMDP.from_dense, P, R, rho0, 0.9, max_steps=0)


def test_unbounded_problem_that_never_terminates():
    P, R, rho0 = _small_dense()
    msg = _raises("singular", TabularMDP.from_dense, P, R, rho0, 1.0)
    assert "gamma = 1" in msg
    # finite horizon or gamma < 1 are fine
    TabularMDP.from_dense(P, R, rho0, 1.0, horizon=5)
    TabularMDP.from_dense(P, R, rho0, 0.999)
    # a terminal state exists but state 1 can never reach it (it is absorbing)
    P = np.zeros((3, 2, 3))
    P[0, :, 2] = 1.0
    P[1, :, 1] = 1.0
    P[2, :, 2] = 1.0
    msg = _raises("state 1 cannot reach a terminal state", TabularMDP.from_dense, P, np.zeros((3, 2)),
                  [1.0, 0.0, 0.0], 1.0, terminal=[False, False, True])
    assert "singular" in msg
    _raises("terminal state 2", TabularMDP.from_dense, P, np.zeros((3, 2)), [0.5, 0.0, 0.5], 0.9,
            terminal=[False, False, True])


def test_unknown_and_malformed_problem_ids():
    msg = _raises("unknown problem 'garnett'", make, "garnett")
    assert "garnet" in msg.split("known:")[1]
    _raises("unknown problem", make, ":S=3")
    msg = _raises("unknown parameter 'Z' for problem garnet", make, "garnet:S=5,Z=2")
    assert "known: S, A, b" in msg
    _raises("malformed parameter 'S'", make, "garnet:S")
    _raises("malformed parameter", make, "garnet:S=5,,A=2")
    _raises("malformed parameter", make, "garnet:=5")
    _raises("duplicate parameter 'S'", make, "garnet:S=5,S=6")
    _raises("parameter S of problem garnet: cannot read 'abc' as int", make, "garnet:S=abc")
    _raises("as int", make, "garnet:S=2.5")
    _raises("as float", make, "garnet:gamma=high")
    _raises("seed", make, "garnet:seed=-1")
    _raises("garnet needs", make, "garnet:S=3,b=4")
    _raises("gridworld needs", make, "gridworld:n=1")
    _raises("chain needs", make, "chain:n=1")
    _raises("categorical needs", make, "categorical:K=1")
    _raises("a problem must be a name or a path", make, 3.5)


def test_missing_and_malformed_files(tmp_path):
    _raises("no such problem file", make, str(tmp_path / "nope.npz"))
    _raises("no such problem file", load_npz, str(tmp_path / "nope.npz"))
    txt = tmp_path / "text.npz"
    txt.write_text("this is not a zip archive\n")
    _raises("cannot read .*text.npz", make, str(txt))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _raises("cannot read", make, str(empty))
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    _raises("cannot read .*array.npy", make, str(npy))
    _raises("cannot read", make, str(tmp_path))  # a directory
    P, R, rho0 = _small_dense()
    bad = tmp_path / "bad.npz"

    def write(**arrays):
        np.savez(bad, **arrays)
        return str(bad)

    _raises("lacks required array.*rho0", make, write(P=P, R=R, gamma=0.9))
    _raises("unknown array.*Rmean", make, write(P=P, R=R, rho0=rho0, gamma=0.9, Rmean=R))
    _raises("R has shape", make, write(P=P, R=R.T, rho0=rho0, gamma=0.9))
    _raises("P must have shape", make, write(P=P[:, :, :2], R=R, rho0=rho0, gamma=0.9))
    _raises("gamma must be a scalar", make, write(P=P, R=R, rho0=rho0, gamma=[0.9, 0.9]))
    _raises("gamma", make, write(P=P, R=R, rho0=rho0, gamma=1.5))
    _raises("horizon", make, write(P=P, R=R, rho0=rho0, gamma=0.9, horizon=-1))
    _raises("horizon", make, write(P=P, R=R, rho0=rho0, gamma=0.9, horizon=2.5))
    _raises("horizon", make, write(P=P, R=R, rho0=rho0, gamma=0.9, horizon=np.nan))
    _raises("horizon", make, write(P=P, R=R, rho0=rho0, gamma=0.9, horizon="ten"))
    _raises("terminal has shape", make, write(P=P, R=R, rho0=rho0, gamma=0.9, terminal=[True]))
    _raises("reward_std", make, write(P=P, R=R, rho0=rho0, gamma=0.9, reward_std=np.ones(7)))
    _raises("theta has shape", make, write(P=P, R=R, rho0=rho0, gamma=0.9, theta=np.zeros((2, 2))))
    _raises("features", make, write(P=P, R=R, rho0=rho0, gamma=0.9, features=np.ones((3, 2))))
    _raises("P must be numeric", make, write(P=np.full((3, 2, 3), "a"), R=R, rho0=rho0, gamma=0.9))
    _raises("P has a non-finite", make, write(P=np.full((3, 2, 3), np.nan), R=R, rho0=rho0, gamma=0.9))
    _raises("singular", make, write(P=P, R=R, rho0=rho0, gamma=1.0))
    # an object array needs pickle, which load_npz never allows
    np.savez(bad, P=np.array([P, None], dtype=object), R=R, rho0=rho0, gamma=0.9)
    _raises("cannot read", make, str(bad))


# ---------------------------------------------------------------------------- immutability
def test_tabular_mdp_is_immutable():
    P, R, rho0 = _small_dense()
    mdp = TabularMDP.from_dense(P, R, rho0, 0.9, terminal=None, reward_std=0.1)
    for name in ("next_idx", "next_prob", "R", "rho0", "terminal", "reward_scale", "P"):
        arr = getattr(mdp, name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[(0,) * arr.ndim] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        mdp.gamma = 0.5
    # the MDP owns copies: changing the caller's arrays afterwards changes nothing
    J = exact(MDPProblem.tabular(mdp)).J
    P[:] = 1.0 / 3
    R[:] = 7.0
    rho0[:] = [1.0, 0.0, 0.0]
    assert exact(MDPProblem.tabular(mdp)).J == J
    prob = MDPProblem.linear(mdp, np.ones((3, 2, 2)), theta=[0.5, 0.1])
    assert not prob.theta.flags.writeable and not prob.policy.features.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        prob.theta = np.zeros(2)


def test_sparse_and_dense_construction_agree():
    p = make("garnet:S=6,A=2,b=3,seed=5")
    m = p.mdp
    again = TabularMDP.from_dense(m.P, m.R, m.rho0, m.gamma)
    np.testing.assert_array_equal(again.P, m.P)
    assert again.K == 3  # only reachable successors are kept
    th = random_theta(p, 5)
    assert exact(MDPProblem.tabular(again), th).J == pytest.approx(exact(p, th).J, rel=1e-14)

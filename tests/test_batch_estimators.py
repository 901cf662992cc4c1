"""Python batch estimators: same episodes as the built-ins, deterministic, clear errors."""
from __future__ import annotations

import dataclasses
import json
import os

import numba
import numpy as np
import pytest

from pgbench import PGBenchError, make
from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
from pgbench.estimators.user import END_CAP, END_HORIZON, END_TERMINAL
from pgbench.measure.engine import sample_mdp
from conftest import capture_batches, run_cli  # noqa: E402

GARNET = "garnet:S=6,A=3,b=3,seed=1,gamma=0.8"  # unbounded: episodes cut by the cap


def np_rtg(batch):
    """reward_to_go written from the contract's formula with NumPy: psi_t = gamma^t G_t."""
    G = np.zeros_like(batch.rewards)
    acc = np.zeros(batch.rewards.shape[0])
    for t in range(batch.rewards.shape[1] - 1, -1, -1):
        acc = batch.rewards[:, t] + batch.gamma * acc
        G[:, t] = acc
    return batch.gamma ** np.arange(G.shape[1]) * G


@pytest.fixture
def registered():
    names = []

    def reg(name, fn, **kw):
        register_batch_estimator(name, unbiased=kw.pop("unbiased", True), replace=True, **kw)(fn)
        names.append(name)
        return name

    yield reg
    for n in names:
        unregister_batch_estimator(n)


@pytest.mark.parametrize("problem", [GARNET, "three_step_bandit", "gridworld"])
def test_numpy_reward_to_go_reproduces_the_builtin_trial_by_trial(registered, problem):
    registered("t_np_rtg", np_rtg)
    prob = make(problem)
    old = numba.get_num_threads()
    try:
        outs = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            res = sample_mdp(prob, ["reinforce_rtg", "t_np_rtg"], N=7, K=30, seed=3)
            outs.append(res.estimates)
    finally:
        numba.set_num_threads(old)
    for est in outs:
        ref, mine = est[:, 0], est[:, 1]
        scale = np.abs(ref).max()
        assert scale > 0
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-12 * scale)
    # the Python estimator is bit-identical across thread counts
    assert np.array_equal(outs[0][:, 1], outs[1][:, 1])


def test_batch_fields_describe_the_episodes():
    prob = make("three_step_bandit")
    _, seen = capture_batches(prob, [], N=5, K=2, seed=0)
    assert len(seen) == 2
    b = seen[0]
    assert b.states.shape == (5, 4) and b.actions.shape == (5, 3) and b.rewards.shape == (5, 3)
    assert b.states.dtype == np.int64 and b.actions.dtype == np.int64
    assert (b.lengths == 3).all() and b.truncated.all() and not b.terminated.any()
    assert b.V.shape == (4, prob.mdp.S) and b.Q.shape == (3, prob.mdp.S, prob.mdp.A)
    np.testing.assert_allclose(b.pi, prob.policy.probs(prob.theta))


def test_terminated_and_padding_on_a_terminal_problem():
    prob = make("frozen_lake")
    _, seen = capture_batches(prob, [], N=50, K=1, seed=0)
    b = seen[0]
    term = prob.mdp.terminal
    for i in range(b.N):
        L = b.lengths[i]
        assert (b.actions[i, :L] >= 0).all() and (b.actions[i, L:] == -1).all()
        assert (b.states[i, :L + 1] >= 0).all() and (b.states[i, L + 1:] == -1).all()
        assert (b.rewards[i, L:] == 0).all()
        assert b.terminated[i] == term[b.states[i, L]] and b.truncated[i] == (not b.terminated[i])
        assert not term[b.states[i, :L]].any()
    assert b.terminated.any()


def test_grad_return_matches_contraction(registered):
    """returns='grad': the user contracts psi with the policy's score table themselves."""
    def rtg_grad(batch):
        psi = np_rtg(batch)
        g = batch.policy.score_table(batch.theta)  # (S, A, d)
        ok = batch.mask
        s, a = batch.states[:, :-1][ok], batch.actions[ok]
        return (psi[ok][:, None] * g[s, a]).sum(axis=0) / batch.N

    registered("t_rtg_grad", rtg_grad, returns="grad")
    prob = make("garnet:S=5,A=2,b=2,seed=2,gamma=0.7")
    res = sample_mdp(prob, ["reinforce_rtg", "t_rtg_grad"], N=4, K=10, seed=1)
    np.testing.assert_allclose(res.estimates[:, 1], res.estimates[:, 0], rtol=0,
                               atol=1e-12 * np.abs(res.estimates[:, 0]).max())


class _FakeTensor:
    """Duck-typed like a torch tensor: pgbench must call detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


def test_tensor_like_outputs_are_accepted(registered):
    registered("t_fake_tensor", lambda b: _FakeTensor(np_rtg(b)))
    res = sample_mdp(make("three_step_bandit"), ["reinforce_rtg", "t_fake_tensor"], N=3, K=4, seed=0)
    np.testing.assert_allclose(res.estimates[:, 1], res.estimates[:, 0], atol=1e-12)


@pytest.mark.parametrize("fn, match", [
    (lambda b: np.zeros((b.N, 2)), r"batch estimator 't_bad' on problem 'three_step_bandit' returned psi of shape"),
    (lambda b: np.full(b.actions.shape, np.nan), r"'t_bad' on problem 'three_step_bandit' returned a non-finite psi"),
    (lambda b: "oops", r"'t_bad' on problem 'three_step_bandit' returned str, not an array"),
    (lambda b: [[0.0] * 3] * b.N, r"returned list, not an array"),
])
def test_bad_outputs_give_one_line_errors(registered, fn, match):
    registered("t_bad", fn)
    with pytest.raises(PGBenchError, match=match) as ei:
        sample_mdp(make("three_step_bandit"), ["t_bad"], N=3, K=2, seed=0)
    assert "\n" not in str(ei.value)


def test_exception_surfaces_as_itself_naming_the_estimator(registered):
    def boom(batch):
        raise ZeroDivisionError("user bug")

    registered("t_boom", boom)
    with pytest.raises(ZeroDivisionError, match="user bug") as ei:
        sample_mdp(make("three_step_bandit"), ["t_boom"], N=3, K=2, seed=0)
    assert any("t_boom" in n and "three_step_bandit" in n for n in ei.value.__notes__)


def test_registration_errors():
    with pytest.raises(PGBenchError, match="built-in"):
        register_batch_estimator("reinforce", unbiased=True)
    with pytest.raises(PGBenchError, match="returns must be"):
        register_batch_estimator("t_x", unbiased=True, returns="weights")


# ----------------------------------------------------------------------------- per-episode end codes

@numba.njit
def _count_ends(states, actions, rewards, L, gamma, pi, V, Q, psi, end):
    # the first step's weight encodes the end code: summed weights count episodes per code
    for t in range(L):
        psi[t] = 0.0
    psi[0] = 1000.0 ** end


def _count_ends_py(b):
    code = np.where(b.terminated, END_TERMINAL, END_HORIZON if b.horizon else END_CAP)
    psi = np.zeros(b.actions.shape)
    psi[:, 0] = 1000.0 ** code
    return psi


def test_psi_fold_is_bincount_bit_for_bit():
    """The compiled fold of a block's psi into score weights against np.bincount over each
    trial's flattened steps (the former per-trial path): the same bits; NaN on padded steps is
    ignored, NaN on a step taken flags that trial only."""
    from pgbench.kernels.mdp import _psi_weights
    rng = np.random.default_rng(5)
    n, N, T, S, A = 6, 7, 9, 5, 3
    lengths = rng.integers(0, T + 1, (n, N))
    states = rng.integers(0, S, (n, N, T + 1))
    actions = rng.integers(0, A, (n, N, T))
    pad = np.arange(T)[None, None, :] >= lengths[:, :, None]
    actions[pad] = -1
    psi = rng.normal(size=(n, N, T)) * 10.0 ** rng.integers(-8, 8, (n, N, T))
    psi[pad] = np.nan
    C = np.full((n, S, A), 7.0)
    bad = _psi_weights(states, actions, lengths, psi, C)
    assert not bad.any()
    for k in range(n):
        slot = np.where(actions[k] >= 0, states[k, :, :T] * A + actions[k], S * A)
        ref = np.bincount(slot.ravel(), weights=np.where(pad[k], 0.0, psi[k]).ravel(), minlength=S * A + 1)
        assert np.array_equal(C[k], ref[:S * A].reshape(S, A))
    k_nan = int(np.argmax(lengths.max(axis=1) > 0))
    i, = np.nonzero(lengths[k_nan] > 0)
    psi[k_nan, i[0], 0] = np.inf
    assert list(np.nonzero(_psi_weights(states, actions, lengths, psi, C))[0]) == [k_nan]


def test_earliest_trial_at_fault_is_reported(registered):
    """psi is checked for NaN a block at a time: a NaN in trial 1 is still reported before a later
    trial's exception or wrong shape."""
    def faulty(later):
        calls = []

        def f(batch):
            calls.append(None)
            if len(calls) == 2:
                return np.full(batch.actions.shape, np.nan)
            if len(calls) == 4:
                return later(batch)
            return np.zeros(batch.actions.shape)
        return f

    def boom(batch):
        raise ZeroDivisionError("later bug")

    for name, later in (("t_late_raise", boom), ("t_late_shape", lambda b: np.zeros((b.N, 1)))):
        registered(name, faulty(later))
        with pytest.raises(PGBenchError, match=rf"'{name}' on problem 'three_step_bandit' returned a non-finite "
                                               r"psi \(NaN or inf\) in trial 1$"):
            sample_mdp(make("three_step_bandit"), [name], N=3, K=6, seed=0)
    calls = []

    def late_only(batch):  # without the NaN, the later exception surfaces as itself
        calls.append(None)
        return boom(batch) if len(calls) == 4 else np.zeros(batch.actions.shape)

    registered("t_late_alone", late_only)
    with pytest.raises(ZeroDivisionError, match="later bug"):
        sample_mdp(make("three_step_bandit"), ["t_late_alone"], N=3, K=6, seed=0)



def _end_counts(problem, N=300):
    """Episodes per end code seen by a 10-argument numba function and by a Python batch estimator."""
    from pgbench.exact import exact
    from pgbench.kernels.rng import seed_u64
    from pgbench.measure import engine
    from pgbench.measure.batch_runner import run_batch
    from pgbench.estimators.catalogue import parse
    prob = make(problem)
    t = engine.make_tables(prob, prob.theta)
    V, Q = engine.oracle_tables(exact(prob))
    seed, cell = seed_u64(0), np.uint64(7)
    numba_total = engine._run_user(parse("t_ends"), t, V, Q, seed, cell, N, 1, engine.n_chunks_for(N)).sum()
    _, C = run_batch(parse("t_ends_py"), prob, prob.theta, t, V, Q, seed, cell, N, 1, prob.mdp.horizon)
    return [int(round(numba_total)) // 1000 ** c % 1000 for c in range(3)], \
        [int(round(C.sum())) // 1000 ** c % 1000 for c in range(3)]


def test_per_episode_function_learns_how_the_episode_ended():
    from pgbench.estimators import register_estimator, unregister_estimator
    register_estimator("t_ends", unbiased=False, replace=True)(_count_ends)
    register_batch_estimator("t_ends_py", unbiased=False, replace=True)(_count_ends_py)
    try:
        bandit_numba, bandit_py = _end_counts("three_step_bandit")
        assert bandit_numba == bandit_py == [0, 300, 0]  # every episode reaches the horizon
        lake_numba, lake_py = _end_counts("frozen_lake:gamma=0.99")
        assert lake_numba == lake_py and sum(lake_numba) == 300
        assert lake_numba[END_TERMINAL] > 0 and lake_numba[END_HORIZON] == 0
        short_numba, short_py = _end_counts("chain:n=6,gamma=0.95")  # no terminal states: the cap cuts every episode
        assert short_numba == short_py == [0, 0, 300]
    finally:
        unregister_estimator("t_ends")
        unregister_batch_estimator("t_ends_py")


# nine-argument functions (no end code) are exercised by tests/test_validate.py


def test_wrong_arity_is_refused():
    from pgbench.estimators import register_estimator

    @numba.njit
    def three(a, b, c):
        return a

    with pytest.raises(PGBenchError, match="takes 3 arguments"):
        register_estimator("t_three", unbiased=True)(three)


# ----------------------------------------------------------------------------- --import on the CLI

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "batch_estimators.py")


@pytest.mark.parametrize("cmd", ["measure", "validate"])
def test_import_registers_estimators_for_measure_and_validate(capsys, cmd):
    from pgbench.estimators.batch import BATCH_ESTIMATORS
    try:
        if cmd == "measure":
            rc, out, err = run_cli(capsys, "measure", "three_step_bandit", "-N", "4", "-K", "20", "-e", "reinforce_rtg",
                                   "-e", "np_rtg", "--json", "--import", EXAMPLE)
            assert rc == 0, err
            rows = json.loads(out)
            np.testing.assert_allclose(rows[1]["mean"], rows[0]["mean"], atol=1e-12)
        else:
            rc, out, err = run_cli(capsys, "validate", "np_rtg", "-p", "three_step_bandit", "-K", "50", "--json",
                                   "--import", EXAMPLE)
            assert rc == 0, err
            assert json.loads(out)["estimator"] == "np_rtg"
    finally:
        BATCH_ESTIMATORS.pop("np_rtg", None)
        BATCH_ESTIMATORS.pop("np_ppo_normalized", None)


def test_unknown_estimator_error_mentions_import(capsys):
    rc, out, err = run_cli(capsys, "measure", "three_step_bandit", "-N", "4", "-e", "no_such_estimator")
    assert rc == 2 and "--import" in err and err.count("\n") == 1


def test_run_accepts_import():
    from pgbench.cli import build_parser
    args = build_parser().parse_args(["run", "--quick", "--import", EXAMPLE])
    assert args.imports == [EXAMPLE]


@numba.njit
def _td0_with_end(states, actions, rewards, L, gamma, pi, V, Q, psi, end):
    # the README's example: bootstrap from V(states[L]) only when the episode was cut
    finite = V.shape[0] > 1
    for t in range(L):
        v_next = 0.0 if (t == L - 1 and end == END_TERMINAL) else V[t + 1 if finite else 0, states[t + 1]]
        psi[t] = gamma ** t * (rewards[t] + gamma * v_next - V[t if finite else 0, states[t]])


def test_readme_td0_with_end_matches_builtin_td0():
    from pgbench.estimators import register_estimator, unregister_estimator
    register_estimator("t_td0_end", unbiased=True, replace=True)(_td0_with_end)
    try:
        res = sample_mdp(make("frozen_lake"), ["td0", "t_td0_end"], N=20, K=5, seed=4)
        ref = res.estimates[:, 0]
        np.testing.assert_allclose(res.estimates[:, 1], ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    finally:
        unregister_estimator("t_td0_end")


def test_a_failing_callback_writes_no_cell(registered, tmp_path, monkeypatch):
    """A suite cell whose batch estimator returns NaN stops the run with the one-line error and
    leaves no record of that cell in the run directory."""
    from pgbench.suites import registry, runner
    registered("t_nan", lambda b: np.full(b.actions.shape, np.nan))
    suite = registry.Suite("test/failing", "three_step_bandit", ("reinforce_rtg", "t_nan"), (4,), 5)
    monkeypatch.setitem(registry.SUITES, suite.id, suite)
    out = tmp_path / "run"
    with pytest.raises(PGBenchError, match="'t_nan' on problem 'three_step_bandit' returned a non-finite psi"):
        runner.run(["test/failing"], out=str(out), report=False, progress=False)
    cells = out / "cells"
    assert not cells.exists() or not any(cells.iterdir())


def test_rlax_adapter_reproduces_builtin_gae():
    pytest.importorskip("rlax")
    import importlib.util
    spec = importlib.util.spec_from_file_location("_ex_rlax", os.path.join(os.path.dirname(EXAMPLE), "rlax_gae.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        for problem in ("garnet:S=6,A=3,b=3,seed=1,horizon=8", "frozen_lake"):
            res = sample_mdp(make(problem), ["gae:lambda=0.95", "rlax_gae"], N=6, K=10, seed=3)
            ref = res.estimates[:, 0]
            np.testing.assert_allclose(res.estimates[:, 1], ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    finally:
        unregister_batch_estimator("rlax_gae")


def test_tianshou_adapter_reproduces_builtin_gae():
    """Finite horizon (the horizon's V row is 0) and frozen_lake (terminal holes and goal: V(next) = 0;
    episodes cut by the sampling cap bootstrap: frozen_lake capped at 5 steps), trial by trial
    against the built-in gae."""
    pytest.importorskip("tianshou")
    import importlib.util
    spec = importlib.util.spec_from_file_location("_ex_ts", os.path.join(os.path.dirname(EXAMPLE), "tianshou_gae.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        lake = make("frozen_lake")
        capped = dataclasses.replace(lake, mdp=dataclasses.replace(lake.mdp, max_steps=5, _cache={}))
        for problem in (make("garnet:S=6,A=3,b=3,seed=1,horizon=8"), lake, capped):
            res = sample_mdp(problem, ["gae:lambda=0.95", "tianshou_gae"], N=6, K=10, seed=3)
            ref = res.estimates[:, 0]
            np.testing.assert_allclose(res.estimates[:, 1], ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    finally:
        unregister_batch_estimator("tianshou_gae")


def test_batch_arrays_are_read_only(registered):
    def scribble(b):
        b.rewards[:] = 1.0
        return np.zeros(b.actions.shape)

    registered("t_scribble", scribble)
    with pytest.raises(ValueError, match="read-only") as ei:
        sample_mdp(make("three_step_bandit"), ["t_scribble"], N=3, K=2, seed=0)
    assert any("t_scribble" in n for n in ei.value.__notes__)


@pytest.mark.parametrize("T", [1, 7, 32, 33, 300])
@pytest.mark.parametrize("factor", [0.0, 0.855, 1.0])
def test_discounted_cumsum_matches_the_backward_recursion(T, factor):
    """Both forms (matrix product for short rows, linear filter for long ones) against the loop."""
    from pgbench.estimators.batch import discounted_cumsum
    x = np.random.default_rng(T).normal(size=(5, T))
    want = np.zeros_like(x)
    acc = np.zeros(5)
    for t in range(T - 1, -1, -1):
        acc = x[:, t] + factor * acc
        want[:, t] = acc
    got = discounted_cumsum(x, factor)
    assert got.shape == x.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())

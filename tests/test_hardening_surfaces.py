"""The surfaces added last, hardened: child processes, batch sizes, the run lock, what user code
receives, LogitsPolicy checks, --json and plug-in exits, non-finite exact results, extreme
magnitudes. Each case ends in a correct result or one clear error naming the input."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pgbench import PGBenchError, make
from pgbench.estimators import register_batch_estimator, unregister_batch_estimator
from pgbench.measure.api import measure

SMALL = "garnet:S=3,A=2,b=2,seed=0,horizon=3"


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


# ------------------------------------------------------------------ 1. no child imports from the cwd


def _plant(directory, module: str, marker) -> None:
    (directory / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError('planted {module}')\n")


def test_warmup_child_does_not_import_from_the_working_directory(tmp_path, monkeypatch):
    from pgbench.suites import warmup
    marker = tmp_path / "marker"
    _plant(tmp_path, "numpy", marker)
    monkeypatch.chdir(tmp_path)
    proc = warmup._start()
    assert proc is not None
    assert proc.wait(timeout=600) == 0  # it compiled (or loaded) the sampler with the real numpy
    assert not marker.exists()


def _double(x):
    return 2 * x


def test_report_figure_workers_do_not_import_from_the_working_directory(tmp_path, monkeypatch):
    from pgbench.reports import report
    marker = tmp_path / "marker"
    _plant(tmp_path, "multiprocessing", marker)
    monkeypatch.setenv(report.REPORT_WORKERS_ENV, "2")
    monkeypatch.chdir(tmp_path)
    r = report._Renderer()
    try:
        from pgbench.reports.figures import render
        from concurrent.futures.process import BrokenProcessPool
        from pgbench.children import SAFE_PATH_ENV
        before = os.environ.get(SAFE_PATH_ENV)
        job = r.submit(_double, (1,), {})
        assert os.environ.get(SAFE_PATH_ENV) == before  # the environment is restored
        try:
            job.result(timeout=300)
        except BrokenProcessPool:
            pytest.fail("the worker died (it imported the planted multiprocessing.py)")
        except Exception:
            pass  # _double's result is no figure: png_bytes refuses it in the worker, which ran
    finally:
        r.close()
    assert not marker.exists()


# ------------------------------------------------------------ 2. common and large batch sizes


def test_count_batches_beyond_a_float_is_infinite():
    from pgbench.exact.moments import count_batches
    assert count_batches(10, 3) == 220.0
    assert count_batches(1, 4096) == 1.0
    assert count_batches(400, 4096) == float("inf")  # about 1e590
    assert count_batches(1e12, 4096) == float("inf")


MDP_ESTIMATORS = ["reinforce", "reinforce_rtg", "rtg_no_gamma_t", "const_baseline:b=0.5", "batch_mean_baseline",
                  "rloo", "w_baseline", "w_baseline_loo", "score_norm_baseline", "optimal_const_baseline",
                  "value_baseline", "time_baseline_loo", "true_advantage", "all_action", "gae",
                  "gae:critic=fitted", "td0", "geometric_termination", "importance_sampling", "entropy_bonus",
                  "natural", "ppo_gae", "normalized_advantage", "gpomdp_baseline"]


def _mean_psi(batch):
    return batch.rewards - batch.rewards.mean()


@pytest.mark.parametrize("N", [100, 128, 200, 4096])
def test_every_estimator_runs_at_common_and_large_batch_sizes(registered, N):
    user = registered("t_mean_psi", _mean_psi, unbiased=False)
    df = measure(SMALL, MDP_ESTIMATORS + [user], batch=N, trials=2)
    assert len(df) == len(MDP_ESTIMATORS) + 1
    assert np.isfinite(df["bias_norm"]).all()


@pytest.mark.parametrize("problem,ests", [
    ("gaussian_toy", ["naive", "score_function", "reparameterization"]),
    ("categorical", ["score_function", "rloo", "gumbel_softmax", "straight_through"]),
    ("lqg:n=2,m=1,T=5", ["reinforce", "reinforce_rtg", "value_baseline", "svg_inf", "svg0", "mppi"]),
])
def test_objective_and_lqg_estimators_run_at_n_4096(problem, ests):
    df = measure(problem, ests, batch=4096, trials=2)
    assert len(df) == len(ests) and np.isfinite(df["bias_norm"]).all()


# ----------------------------------------------------------------------------------- 3. the run lock


def _cli(capsys, *argv):
    from conftest import run_cli
    return run_cli(capsys, *argv)


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(capsys, tmp_path):
    from pgbench.errors import RunLockedError
    from pgbench.suites.store import RunLock
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("the user's file\n")
    os.symlink(target, out / ".lock")
    with pytest.raises(RunLockedError, match="symbolic link"):
        RunLock(str(out)).acquire()
    rc, stdout, err = _cli(capsys, "run", "--quick", "ladder/three-step-bandit", "--out", str(out), "--no-report")
    assert rc == 1 and stdout == "" and err.startswith("pgbench: error: ") and err.count("\n") == 1, err
    assert ".lock" in err and "symbolic link" in err
    assert target.read_text() == "the user's file\n"
    assert os.path.islink(out / ".lock") and sorted(os.listdir(out)) == [".lock"]
    os.unlink(out / ".lock")
    os.mkdir(out / ".lock")  # a directory is no lock file either
    with pytest.raises(RunLockedError, match="not a regular file"):
        RunLock(str(out)).acquire()


def test_taking_over_a_stale_lock_writes_no_nul_padding(tmp_path):
    import json
    from pgbench.errors import RunLockedError
    from pgbench.suites.store import RunLock
    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": 999999, "host": "a-host-with-a-rather-long-name.example.org", "since": "2020-01-01T00:00:00",
             "padding": "x" * 200}
    (out / ".lock").write_text(json.dumps(stale))  # no process holds its flock: stale
    lock = RunLock(str(out)).acquire()
    try:
        assert lock.took_over and "pid 999999" in lock.took_over
        data = (out / ".lock").read_bytes()
        assert b"\0" not in data
        assert json.loads(data)["pid"] == os.getpid()
        code = ("import sys; from pgbench.suites.store import RunLock; RunLock(sys.argv[1]).acquire()")
        res = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and RunLockedError.__name__ in res.stderr
        assert f"pid {os.getpid()} on" in res.stderr  # the holder is named in the refusal
    finally:
        lock.release()


# ------------------------------------------------ 4. what user code receives is read-only or a copy


def _meddler(batch):
    """Tries to write into everything it is given (each attempt refused), then returns a psi."""
    for name in ("theta", "pi", "V", "Q", "states", "actions", "rewards", "lengths", "terminated", "truncated"):
        try:
            arr = getattr(batch, name)
            arr[...] = 7
        except ValueError:
            pass
    return batch.rewards * 1.0


def test_a_batch_estimator_cannot_write_into_what_the_engine_uses(registered):
    from pgbench.measure.engine import sample_mdp
    prob = make(SMALL)
    theta = np.linspace(-0.5, 0.5, prob.policy.dim)
    user = registered("t_meddler", _meddler, unbiased=False)
    alone = sample_mdp(prob, ["reinforce_rtg", "value_baseline"], N=4, K=20, seed=3, theta=theta)
    mixed = sample_mdp(prob, [user, "reinforce_rtg", "value_baseline"], N=4, K=20, seed=3, theta=theta)
    np.testing.assert_array_equal(mixed.estimates[:, 1:], alone.estimates)
    np.testing.assert_array_equal(theta, np.linspace(-0.5, 0.5, prob.policy.dim))


def _theta_writer(batch):
    batch.theta[0] = 5.0
    return batch.rewards


def test_a_write_into_batch_theta_is_an_error_naming_the_estimator(registered):
    user = registered("t_theta_writer", _theta_writer, unbiased=False)
    with pytest.raises(ValueError, match="read-only") as info:
        measure(SMALL, ["reinforce_rtg", user], batch=4, trials=5, theta=np.zeros(make(SMALL).policy.dim))
    assert "t_theta_writer" in "".join(getattr(info.value, "__notes__", [])) + str(info.value)


# -------------------------------------------------------------- 5. LogitsPolicy vjp gets copies

X3 = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.7]])  # 3 states, 2 features


def _linear_policy(sloppy: bool):
    from pgbench.policies import LogitsPolicy

    def logits(t):
        return X3 @ np.asarray(t).reshape(2, 2)

    def vjp(t, c):
        out = (X3.T @ c).ravel()
        if sloppy:
            c += 1.0  # writes into its cotangent after using it
            t *= 0.0
        return out

    return LogitsPolicy(logits, vjp, np.array([0.1, -0.2, 0.3, 0.05]), name="sloppy" if sloppy else "clean")


def test_a_vjp_that_writes_into_its_cotangent_changes_nothing():
    from pgbench import exact
    prob = make("garnet:S=3,A=2,b=2,seed=0,gamma=0.8")
    clean, sloppy = _linear_policy(False), _linear_policy(True)
    th = clean.theta
    np.testing.assert_array_equal(sloppy.score_table(th), clean.score_table(th))
    C = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(sloppy.fisher(th, C), clean.fisher(th, C))
    np.testing.assert_array_equal(sloppy.contract(th, C), clean.contract(th, C))
    np.testing.assert_array_equal(exact(prob, policy=sloppy).grad, exact(prob, policy=clean).grad)


# ------------------------------------------------ 6. per-episode numba estimators: psi zeroed per episode


def _first_step_only(states, actions, rewards, L, gamma, pi, V, Q, psi):
    if L > 0:
        psi[0] = rewards[0]


def _writes_states(states, actions, rewards, L, gamma, pi, V, Q, psi):
    for t in range(L):
        psi[t] = rewards[t]
        states[t] = 0
        actions[t] = 0


def _first_step_batch(batch):
    psi = np.zeros_like(batch.rewards)
    psi[:, 0] = batch.rewards[:, 0]
    return psi


def _rewards_batch(batch):
    return batch.rewards * 1.0


def _writes_pi(states, actions, rewards, L, gamma, pi, V, Q, psi):
    pi[0, 0] = 1.0


@pytest.fixture
def numba_registered():
    from pgbench.estimators import register_estimator, unregister_estimator
    names = []

    def reg(name, fn):
        import numba
        register_estimator(name, unbiased=False, replace=True)(numba.njit(fn))
        names.append(name)
        return name

    yield reg
    for n in names:
        unregister_estimator(n)


def test_numba_estimator_psi_is_zeroed_per_episode_and_its_episode_is_a_copy(numba_registered, registered):
    from pgbench.measure.engine import sample_mdp
    prob = make("garnet:S=4,A=2,b=2,seed=2,gamma=0.8")  # unbounded: episodes of varying length
    a, c = numba_registered("t_first_only", _first_step_only), numba_registered("t_writes_states", _writes_states)
    b, d = registered("t_first_batch", _first_step_batch), registered("t_rewards_batch", _rewards_batch)
    res = sample_mdp(prob, [a, b, c, d], N=8, K=30, seed=1)  # the same episodes for all four
    np.testing.assert_allclose(res.estimates[:, 0], res.estimates[:, 1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.estimates[:, 2], res.estimates[:, 3], rtol=1e-12, atol=1e-14)


def test_a_numba_estimator_that_writes_pi_is_refused(numba_registered):
    e = numba_registered("t_writes_pi", _writes_pi)
    with pytest.raises(PGBenchError, match="t_writes_pi.*(read-only|readonly)"):
        measure(SMALL, [e], batch=4, trials=5)


# -------------------------------------------- 7. LogitsPolicy: vjp checked, logits repeatable


def test_a_vjp_that_disagrees_with_logits_is_refused_with_the_size():
    from pgbench.policies import LogitsPolicy
    th = np.array([0.1, -0.2, 0.3, 0.05])
    with pytest.raises(PGBenchError, match=r"vjp disagrees with logits.*off by 50%"):
        LogitsPolicy(lambda t: X3 @ t.reshape(2, 2), lambda t, c: 2 * (X3.T @ c).ravel(), th)
    with pytest.raises(PGBenchError, match="vjp disagrees with logits"):  # transposed layout
        LogitsPolicy(lambda t: X3 @ t.reshape(2, 2), lambda t, c: (X3.T @ c).T.ravel(), th)
    # a correct vjp of a nonlinear network passes, in float32 too
    W = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    LogitsPolicy(lambda t: np.tanh(W * t.astype(np.float32).reshape(1, 2)),
                 lambda t, c: ((1 - np.tanh(W * t.astype(np.float32).reshape(1, 2)) ** 2) * W * c).sum(axis=0),
                 np.array([0.3, -0.4]))


def test_logits_that_change_from_call_to_call_are_refused():
    from pgbench.policies import LogitsPolicy
    rng = np.random.default_rng(0)
    with pytest.raises(PGBenchError, match="not repeatable.*differ by"):
        LogitsPolicy(lambda t: X3 @ t.reshape(2, 2) + 0.1 * rng.standard_normal((3, 2)),
                     lambda t, c: (X3.T @ c).ravel(), np.zeros(4))


# ------------------------------------------------- 8. --json stays JSON; a plug-in's exit is an error

NOISY_PLUGIN = '''
import os, sys
import numpy as np
from pgbench.estimators import register_batch_estimator
print("plug-in imported")  # at import
os.write(1, b"raw bytes on fd 1\\n")


@register_batch_estimator("t_noisy", unbiased=True, replace=True)
def t_noisy(batch):
    print("hello from the estimator")
    return batch.discount() * batch.reward_to_go()


@register_batch_estimator("t_exits", unbiased=True, replace=True)
def t_exits(batch):
    sys.exit(0)
'''


@pytest.fixture
def noisy_plugin(tmp_path):
    path = tmp_path / "noisy.py"
    path.write_text(NOISY_PLUGIN)
    yield str(path)
    for name in ("t_noisy", "t_exits"):
        try:
            unregister_batch_estimator(name)
        except Exception:
            pass


def test_a_plugin_printing_to_stdout_does_not_corrupt_json(noisy_plugin, capsys):
    import json
    rc, out, err = _cli(capsys, "measure", SMALL, "-e", "t_noisy", "-N", "4", "-K", "5", "--import", noisy_plugin,
                        "--json")
    assert rc == 0, err
    assert json.loads(out)["estimator"] == "t_noisy"
    assert "hello from the estimator" in err and "plug-in imported" in err
    # a real process, where fd 1 is the terminal or a pipe: C-level writes are kept out too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "pgbench", "measure", SMALL, "-e", "t_noisy", "-N", "4", "-K", "5",
                          "--import", noisy_plugin, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["estimator"] == "t_noisy"
    assert "raw bytes on fd 1" in res.stderr and "hello from the estimator" in res.stderr


def test_sys_exit_in_a_plugin_is_an_error_naming_the_estimator(noisy_plugin, capsys):
    rc, out, err = _cli(capsys, "measure", SMALL, "-e", "t_exits", "-N", "4", "-K", "5", "--import", noisy_plugin,
                        "--json")
    assert rc == 2 and out == ""
    last = err.splitlines()[-1]  # after what the plug-in itself printed at import
    assert last.startswith("pgbench: error: batch estimator 't_exits'") and "sys.exit(0)" in last
    assert not [line for line in err.splitlines() if line.startswith("pgbench:") and line != last]


def test_sys_exit_in_a_policy_or_at_import_is_an_error(tmp_path, capsys):
    from pgbench.policies import LogitsPolicy
    with pytest.raises(PGBenchError, match=r"policy 'quitter': logits called sys.exit\(3\)"):
        LogitsPolicy(lambda t: sys.exit(3), lambda t, c: c, np.zeros(4), name="quitter")
    path = tmp_path / "quits.py"
    path.write_text("import sys\nsys.exit(0)\n")
    rc, out, err = _cli(capsys, "measure", SMALL, "-e", "reinforce", "-N", "2", "--import", str(path), "--json")
    assert rc == 2 and out == "" and "quits.py called sys.exit(0)" in err


# ------------------------------------------------------ 9. exact --json never prints NaN or Infinity


def _strict_json(text):
    import json

    def refuse(name):
        raise AssertionError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def _lqg_file(tmp_path, name, **override):
    from pgbench.problems.lqg import to_arrays
    path = tmp_path / f"{name}.npz"
    np.savez(path, **dict(to_arrays(make("lqg:n=2,m=1,T=5")), **override))
    return str(path)


def test_exact_json_is_finite_or_refused(tmp_path, capsys):
    rc, out, err = _cli(capsys, "exact", "garnet:S=3,A=2", "--beta", "1e300", "--json")
    assert rc == 0, err
    doc = _strict_json(out)  # the gradient's norm no longer overflows in its squares
    g = np.array(doc["grad"], dtype=float)
    assert doc["grad_norm"] == pytest.approx(np.abs(g).max() * np.linalg.norm(g / np.abs(g).max()), rel=1e-12)
    unstable = _lqg_file(tmp_path, "unstable", A=np.array([[2.0, 0.0], [0.0, 1.2]]), horizon=np.int64(700),
                         gamma=np.float64(1.0))
    rc, out, err = _cli(capsys, "exact", unstable, "--json")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "not finite" in err and "unstable (spectral radius 2)" in err and "700 steps" in err
    huge = _lqg_file(tmp_path, "huge_mu0", mu0=np.array([1e200, 0.0]))
    rc, out, err = _cli(capsys, "exact", huge, "--json")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "not finite" in err and "mu0" in err


# ----------------------------------------------- 10. statistics stay finite for magnitudes up to 1e100

_LIN = ("bias_norm", "bias_norm_se", "grad_norm")
_QUAD = ("variance", "variance_se", "mse", "mse_se")
_FREE = ("cosine", "cosine_se", "p_value", "rank")


@pytest.mark.parametrize("s", [1e-30, 1e27, 1e30, 1e80, 1e99])
def test_summaries_scale_with_the_magnitude_and_stay_finite(s):
    from pgbench.stats.metrics import paired, summarize
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4)) + 0.1
    Y = 0.5 * X + rng.standard_normal((50, 4))
    g = np.array([0.1, 0.0, 0.2, -0.1])
    ref, got = summarize(X, g), summarize(X * s, g * s)
    for keys, f in ((_LIN, s), (_QUAD, s * s), (_FREE, 1.0)):
        for k in keys:
            assert np.isfinite(got[k]) and got[k] == pytest.approx(ref[k] * f, rel=1e-9, abs=0.0), k
    for k, f in (("bias_norm_ci", s), ("variance_ci", s * s), ("mse_ci", s * s)):
        assert np.all(np.isfinite(got[k])) and np.allclose(got[k], np.array(ref[k]) * f, rtol=1e-9, atol=0.0), k
    rp, gp = paired(X, Y, g), paired(X * s, Y * s, g * s)
    for k, f in (("mse_diff", s * s), ("mse_diff_se", s * s), ("variance_ratio", 1.0), ("p_value", 1.0),
                 ("mse_diff_p", 1.0), ("mean_diff_norm", s)):
        assert np.isfinite(gp[k]) and gp[k] == pytest.approx(rp[k] * f, rel=1e-9, abs=0.0), k


def test_ordinary_magnitudes_are_not_rescaled(monkeypatch):
    from pgbench.stats import metrics
    rng = np.random.default_rng(1)
    X, g = rng.standard_normal((40, 5)) * 1e3, np.zeros(5)
    before = metrics.summarize(X, g)
    monkeypatch.setattr(metrics, "MAGNITUDE_RANGE", (0.0, np.inf))  # never rescale
    after = metrics.summarize(X, g)
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(after[k]), np.asarray(v), err_msg=k)  # the same bits


def test_huge_rewards_and_plugin_gradients_give_finite_statistics(tmp_path, capsys, registered):
    from pgbench.problems.io import save_npz
    base = tmp_path / "base.npz"
    save_npz(str(base), make(SMALL))
    arrays = dict(np.load(base, allow_pickle=False))
    for s in (1e27, 1e30, 1e99):
        path = tmp_path / f"R{s:g}.npz"
        np.savez(path, **dict(arrays, R=arrays["R"] * s))
        rc, out, err = _cli(capsys, "measure", str(path), "-e", "reinforce", "-e", "value_baseline", "-N", "4",
                            "-K", "30", "--json")
        assert rc == 0, err
        for row in _strict_json(out):
            for k in ("bias_norm_se", "variance_se", "mse_se", "exact_variance"):
                assert row[k] is not None and np.isfinite(row[k]), (s, k)
    big = registered("t_big_grad", lambda b: 1e30 * (1.0 + b.rewards.sum()) * np.ones(b.theta.size),
                     returns="grad", unbiased=False)
    df = measure(SMALL, [big], batch=4, trials=30)
    assert np.isfinite(df[["bias_norm_se", "variance_se", "mse_se"]].to_numpy(dtype=float)).all()


def test_lqg_with_a_huge_sigma_gives_finite_statistics(tmp_path):
    path = _lqg_file(tmp_path, "wide", log_sigma=np.array([30.0]))
    df = measure(path, ["reinforce", "svg_inf"], batch=4, trials=30)
    assert np.isfinite(df[["bias_norm", "bias_norm_se", "variance_se", "mse_se"]].to_numpy(dtype=float)).all()

"""Hardening of the inputs added last (items 11-21 of the hardening work; the other items are in
test_hardening_surfaces.py): LQG files, the Gymnasium env's actions, plug-ins, policies and run
directories. Every bad input ends in one line (CLI: ``pgbench: error: ...``,
exit 2 for bad input, 1 for the environment; Python: a PGBenchError) and writes nothing."""
from __future__ import annotations

import os

import numpy as np
import pytest

from pgbench.errors import PGBenchError
from pgbench.problems.lqg import point_mass, to_arrays

from conftest import run_cli


def refused(capsys, *argv, status=2):
    rc, out, err = run_cli(capsys, *argv)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert rc == status, (argv, rc, err)
    assert out == "", (argv, out)
    assert err.startswith("pgbench: error: ") and err.count("\n") == 1, (argv, err)
    return err


def lqg_file(tmp_path, name="lqg", **changes):
    data = to_arrays(point_mass(T=5))
    data.update(changes)
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, **data)
    return path


# ------------------------------------------------------------------------ LQG files (MDP rules)

LQG_BAD = {
    "A_complex": (dict(A=np.eye(2) + 0.1j), "A must be numeric"),
    "K_complex": (dict(K=np.array([[-1.0, 0.0], [0.0, -1.0]]) + 1j), "K must be numeric"),
    "A_text": (dict(A=np.array([["1", "0"], ["0", "1"]])), "string"),
    "gamma_text": (dict(gamma=np.array("0.9")), "gamma must be numeric"),
    "gamma_bool": (dict(gamma=np.array(True)), "boolean"),
    "horizon_bool": (dict(horizon=np.array(True)), "horizon"),
    "A_bool": (dict(A=np.eye(2, dtype=bool)), "boolean"),
    "mu0_complex": (dict(mu0=np.array([1.0, 1j])), "mu0"),
    "log_sigma_text": (dict(log_sigma=np.array(["0", "0"])), "log_sigma"),
}


@pytest.mark.parametrize("case", sorted(LQG_BAD))
def test_lqg_files_follow_the_mdp_rules(capsys, tmp_path, case):
    changes, words = LQG_BAD[case]
    path = lqg_file(tmp_path, case, **changes)
    err = refused(capsys, "exact", path, "--json")
    assert words in err and path in err


def test_lqg_api_refuses_complex_and_boolean_parameters():
    p = point_mass(T=5)
    with pytest.raises(PGBenchError, match="complex"):
        p.check_theta(p.theta + 1j)
    with pytest.raises(PGBenchError, match="gamma"):
        type(p)(p.A, p.B, p.Q, p.R, p.W, p.mu0, p.Sigma0, True, 5)
    with pytest.raises(PGBenchError, match="horizon"):
        type(p)(p.A, p.B, p.Q, p.R, p.W, p.mu0, p.Sigma0, 0.9, np.True_)


# ------------------------------------------------------------------------ Gymnasium actions

@pytest.mark.parametrize("action", [1.7, 1.0, "1", "abc", None, float("nan"), np.array([1]), np.array([1, 0]),
                                    True, 3, -1])
def test_env_refuses_actions_that_are_not_one_integer_in_range(action):
    pytest.importorskip("gymnasium")
    from pgbench import envs
    env = envs.make("three_step_bandit")
    env.reset(seed=0)
    with pytest.raises(PGBenchError, match="action"):
        env.step(action)


@pytest.mark.parametrize("action", [1, np.int64(1), np.array(1), np.uint8(1)])
def test_env_takes_integer_actions(action):
    pytest.importorskip("gymnasium")
    from pgbench import envs
    env = envs.make("three_step_bandit")
    env.reset(seed=0)
    a = env.step(action)
    env.reset(seed=0)
    assert a[:2] == env.step(1)[:2]


# ------------------------------------------------------------------------ user code's mistakes

PLUGINS = {
    "raiser.py": '''
import numba
from pgbench.estimators import register_estimator
@register_estimator("h2_raiser", unbiased=True, replace=True)
@numba.njit
def h2_raiser(states, actions, rewards, L, gamma, pi, V, Q, psi):
    if L > 0:
        raise ValueError("boom in numba")
''',
    "oob.py": '''
import numba
from pgbench.estimators import register_estimator
@register_estimator("h2_oob", unbiased=True, replace=True)
@numba.njit
def h2_oob(states, actions, rewards, L, gamma, pi, V, Q, psi):
    for t in range(L):
        psi[t] = 1.0
    psi[L + 1000000] = 1.0
''',
    "outputs.py": '''
import numpy as np
from pgbench.estimators import register_batch_estimator
class Bad:
    def __array__(self, *a, **k):
        raise RuntimeError("no array for you")
def shape(b):
    return b.states.shape[0], b.states.shape[1] - 1
for name, f in {"h2_arraybad": lambda b: Bad(),
                "h2_complex": lambda b: np.zeros(shape(b)) + 0j,
                "h2_string": lambda b: np.full(shape(b), "0.5"),
                "h2_object": lambda b: np.zeros(shape(b), dtype=object)}.items():
    register_batch_estimator(name, unbiased=True, replace=True)(f)
''',
    "pol.py": '''
import numpy as np
from pgbench.policies import LogitsPolicy
def pol(prob):
    S, A = prob.mdp.S, prob.mdp.A
    calls = [0]
    def logits(th):
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("policy kaput")
        return np.asarray(th).reshape(S, A)
    return LogitsPolicy(logits, lambda th, c: c, np.zeros((S, A)), name="kaput")
''',
}


@pytest.fixture
def plugins(tmp_path):
    for name, text in PLUGINS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pol.txt").write_text(PLUGINS["pol.py"])
    (tmp_path / "x.npz").write_bytes(b"not a plug-in")
    return tmp_path


@pytest.mark.parametrize("argv,words", [
    (["measure", "three_step_bandit", "-e", "reinforce", "-N", "2", "-K", "3", "--import", "{d}/x.npz"], "x.npz"),
    (["exact", "three_step_bandit", "--policy", "{d}/pol.txt:pol"], "pol.txt"),
    (["exact", "point_mass", "--policy", "{d}/pol.py:pol"], "lqg"),
    (["exact", "gaussian_toy", "--policy", "{d}/pol.py:pol"], "--policy"),
    (["exact", "three_step_bandit", "--policy", "{d}/pol.py:pol"], "policy 'kaput'"),
    (["measure", "three_step_bandit", "-e", "h2_raiser", "--import", "{d}/raiser.py", "-N", "2", "-K", "3"],
     "'h2_raiser' raised ValueError"),
    (["validate", "h2_oob", "--import", "{d}/oob.py", "-p", "three_step_bandit", "-N", "2", "-K", "20"],
     "'h2_oob' raised IndexError"),
    (["measure", "three_step_bandit", "-e", "h2_arraybad", "--import", "{d}/outputs.py", "-N", "2", "-K", "3"],
     "'h2_arraybad'"),
    (["measure", "three_step_bandit", "-e", "h2_complex", "--import", "{d}/outputs.py", "-N", "2", "-K", "3"],
     "complex"),
    (["measure", "three_step_bandit", "-e", "h2_string", "--import", "{d}/outputs.py", "-N", "2", "-K", "3"],
     "string"),
    (["measure", "three_step_bandit", "-e", "h2_object", "--import", "{d}/outputs.py", "-N", "2", "-K", "3"],
     "dtype object"),
    (["run", "--executor", "dask", "--scheduler", "not a url", "--out", "{d}/never", "ladder/three-step-bandit"],
     "--scheduler"),
])
def test_user_code_mistakes_are_one_line_errors(capsys, plugins, argv, words):
    if "dask" in argv:
        pytest.importorskip("dask.distributed")
    argv = [a.replace("{d}", str(plugins)) for a in argv]
    err = refused(capsys, *argv)
    assert words in err, err
    assert not os.path.exists(plugins / "never")


def test_logits_policy_refuses_non_real_theta_and_names_a_raising_function():
    from pgbench.policies import LogitsPolicy
    ok = lambda th, c: c  # noqa: E731
    for theta, what in ((np.zeros((2, 2)) + 0j, "complex"), (np.array([["0.5", "0"], ["0", "0"]]), "string"),
                        (np.zeros((2, 2), bool), "boolean")):
        with pytest.raises(PGBenchError, match=what):
            LogitsPolicy(lambda th: np.asarray(th, float), ok, theta)

    def boom(th):
        raise KeyError("inside")
    with pytest.raises(PGBenchError, match="policy 'mine': logits raised KeyError"):
        LogitsPolicy(boom, ok, np.zeros((2, 2)), name="mine")
    with pytest.raises(PGBenchError, match="complex"):
        LogitsPolicy(lambda th: np.zeros((2, 2)) + 1j, ok, np.zeros((2, 2)))


def test_validate_compiles_user_functions_with_bounds_checks():
    from pgbench.estimators.user import bounds_checked, bounds_checking
    assert not bounds_checking()
    with bounds_checked():
        assert bounds_checking()
    assert not bounds_checking()


# ------------------------------------------------------------------------ numpy warnings before a refusal

def test_refusals_after_floating_point_overflow_are_one_line(capsys, tmp_path):
    np.save(tmp_path / "huge.npy", np.array([1e308]))
    P = np.full((2, 2, 2), 0.5)
    np.savez(tmp_path / "p.npz", P=np.full((2, 2, 2), 1e308), R=np.ones((2, 2)), rho0=np.full(2, 0.5),
             gamma=np.float64(0.9))
    np.savez(tmp_path / "rho.npz", P=P, R=np.ones((2, 2)), rho0=np.full(2, 1e308), gamma=np.float64(0.9))
    refused(capsys, "exact", "boltzmann_bandit", "--theta", str(tmp_path / "huge.npy"))
    refused(capsys, "exact", str(tmp_path / "p.npz"))
    refused(capsys, "exact", str(tmp_path / "rho.npz"))
    refused(capsys, "exact", "three_step_bandit", "--beta", "1e308")


# ------------------------------------------------------------------------ run directories

CHEAP = ["ladder/three-step-bandit", "objectives/gaussian-toy"]


@pytest.fixture(scope="module")
def cheap_run(tmp_path_factory):
    from pgbench.suites.runner import run
    return run(CHEAP, quick=True, out=str(tmp_path_factory.mktemp("h2run") / "run"), seed=0, progress=False,
               report=False)


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return str(dst)


def _edit_json(path, fn):
    import json
    with open(path) as f:
        obj = json.load(f)
    obj = fn(obj)
    with open(path, "w") as f:
        json.dump(obj, f)


def _first_cell(run_dir):
    d = os.path.join(run_dir, "cells")
    return os.path.join(d, sorted(f for f in os.listdir(d) if f.startswith("ladder"))[0])


def _refused_by_readers(capsys, run_dir, other, words):
    from pgbench.suites.runner import run
    with pytest.raises(PGBenchError, match=words):
        run(resume=run_dir, progress=False, report=False)
    assert words.replace("\\", "") in refused(capsys, "report", run_dir)
    assert words.replace("\\", "") in refused(capsys, "compare", other, run_dir)
    assert not os.path.exists(os.path.join(run_dir, "report.md"))


def _edit_row(rec):
    rec["rows"][0]["variance"] = rec["rows"][0]["variance"] * 1.001
    return rec


def _nan_row(rec):
    rec["rows"][0]["variance"] = float("nan")
    return rec


@pytest.mark.parametrize("case,edit,words", [
    ("edited", lambda p: _edit_json(_first_cell(p), _edit_row), "does not match its checksum"),
    ("nan", lambda p: _edit_json(_first_cell(p), _nan_row), "NaN or infinite"),
    ("rows_dict", lambda p: _edit_json(_first_cell(p), lambda r: {**r, "rows": {"a": 1}}), "'rows' must be a list"),
    ("meta_list", lambda p: _edit_json(os.path.join(p, "meta.json"), lambda m: []), "expected a JSON object"),
    ("meta_str_prov", lambda p: _edit_json(os.path.join(p, "meta.json"), lambda m: {**m, "provenance": "x"}),
     "'provenance' must be an object"),
    ("meta_no_prov", lambda p: _edit_json(os.path.join(p, "meta.json"),
                                          lambda m: {k: v for k, v in m.items() if k != "provenance"}),
     "no provenance"),
    ("checksum_dropped", lambda p: _edit_json(_first_cell(p), lambda r: {**r, "provenance": {
        k: v for k, v in r["provenance"].items() if k != "checksum"}}), "has no checksum"),
])
def test_damaged_run_directories_are_refused_by_every_reader(capsys, cheap_run, tmp_path, case, edit, words):
    d = _copy(cheap_run, tmp_path / case)
    edit(d)
    _refused_by_readers(capsys, d, cheap_run, words)


def test_cells_carry_a_checksum_of_their_content(cheap_run):
    import json
    from pgbench.suites.store import RunDir, cell_checksum
    assert RunDir(cheap_run).meta()["checksums"] is True
    for rec in RunDir(cheap_run).cells():
        assert rec["provenance"]["checksum"] == cell_checksum(rec)
        changed = json.loads(json.dumps(rec))
        changed["rows"][-1]["estimator"] += "x"
        assert cell_checksum(changed) != cell_checksum(rec)


def test_runs_without_checksums_are_read_with_a_warning(capsys, cheap_run, tmp_path):
    d = _copy(cheap_run, tmp_path / "old")
    _edit_json(os.path.join(d, "meta.json"), lambda m: {k: v for k, v in m.items() if k != "checksums"})
    for f in os.listdir(os.path.join(d, "cells")):
        _edit_json(os.path.join(d, "cells", f), lambda r: {**r, "provenance": {
            k: v for k, v in r["provenance"].items() if k != "checksum"}})
    rc, out, err = run_cli(capsys, "compare", cheap_run, d)
    assert rc == 0 and "without per-cell checksums" in err


def test_out_over_a_foreign_non_empty_directory_is_refused(capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "paired.csv").write_text("my data\n")
    (mine / "report.html").write_text("<p>mine</p>")
    err = refused(capsys, "run", "--quick", "--out", str(mine), *CHEAP)
    assert "not a pgbench run" in err
    assert sorted(os.listdir(mine)) == ["paired.csv", "report.html"]
    assert (mine / "paired.csv").read_text() == "my data\n"
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(target, tmp_path / "link")
    assert "symbolic link" in refused(capsys, "run", "--quick", "--out", str(tmp_path / "link"), *CHEAP)
    assert os.listdir(target) == []


def test_report_never_writes_through_a_figures_link(capsys, cheap_run, tmp_path):
    d = _copy(cheap_run, tmp_path / "linked")
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, os.path.join(d, "figures"))
    rc, out, err = run_cli(capsys, "report", d)  # progress lines, then the refusal
    last = err.strip().splitlines()[-1]
    assert rc == 2 and out == "" and "Traceback" not in err
    assert last.startswith("pgbench: error: ") and "symbolic link" in last
    assert os.listdir(target) == []


def test_figure_workers_exit_when_report_is_killed(cheap_run, tmp_path):
    import signal
    import subprocess
    import sys
    import time
    d = _copy(cheap_run, tmp_path / "rep")
    env = dict(os.environ, PGBENCH_REPORT_WORKERS="2")
    p = subprocess.Popen([sys.executable, "-m", "pgbench", "report", d], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def children():
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] != "Z"
        except OSError:
            return False

    kids = []
    t0 = time.time()
    while time.time() - t0 < 120 and len(kids) < 2 and p.poll() is None:
        kids = children()
        time.sleep(0.1)
    if p.poll() is not None or len(kids) < 2:
        pytest.skip("the report finished before its workers could be seen")
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(alive(k) for k in kids):
        time.sleep(0.2)
    left = [k for k in kids if alive(k)]
    for k in left:  # ours: started by this test's report
        os.kill(k, signal.SIGKILL)
    assert not left, f"figure workers {left} outlived the killed report"


# ------------------------------------------------------------------------ plug-ins that hang

HANG = '''
import time
from pgbench.estimators import register_batch_estimator
@register_batch_estimator("h2_sleeper", unbiased=True, replace=True)
def h2_sleeper(batch):
    time.sleep(3600)
'''


def test_a_plug_in_that_hangs_is_stopped_by_the_cell_timeout(capsys, tmp_path):
    import time
    (tmp_path / "hang.py").write_text(HANG)
    t0 = time.perf_counter()
    err = refused(capsys, "measure", "three_step_bandit", "-e", "h2_sleeper", "--import", str(tmp_path / "hang.py"),
                  "-N", "2", "-K", "3", "--timeout", "1")
    assert "time limit of 1 s" in err and time.perf_counter() - t0 < 120
    err = refused(capsys, "validate", "h2_sleeper", "-p", "three_step_bandit", "-N", "2", "-K", "20",
                  "--timeout", "1")
    assert "validate h2_sleeper on three_step_bandit" in err
    assert "timeout must be a positive" in refused(capsys, "validate", "h2_sleeper", "--timeout", "-3")


def test_validate_has_a_default_timeout():
    import inspect
    from pgbench.validate import DEFAULT_TIMEOUT, validate
    assert inspect.signature(validate).parameters["timeout"].default == DEFAULT_TIMEOUT > 0


def test_a_plug_in_leaving_a_non_daemon_thread_does_not_hang_the_command(tmp_path):
    import subprocess
    import sys
    (tmp_path / "thr.py").write_text("import threading, time\n"
                                     "threading.Thread(target=lambda: time.sleep(3600), name='plugin-worker').start()\n")
    r = subprocess.run([sys.executable, "-m", "pgbench", "measure", "three_step_bandit", "-e", "reinforce", "-N", "2",
                        "-K", "3", "--json", "--import", str(tmp_path / "thr.py")], capture_output=True, text=True,
                       timeout=300, cwd=str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "non-daemon thread" in r.stderr and "'plugin-worker'" in r.stderr


# ------------------------------------------------------------------------ long solves

def test_lqg_sampling_cap_is_the_first_horizon_within_the_tolerance():
    """The cap from the closed-form tail equals the definition: the first T of the sequence whose
    J_T (by the finite-horizon recursion) is within CAP_REL of J."""
    import math
    from pgbench.exact import lqg as L
    from pgbench.problems.lqg import CAP_REL, lqg
    for p in (point_mass(T=0, gamma=0.9), lqg(n=3, m=2, T=0, gamma=0.95, seed=1)):
        J = L.exact_lqg(p).J
        T = max(8, int(math.ceil(math.log(CAP_REL) / math.log(p.gamma))) // 4)
        while abs(L.exact_lqg(p, horizon=T).J - J) > CAP_REL * abs(J):
            T = int(T * 1.5) + 1
        assert L.sampling_cap(p) == T


def test_discounted_moment_matches_the_step_by_step_recursion():
    import math
    from pgbench.exact import lqg as L
    from pgbench.problems.lqg import lqg
    p = lqg(n=3, m=2, T=0, gamma=0.9, seed=3)
    _, _, F, _, E, _, M0 = L._parts(p, None)
    g = p.gamma
    M = M0.copy()
    for T in range(0, 23):
        got = L._discounted_moment(math.sqrt(g) * F, M0, E, g, T)
        np.testing.assert_allclose(got, g ** T * M, rtol=1e-12, atol=1e-14)
        M = F @ M @ F.T + E


def test_a_long_lqg_solve_says_what_it_is_doing(monkeypatch):
    from pgbench import inputs
    from pgbench.errors import PGBenchWarning
    from pgbench.exact.lqg import exact_lqg
    monkeypatch.setattr(inputs, "SECONDS_WARNING", 0.0)
    with pytest.warns(PGBenchWarning, match=r"exact solve of point_mass.*will take roughly"):
        exact_lqg(point_mass(T=5))

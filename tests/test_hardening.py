"""Hardening: every bad input is refused in one line (CLI: exit 2, no traceback; Python: a
PGBenchError), nothing is written for refused work, run directories keep out cells another run
made (provenance), and a run directory is locked while a run writes it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgbench
from pgbench import TabularMDP, inputs
from pgbench.errors import PGBenchError, PGBenchWarning, ProvenanceError, ResourceLimitError, RunLockedError
from pgbench.suites import store
from pgbench.suites.runner import run
from pgbench.suites.store import RunDir, RunLock, cell_filename

from conftest import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHEAP = ["ladder/three-step-bandit", "objectives/gaussian-toy"]  # 4 quick cells, < 1 s once compiled
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def refused(capsys, *argv, status=2):
    """Run the CLI in-process; assert a one-line refusal and return its text."""
    rc, out, err = run_cli(capsys, *argv)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert rc == status, (argv, rc, err)
    assert out == "", (argv, out)
    assert err.startswith("pgbench: error: ") and err.count("\n") == 1, (argv, err)
    return err


# ----------------------------------------------------------------------------------------- fuzz

BAD_INT = st.sampled_from(["-1", "0", "1.5", "abc", "nan", "inf", "1e400", "True", "", "0x10", "1e9", "10**9",
                           "99999999999999999999999"])
BAD_FLOAT = st.sampled_from(["-0.5", "1.5", "nan", "inf", "-inf", "x", "1e999", "True", "0.9j"])


@st.composite
def bad_problem_ids(draw):
    kind = draw(st.sampled_from(["garnet", "chain", "gridworld", "categorical", "lqg", "unknown", "syntax"]))
    if kind == "lqg":
        return draw(st.sampled_from(["lqg:n=1e9", "lqg:m=100000", "lqg:T=1e12", "lqg:n=0", "lqg:seed=-1", "lqg:T=-1",
                                     "lqg:sigma=-1", "lqg:sigma=nan", "lqg:gamma=2", "lqg:n=2.5", "lqg:T=True"]))
    if kind == "garnet":
        key = draw(st.sampled_from(["S", "A", "b", "seed", "horizon", "gamma", "noise"]))
        val = draw(BAD_FLOAT if key in ("gamma", "noise") else BAD_INT)
        if key == "noise" and val == "1.5":
            val = "-1.5"  # any noise >= 0 is valid
        if key in ("S", "A") and val in ("1e9", "99999999999999999999999"):
            return f"garnet:{key}={val}"  # too large: refused by the memory estimate
        if val in ("0", "1e9") and key in ("seed", "horizon"):
            val = "-3"  # 0 and 10^9 are valid seeds; horizon 10^9 only slow
        if key == "b" and val == "1e9":
            val = "50"  # b > S
        return f"garnet:S=5,A=2,{key}={val}"
    if kind == "chain":
        return f"chain:n={draw(st.sampled_from(['1', '0', '-4', '1e9', '2.5', 'x', '10**3']))}"
    if kind == "gridworld":
        return draw(st.sampled_from(["gridworld:n=3000", "gridworld:n=1", "gridworld:slip=1.5", "gridworld:slip=-0.1",
                                     "gridworld:n=4,slip=nan", "gridworld:n=True"]))
    if kind == "categorical":
        return f"categorical:K={draw(st.sampled_from(['1', '0', '-2', '1e12', '2.5']))}"
    if kind == "unknown":
        return draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
                    .filter(lambda s: s not in pgbench.problems.REGISTRY and not os.path.exists(s)))
    return draw(st.sampled_from(["garnet:S", "garnet:=3", "garnet:S=3,,A=2", "garnet:S=3,S=4", "garnet:Z=1",
                                 "chain:n=6,gamma=2", "three_step_bandit:noise=-1", "frozen_lake:gamma=1.1"]))


@FUZZ
@given(pid=bad_problem_ids())
def test_fuzz_problem_ids_are_refused_in_one_line(capsys, pid):
    refused(capsys, "exact", pid)


@st.composite
def bad_estimators(draw):
    return draw(st.one_of(
        st.sampled_from(["gae:lambda=1.5", "gae:lambda=-0.1", "gae:critic=perturbed,seed=-1",
                         "gae:critic=perturbed,seed=1.5", "gae:critic=perturbed,seed=18446744073709551616",
                         "gae:critic=nope", "gae:critic=perturbed,scale=-1", "td0:critic=x",
                         "importance_sampling:mu=other", "importance_sampling:eps=0", "importance_sampling:eps=2",
                         "entropy_bonus:beta=-1", "entropy_bonus:beta=nan", "natural:base=natural", "natural:base=zzz",
                         "const_baseline:b=x", "const_baseline:b=inf", "reinforce:x=1", "gae:lambda", "gae:=1",
                         "rloo:x=1", "gaussian_score:sigma=1", "gumbel_softmax:tau=1"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
            lambda s: s not in pgbench.estimators.catalogue.MDP_ESTIMATORS)))


@FUZZ
@given(spec=bad_estimators())
def test_fuzz_estimator_specs_are_refused_in_one_line(capsys, spec):
    refused(capsys, "measure", "three_step_bandit", "-e", "reinforce", "-e", spec, "--batch", "4", "--trials", "10")


@st.composite
def bad_measure_options(draw):
    opt = draw(st.sampled_from(["--batch", "--trials", "--seed", "--theta"]))
    if opt == "--batch":
        val = draw(st.sampled_from(["0", "-1", "1.5", "x", "9223372036854775808", str(2 ** 70)]))
    elif opt == "--trials":
        val = draw(st.sampled_from(["1", "0", "-5", "1e12", "1000000000000", "x"]))
    elif opt == "--seed":
        val = draw(st.sampled_from(["-1", str(2 ** 64), str(2 ** 70), "1.5", "x"]))
    else:
        val = draw(st.sampled_from(["random:-1", "random:1.5", "random:" + str(2 ** 64), "ones", "x.npy"]))
    args = {"--batch": "4", "--trials": "10", opt: val}
    return [a for k, v in args.items() for a in (k, v)]


@FUZZ
@given(opts=bad_measure_options())
def test_fuzz_measure_options_are_refused_in_one_line(capsys, opts):
    refused(capsys, "measure", "three_step_bandit", "-e", "reinforce", *opts)


@st.composite
def bad_run_options(draw):
    case = draw(st.sampled_from(["suite", "seed", "workers", "executor"]))
    if case == "suite":
        return [draw(st.sampled_from(["nope", "baselines/none", "ladder/x"]))]
    if case == "seed":
        return [CHEAP[0], "--seed", draw(st.sampled_from(["-1", str(2 ** 64), str(2 ** 70)]))]
    if case == "workers":
        return [CHEAP[0], "--executor", "dask-local", "--workers", draw(st.sampled_from(["0", "-1"]))]
    return [CHEAP[0], "--executor", "dask"]  # no --scheduler


@FUZZ
@given(opts=bad_run_options())
def test_fuzz_run_options_are_refused_and_write_nothing(capsys, opts):
    out = os.path.join(tempfile.mkdtemp(), "run")
    try:
        refused(capsys, "run", "--quick", "--no-report", "--out", out, *opts)
        assert not os.path.exists(out)
    finally:
        shutil.rmtree(os.path.dirname(out))


def _npy_header(shape, dtype="<f8") -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _write_npz(path, arrays: dict, declared: dict | None = None) -> None:
    """Arrays saved normally, plus entries whose header declares a shape their data lacks."""
    np.savez(path, **arrays)
    if declared:
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, shape in declared.items():
                zf.writestr(name + ".npy", _npy_header(shape) + b"\0" * 64)


def _good_arrays():
    P = np.full((2, 2, 2), 0.5)
    return {"P": P, "R": np.zeros((2, 2)), "rho0": np.array([1.0, 0.0]), "gamma": np.float64(0.9)}


@st.composite
def bad_npz(draw):
    a = _good_arrays()
    case = draw(st.sampled_from(["complex_P", "complex_R", "string_P", "string_gamma", "bool_horizon",
                                 "huge_declared", "huge_R", "bool_P", "neg_horizon", "float_horizon", "shape"]))
    declared = None
    if case == "complex_P":
        a["P"] = a["P"] + 0.1j
    elif case == "complex_R":
        a["R"] = a["R"] + 1j
    elif case == "string_P":
        a["P"] = a["P"].astype(str)
    elif case == "string_gamma":
        a["gamma"] = np.array("0.9")
    elif case == "bool_horizon":
        a["horizon"] = np.array(True)
    elif case == "huge_declared":
        del a["P"]
        declared = {"P": (50000, 4, 50000)}
    elif case == "huge_R":
        a["R"] = np.full((2, 2), draw(st.sampled_from([1e308, -1e200, 1e101])))
    elif case == "bool_P":
        a["P"] = np.ones((2, 2, 2), bool)
    elif case == "neg_horizon":
        a["horizon"] = np.int64(-3)
    elif case == "float_horizon":
        a["horizon"] = np.float64(2.5)
    else:
        a["R"] = np.zeros((3, 2))
    return a, declared


@FUZZ
@given(spec=bad_npz())
def test_fuzz_npz_files_are_refused_in_one_line(capsys, spec):
    arrays, declared = spec
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "p.npz")
        _write_npz(path, arrays, declared)
        refused(capsys, "exact", path)
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------ the issue's cases, one by one

ISSUE_CLI_CASES = [
    ["exact", "garnet:S=1e9"], ["exact", "garnet:S=100000,A=4,b=100000"], ["exact", "gridworld:n=3000"],
    ["exact", "chain:n=1e9"], ["exact", "garnet:S=3,A=2,horizon=1000000000000"],
    ["measure", "three_step_bandit", "-e", "reinforce", "--batch", "4", "--trials", "1000000000000"],
    ["measure", "three_step_bandit", "-e", "reinforce", "--batch", str(2 ** 63)],
    ["measure", "three_step_bandit", "-e", "gae:critic=perturbed,seed=-1", "--batch", "4"],
    ["measure", "three_step_bandit", "-e", "reinforce", "--batch", "4", "--seed", str(2 ** 70)],
    ["run", "--quick", CHEAP[0], "--executor", "dask-local", "--workers", "0"],
    ["run", "--quick", CHEAP[0], "--executor", "dask-local", "--workers", "-1"],
    # and a few more options of the other commands
    ["bench", "--episodes", "-1", "--quick"], ["bench", "--repeat", "0"], ["validate", "reinforce", "--alpha", "2"],
    ["validate", "reinforce", "-p", "garnet:S=1e9"], ["exact", "three_step_bandit", "--beta", "nan"],
    ["exact", "three_step_bandit", "--theta", "random:-1"], ["run", "--resume", "no/such/run"],
]


@pytest.mark.parametrize("argv", ISSUE_CLI_CASES, ids=[" ".join(a)[:60] for a in ISSUE_CLI_CASES])
def test_issue_cases_are_refused_in_one_line(capsys, tmp_path, argv):
    if argv[0] == "run":
        argv = argv + ["--out", str(tmp_path / "run")]
    err = refused(capsys, *argv)
    if "garnet:S=1e9" in argv:
        assert "GiB" in err or "TiB" in err  # the figure is stated


def test_tiny_npz_declaring_a_huge_P_is_refused_before_loading(tmp_path):
    path = str(tmp_path / "tiny.npz")
    _write_npz(path, {k: v for k, v in _good_arrays().items() if k != "P"}, {"P": (50000, 4, 50000)})
    assert os.path.getsize(path) < 2000
    with pytest.raises(ResourceLimitError, match=r"would need about 373 GiB"):
        pgbench.make(path)


def _small():
    return np.full((2, 2, 2), 0.5), np.zeros((2, 2)), np.array([1.0, 0.0])


@pytest.mark.parametrize("case", ["complex P", "complex R", "string P", "string gamma", "horizon True",
                                  "seed 2^70", "seed 1.5", "beta x", "measure None", "estimators None", "R 1e308",
                                  "theta complex", "theta strings", "max_steps True"])
def test_python_api_refuses_with_pgbencherror(case):
    P, R, rho = _small()
    G = pgbench.make("three_step_bandit")
    from pgbench.measure.api import measure
    calls = {
        "complex P": lambda: TabularMDP.from_dense(P + 0.5j, R, rho, 0.9),
        "complex R": lambda: TabularMDP.from_dense(P, R + 1j, rho, 0.9),
        "string P": lambda: TabularMDP.from_dense(P.astype(str), R, rho, 0.9),
        "string gamma": lambda: TabularMDP.from_dense(P, R, rho, "0.9"),
        "horizon True": lambda: TabularMDP.from_dense(P, R, rho, 0.9, horizon=True),
        "seed 2^70": lambda: measure(G, ["reinforce"], batch=4, trials=10, seed=2 ** 70),
        "seed 1.5": lambda: measure(G, ["reinforce"], batch=4, trials=10, seed=1.5),
        "beta x": lambda: pgbench.exact(G, beta="x"),
        "measure None": lambda: measure(None, ["reinforce"], batch=4, trials=10),
        "estimators None": lambda: measure(G, None, batch=4, trials=10),
        "R 1e308": lambda: TabularMDP.from_dense(P, R + 1e308, rho, 0.9),
        "theta complex": lambda: G.with_theta(np.zeros((3, 3)) + 1j),
        "theta strings": lambda: G.with_theta(np.full((3, 3), "0.5")),
        "max_steps True": lambda: TabularMDP.from_dense(P, R, rho, 0.9, max_steps=True),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning or RuntimeWarning on the way
        with pytest.raises(PGBenchError) as info:
            calls[case]()
    assert "\n" not in str(info.value)
    if case == "R 1e308":
        assert "overflow" in str(info.value)


def test_string_ids_keep_integers_exact():
    # 2^53 + 1 must not become 2^53 on the way through a float
    assert pgbench.problems.registry.coerce("9007199254740993", 0, "x") == 9007199254740993
    assert pgbench.problems.registry.coerce("1e9", 0, "x") == 10 ** 9


def test_memory_limit_is_configurable(monkeypatch, capsys):
    monkeypatch.setenv("PGBENCH_MAX_MEMORY", "1M")
    err = refused(capsys, "exact", "garnet:S=200,A=4,b=3")
    assert "limit of 1 MiB" in err and "PGBENCH_MAX_MEMORY" in err
    monkeypatch.setenv("PGBENCH_MAX_MEMORY", "none")
    rc, out, _ = run_cli(capsys, "exact", "garnet:S=200,A=4,b=3", "--json")
    assert rc == 0 and json.loads(out)["S"] == 200
    monkeypatch.setenv("PGBENCH_MAX_MEMORY", "lots")
    assert "PGBENCH_MAX_MEMORY must be a size" in refused(capsys, "exact", "three_step_bandit")
    assert inputs.parse_bytes("4G") == 4 * 2 ** 30 and inputs.parse_bytes("512MB") == 512e6


def test_long_horizon_warns_with_its_cost():
    from pgbench.exact.solve import require_exact_memory
    mdp = pgbench.make("garnet:S=3,A=2,b=2,horizon=10000000").mdp
    with pytest.warns(PGBenchWarning, match=r"1e\+07 steps"):
        require_exact_memory(mdp)  # the check only: the solve itself would take minutes
    with pytest.raises(ResourceLimitError, match="horizon 10000000000 is beyond"):
        require_exact_memory(pgbench.make("garnet:S=3,A=2,b=2,horizon=10000000000").mdp)


def test_debug_shows_the_traceback(capsys, monkeypatch):
    from pgbench.cli import main
    with pytest.raises(PGBenchError):
        main(["exact", "nope_problem", "--debug"])
    monkeypatch.setenv("PGBENCH_DEBUG", "1")
    with pytest.raises(PGBenchError):
        main(["exact", "nope_problem"])
    monkeypatch.setenv("PGBENCH_DEBUG", "0")
    refused(capsys, "exact", "nope_problem")


def test_environment_failures_are_one_line_with_status_1(capsys, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))
    monkeypatch.setattr(store.tempfile, "mkstemp", full)
    err = refused(capsys, "run", "--quick", CHEAP[0], "--out", str(tmp_path / "run"), status=1)
    assert "No space left on device" in err


# ----------------------------------------------------------------------------------------- provenance


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    return run(CHEAP, quick=True, out=str(tmp_path_factory.mktemp("p0") / "run"), seed=0, progress=False, report=False)


@pytest.fixture(scope="module")
def seed1(tmp_path_factory):
    return run(CHEAP, quick=True, out=str(tmp_path_factory.mktemp("p1") / "run"), seed=1, progress=False, report=False)


def _copy_run(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def _cells(path):
    return sorted(f for f in os.listdir(os.path.join(path, "cells")) if f.endswith(".json"))


def _edit_cell(path, fname, fn):
    p = os.path.join(path, "cells", fname)
    with open(p) as f:
        rec = json.load(f)
    fn(rec)
    with open(p, "w") as f:
        json.dump(rec, f)


def _refused_everywhere(capsys, run_dir, match, other):
    """resume, report and compare (both ways) refuse the run in one line naming ``match``."""
    with pytest.raises(ProvenanceError, match=match):
        run(resume=run_dir, progress=False, report=False)
    assert match.replace("\\", "") in refused(capsys, "report", run_dir)
    assert match.replace("\\", "") in refused(capsys, "compare", other, run_dir)
    assert not os.path.exists(os.path.join(run_dir, "report.md"))


def test_records_carry_their_provenance(seed0):
    from pgbench.measure.fingerprint import sampler_fingerprint
    meta = RunDir(seed0).meta()
    assert meta["provenance"] == {"pgbench": pgbench.__version__, "sampler": sampler_fingerprint()}
    for rec in RunDir(seed0).cells():
        p = rec["provenance"]
        assert (p["suite"], p["cell"], p["seed"], p["trials"], p["quick"]) == (rec["suite"], rec["cell"], 0,
                                                                                rec["K"], True)
        assert p["sampler"] == sampler_fingerprint() and len(p["definition"]) == 16


def test_a_cell_of_another_seed_is_refused(capsys, seed0, seed1, tmp_path):
    mixed = _copy_run(seed0, tmp_path / "mixed")
    f = _cells(seed1)[0]
    shutil.copy(os.path.join(seed1, "cells", f), os.path.join(mixed, "cells", f))
    _refused_everywhere(capsys, mixed, "seed=1", seed0)


def test_a_cell_of_a_suite_not_in_the_run_is_refused(capsys, seed0, tmp_path):
    one = str(tmp_path / "one")
    run([CHEAP[1]], quick=True, out=one, seed=0, progress=False, report=False)
    f = next(c for c in _cells(seed0) if c.startswith("ladder"))
    shutil.copy(os.path.join(seed0, "cells", f), os.path.join(one, "cells", f))
    _refused_everywhere(capsys, one, "which this run does not include", seed0)


def test_a_cell_of_another_sampler_is_refused(capsys, seed0, tmp_path):
    other = _copy_run(seed0, tmp_path / "other")
    _edit_cell(other, _cells(other)[0], lambda r: r["provenance"].update(sampler="0123456789abcdef"))
    _refused_everywhere(capsys, other, "sampler fingerprint '0123456789abcdef'", seed0)


def test_renamed_and_unmarked_cells_are_refused(capsys, seed0, tmp_path):
    renamed = _copy_run(seed0, tmp_path / "renamed")
    a, b = _cells(renamed)[:2]
    os.replace(os.path.join(renamed, "cells", a), os.path.join(renamed, "cells", "x" + b))
    assert "copied or renamed" in refused(capsys, "report", renamed)
    bare = _copy_run(seed0, tmp_path / "bare")
    _edit_cell(bare, _cells(bare)[0], lambda r: r.pop("provenance"))
    assert "carries no provenance" in refused(capsys, "report", bare)
    edited = _copy_run(seed0, tmp_path / "edited")
    _edit_cell(edited, _cells(edited)[0], lambda r: r.update(K=5))
    assert "trials" in refused(capsys, "report", edited)


def test_a_worker_record_of_another_sampler_is_not_written(seed0, tmp_path):
    rd = RunDir(_copy_run(seed0, tmp_path / "w"))
    rec = rd.cells()[0]
    os.unlink(os.path.join(rd.cells_dir, cell_filename(rec["cell"])))
    rec["provenance"]["sampler"] = "ffffffffffffffff"
    with pytest.raises(ProvenanceError, match="sampler"):
        rd.write_cell(rec)
    assert not rd.has_cell(rec["cell"])


def test_resume_refuses_conflicting_options(capsys, seed0, tmp_path):
    path = _copy_run(seed0, tmp_path / "r")
    before = {f: os.path.getmtime(os.path.join(path, "cells", f)) for f in _cells(path)}
    for kw, text in (({"seed": 5}, "seed=0"), ({"quick": False}, "quick=True"), ({"suite_ids": [CHEAP[0]]}, "suites")):
        with pytest.raises(ProvenanceError, match=text):
            run(resume=path, progress=False, report=False, **kw)
    assert "the run has seed=0, but seed=5 was given" in refused(capsys, "run", "--resume", path, "--seed", "5")
    # the same settings as the run's are accepted (nothing left to do: no cell rewritten)
    assert run(resume=path, seed=0, quick=True, progress=False, report=False) == path
    assert before == {f: os.path.getmtime(os.path.join(path, "cells", f)) for f in _cells(path)}


def test_resume_refuses_a_changed_suite_definition(seed0, tmp_path, monkeypatch):
    import dataclasses
    from pgbench.suites import registry
    path = _copy_run(seed0, tmp_path / "d")
    os.unlink(os.path.join(path, "cells", _cells(path)[0]))
    s = registry.SUITES[CHEAP[0]]
    monkeypatch.setitem(registry.SUITES, s.id, dataclasses.replace(s, estimators=s.estimators[:1]))
    with pytest.raises(ProvenanceError, match="another definition of suite"):
        run(resume=path, progress=False, report=False)


def test_resume_refuses_a_run_of_another_sampler(seed0, tmp_path):
    path = _copy_run(seed0, tmp_path / "s")
    RunDir(path).update_meta(provenance={"pgbench": pgbench.__version__, "sampler": "0000000000000000"})
    with pytest.raises(ProvenanceError, match="sampler fingerprint '0000000000000000'"):
        run(resume=path, progress=False, report=False)


def test_out_with_cells_but_no_meta_is_refused(capsys, seed0, tmp_path):
    path = _copy_run(seed0, tmp_path / "leftover")
    os.unlink(os.path.join(path, "meta.json"))
    before = sorted(os.listdir(path))
    err = refused(capsys, "run", "--quick", *CHEAP, "--out", path)
    assert "no meta.json" in err and sorted(os.listdir(path)) == before


# ----------------------------------------------------------------------------------------- lock


def test_a_second_run_into_a_locked_directory_is_refused(capsys, tmp_path):
    out = str(tmp_path / "run")
    held = RunLock(out).acquire()
    try:
        err = refused(capsys, "run", "--quick", CHEAP[0], "--out", out, status=1)
        assert f"pid {os.getpid()}" in err
        with pytest.raises(RunLockedError):
            RunLock(out).acquire()
        assert os.listdir(out) == [".lock"]  # nothing else written
    finally:
        held.release()
    assert not os.path.exists(os.path.join(out, ".lock"))
    assert RunLock(out).acquire().took_over is None  # a released lock is not "stale"


def test_a_stale_lock_of_a_killed_run_is_taken_over(capsys, tmp_path):
    out = str(tmp_path / "run")
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from pgbench.suites.store import RunLock; "
            "RunLock(sys.argv[2]).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, ROOT, out], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            RunLock(out).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert os.path.exists(os.path.join(out, ".lock"))  # left behind by the kill
    rc, _, err = run_cli(capsys, "run", "--quick", CHEAP[0], "--out", out, "--no-report")
    assert rc == 0 and f"taking over {out} from a run that is gone (pid {proc.pid}" in err
    assert RunDir(out).meta()["status"] == "complete" and not os.path.exists(os.path.join(out, ".lock"))


# ----------------------------------------------------------------------------------------- files


def test_run_files_follow_the_umask_and_complete_follows_the_report(tmp_path, monkeypatch):
    from pgbench.reports import report as report_mod
    seen = []
    real = report_mod.write_report

    def spy(path, **kw):
        seen.append(RunDir(path).meta()["status"])
        return real(path, **kw)

    monkeypatch.setattr(report_mod, "write_report", spy)
    old = os.umask(0o027)
    try:
        out = run([CHEAP[1]], quick=True, out=str(tmp_path / "run"), progress=False, report=True)
    finally:
        os.umask(old)
    assert seen == ["finishing"] and RunDir(out).meta()["status"] == "complete"
    for name in ("meta.json", "results.csv", "report.md", "report.html", os.path.join("cells", _cells(out)[0])):
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o640, name
    assert "complete" in open(os.path.join(out, "report.md")).read()


def test_a_failing_report_leaves_the_run_unfinished(tmp_path, monkeypatch):
    from pgbench.reports import report as report_mod

    def broken(path, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_mod, "write_report", broken)
    out = str(tmp_path / "run")
    with pytest.raises(OSError):
        run([CHEAP[1]], quick=True, out=out, progress=False, report=True)
    assert RunDir(out).meta()["status"] == "finishing"

"""Fuzz of the surfaces added after the MDP files: LQG ``.npz`` files, ``LogitsPolicy``, batch
estimator plug-ins and run directories. Each drawn input is malformed in one way and must be
refused in one line (CLI: ``pgbench: error:``, exit 2; Python: a PGBenchError) with nothing
written. Hypothesis draws a fixed sequence (``derandomize``) of a bounded count, well under a
minute in all once the kernels are compiled."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgbench.errors import PGBenchError
from pgbench.problems.lqg import point_mass, to_arrays

from conftest import run_cli

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def refused(capsys, *argv):
    rc, out, err = run_cli(capsys, *argv)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert rc == 2, (argv, rc, err)
    assert out == "", (argv, out)
    assert err.startswith("pgbench: error: ") and err.count("\n") == 1, (argv, err)
    return err


def _spoil(value: np.ndarray, how: str):
    """One malformation of an array: another dtype, a non-finite entry, another shape."""
    v = np.asarray(value)
    if how == "complex":
        return v + 1j
    if how == "bool":
        return np.ones(v.shape, dtype=bool)
    if how == "string":
        return v.astype(str)
    if how == "nan":
        w = np.array(v, dtype=float)
        w.reshape(-1)[0] = np.nan
        return w
    if how == "inf":
        w = np.array(v, dtype=float)
        w.reshape(-1)[0] = -np.inf
        return w
    if how == "extra_dim":
        return v[..., None]
    if how == "empty":
        return np.zeros((0,))
    raise AssertionError(how)


SPOILS = ["complex", "bool", "string", "nan", "inf", "extra_dim", "empty"]


# ------------------------------------------------------------------------ LQG files

@FUZZ
@given(key=st.sampled_from(["A", "B", "Q", "R", "W", "mu0", "Sigma0", "gamma", "horizon", "K", "log_sigma"]),
       how=st.sampled_from(SPOILS))
def test_fuzz_lqg_files_are_refused_in_one_line(capsys, key, how):
    data = to_arrays(point_mass(T=5))
    if key == "horizon" and how in ("nan", "inf"):
        how = "bool"  # a float horizon that is not an integer is its own (already covered) case
    data[key] = _spoil(data[key], how)
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "lqg.npz")
        np.savez(path, **data)
        refused(capsys, "exact", path)
        assert os.listdir(d) == ["lqg.npz"]
    finally:
        shutil.rmtree(d)


# ------------------------------------------------------------------------ LogitsPolicy

@FUZZ
@given(where=st.sampled_from(["theta", "logits", "vjp"]), how=st.sampled_from(SPOILS + ["raise", "none"]))
def test_fuzz_logits_policies_are_refused_with_a_pgbench_error(where, how):
    from pgbench import make
    from pgbench.policies import LogitsPolicy
    prob = make("three_step_bandit")
    S, A = prob.mdp.S, prob.mdp.A
    theta = np.zeros((S, A))

    def bad(x):
        if how == "raise":
            raise RuntimeError("user function failed")
        if how == "none":
            return None
        return _spoil(x, how)

    logits = (lambda th: bad(np.asarray(th))) if where == "logits" else (lambda th: np.asarray(th))
    vjp = (lambda th, c: bad(np.asarray(c))) if where == "vjp" else (lambda th, c: np.asarray(c))
    if where == "theta":
        if how in ("raise", "none"):
            theta = None if how == "none" else "theta"
        else:
            theta = _spoil(theta, how)
    with pytest.raises(PGBenchError):
        pol = LogitsPolicy(logits, vjp, theta, name="fuzzed")
        p = prob.with_policy(pol)
        p.policy.contract(p.theta, np.ones((S, A)))
        p.policy.logits(p.theta)


# ------------------------------------------------------------------------ batch estimator plug-ins

@FUZZ
@given(returns=st.sampled_from(["psi", "grad"]), how=st.sampled_from(SPOILS + ["raise", "none", "scalar",
                                                                                "list_of_str", "array_raises"]))
def test_fuzz_batch_plug_in_outputs_are_refused_in_one_line(capsys, returns, how):
    from pgbench.estimators import register_batch_estimator, unregister_batch_estimator

    class Unconvertible:
        def __array__(self, *a, **k):
            raise ValueError("cannot")

    def fn(batch):
        n, T = batch.states.shape[0], batch.states.shape[1] - 1
        good = np.zeros((n, T)) if returns == "psi" else np.zeros(batch.theta.size)
        if how == "raise":
            raise RuntimeError("plug-in failed")
        if how == "none":
            return None
        if how == "scalar":
            return 1.5
        if how == "list_of_str":
            return ["a"] * len(good)
        if how == "array_raises":
            return Unconvertible()
        return _spoil(good, how)

    if returns == "grad" and how == "extra_dim":
        how = "complex"  # a (d, 1) column is a gradient too
    register_batch_estimator("fuzzed_plugin", unbiased=True, returns=returns, replace=True)(fn)
    try:
        rc, out, err = run_cli(capsys, "measure", "three_step_bandit", "-e", "fuzzed_plugin", "-N", "2", "-K", "3")
    finally:
        unregister_batch_estimator("fuzzed_plugin")
    assert "Traceback" not in err and "internal error" not in err, err
    assert rc in (1, 2) and out == "" and err.count("\n") == 1 and err.startswith("pgbench: error: "), (rc, err)
    assert "fuzzed_plugin" in err, err


# ------------------------------------------------------------------------ run directories

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from pgbench.suites.runner import run
    return run(["ladder/three-step-bandit", "objectives/gaussian-toy"], quick=True,
               out=str(tmp_path_factory.mktemp("fuzzrun") / "run"), seed=0, progress=False, report=False)


def _paths(x, prefix=()):
    """Every path to a number, string or bool inside a JSON value."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, prefix + (i,))
    elif isinstance(x, (int, float, str, bool)) and x is not None:
        yield prefix


@FUZZ
@given(pick=st.integers(0, 10 ** 6), how=st.sampled_from(["nudge", "nan", "string", "list", "drop", "infinity"]),
       target=st.sampled_from(["cell", "meta"]))
def test_fuzz_edited_run_directories_are_refused_in_one_line(capsys, small_run, pick, how, target):
    d = tempfile.mkdtemp()
    try:
        run_dir = os.path.join(d, "run")
        shutil.copytree(small_run, run_dir)
        cells = sorted(os.listdir(os.path.join(run_dir, "cells")))
        path = os.path.join(run_dir, "cells", cells[pick % len(cells)]) if target == "cell" \
            else os.path.join(run_dir, "meta.json")
        with open(path) as f:
            obj = json.load(f)
        if target == "meta":  # what makes the run's numbers, not the notes about it
            paths = [p for p in _paths({k: obj[k] for k in ("format", "suites", "provenance", "seed", "quick")})]
        else:
            paths = [p for p in _paths(obj) if p[:2] != ("provenance", "checksum")]
        p = paths[pick % len(paths)]
        parent = obj
        for k in p[:-1]:
            parent = parent[k]
        old = parent[p[-1]]
        if how == "nudge":
            new = (old + 1 if isinstance(old, (int, float)) and not isinstance(old, bool)
                   else (not old) if isinstance(old, bool) else str(old) + "x")
        else:
            new = {"nan": float("nan"), "infinity": float("inf"), "string": "edited", "list": [old],
                   "drop": None}[how]
        if how == "drop":
            del parent[p[-1]]
        else:
            parent[p[-1]] = new
        with open(path, "w") as f:
            json.dump(obj, f)
        before = sorted(os.listdir(run_dir))
        refused(capsys, "compare", small_run, run_dir)
        assert sorted(os.listdir(run_dir)) == before
    finally:
        shutil.rmtree(d)

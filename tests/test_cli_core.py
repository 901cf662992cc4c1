"""Command line, core part: ``pgbench list`` and ``pgbench exact`` (in-process and as a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pgbench import make
from pgbench.cli import main
from pgbench.exact import exact
from pgbench.problems import REGISTRY, save_npz

from conftest import linear_version, garnet, random_theta
from conftest import run_cli as run  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def exact_json(capsys, *argv):
    rc, out, err = run(capsys, "exact", *argv, "--json")
    assert rc == 0, err
    assert err == ""
    return json.loads(out)


# ---------------------------------------------------------------------------- list
def test_list_shows_every_problem(capsys):
    rc, out, err = run(capsys, "list")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["problem", "id", "[:parameters"] and set(lines[1]) <= {"-", " "}
    firsts = [line.split(":")[0].split()[0] for line in lines[2:] if line.strip()]
    assert sorted(firsts) == sorted(REGISTRY)
    assert "``" not in out
    assert "garnet:S=20,A=4,b=3,seed=0" in out  # parameters with their defaults
    assert run(capsys, "list", "problems")[1] == out


@pytest.mark.parametrize("what, head", [("estimators", ["estimator", "[:parameters", "with", "defaults]",
                                                          "unbiased", "class"]),
                                         ("suites", ["suite", "problem", "batch", "sizes", "N", "trials", "K", "tags"])])
def test_list_tables_have_headers(capsys, what, head):
    rc, out, err = run(capsys, "list", what)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:len(head)] == head and set(lines[1]) <= {"-", " "}
    if what == "estimators":
        row = next(ln for ln in lines if ln.startswith("value_baseline "))
        assert row.split()[1:3] == ["yes", "oracle"]


def test_pgbench_alone_prints_the_usage_and_help_has_no_rest_markup(capsys):
    rc, out, err = run(capsys)
    assert rc == 0 and err == "" and out.startswith("usage: pgbench") and "measure" in out
    from pgbench.cli import build_parser
    parser = build_parser()
    assert "``" not in parser.format_help()
    # every option of every command says what it does
    sub = next(a for a in parser._actions if a.dest == "cmd")
    for name, sp in sub.choices.items():
        assert "``" not in sp.format_help()
        for action in sp._actions:
            assert action.help, f"pgbench {name} {action.option_strings or action.dest} has no help"


# ---------------------------------------------------------------------------- exact --json
def test_exact_json_unbounded(capsys):
    out = exact_json(capsys, "garnet:S=6,A=3,b=2,seed=1")
    gt = exact(make("garnet:S=6,A=3,b=2,seed=1"))
    assert out["J"] == gt.J
    grad = np.array(out["grad"])
    assert grad.shape == (6, 3)  # nested list shaped like theta
    np.testing.assert_array_equal(grad, gt.grad)
    assert out["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-15)
    assert out["horizon"] is None and out["policy"] == "tabular" and (out["S"], out["A"]) == (6, 3)
    assert out["truncated_mass"] == gt.truncated_mass and out["truncated_J"] == gt.truncated_J
    assert out["max_steps"] == make("garnet:S=6,A=3,b=2,seed=1").mdp.max_steps


def test_exact_json_finite_horizon_has_no_truncation(capsys):
    out = exact_json(capsys, "three_step_bandit")
    expect = np.full((3, 3), -1 / 9)
    np.fill_diagonal(expect, 2 / 9)  # the contract's closed form
    np.testing.assert_allclose(out["grad"], expect, atol=1e-15)
    assert out["horizon"] == 3 and "truncated_mass" not in out


def test_exact_json_linear_policy_and_objectives(capsys):
    out = exact_json(capsys, "boltzmann_bandit")
    assert np.shape(out["grad"]) == (1,) and round(out["grad"][0], 2) == -20.79
    assert out["policy"] == "linear"
    out = exact_json(capsys, "gaussian_toy")
    assert out["grad"] == [4.0] and out["J"] == 2.0  # J = theta (theta^2 + 1) at theta = 1
    out = exact_json(capsys, "categorical:K=3", "--theta", "zeros")
    assert np.shape(out["grad"]) == (3,)


def test_exact_beta_and_natural(capsys):
    p = make("frozen_lake")
    out = exact_json(capsys, "frozen_lake", "--beta", "0.25", "--natural", "--method", "sparse")
    gt = exact(p, beta=0.25, method="sparse")
    assert out["beta"] == 0.25 and out["method"] == "sparse"
    assert out["J"] == gt.J
    np.testing.assert_array_equal(out["natural_grad"], gt.natural_gradient())


def test_theta_choices(capsys, tmp_path):
    spec = "garnet:S=5,A=2,b=2,seed=3"
    p = make(spec)
    zeros = exact_json(capsys, spec, "--theta", "zeros")
    assert zeros["J"] == exact(p, np.zeros((5, 2))).J
    assert exact_json(capsys, spec)["J"] == zeros["J"]  # the built-in's own theta is 0
    r1, r1b, r2 = (exact_json(capsys, spec, "--theta", t) for t in ("random:1", "random:1", "random:2"))
    assert r1 == r1b  # a pure function of the seed
    assert r1["J"] != r2["J"] and r1["J"] != zeros["J"]
    th = random_theta(p, 7)
    np.save(tmp_path / "theta.npy", th)
    out = exact_json(capsys, spec, "--theta", str(tmp_path / "theta.npy"))
    gt = exact(p, th)
    assert out["J"] == gt.J
    np.testing.assert_array_equal(out["grad"], gt.grad)
    np.save(tmp_path / "flat.npy", th.reshape(-1))  # a flat vector of the right size is accepted
    assert exact_json(capsys, spec, "--theta", str(tmp_path / "flat.npy"))["J"] == gt.J


def test_default_theta_comes_from_the_npz(capsys, tmp_path):
    lin = linear_version(garnet(1, gamma=0.8), 1)
    path = str(tmp_path / "lin.npz")
    save_npz(path, lin)
    out = exact_json(capsys, path)
    gt = exact(lin)
    assert out["J"] == gt.J and out["policy"] == "linear" and out["problem"] == "lin"
    np.testing.assert_allclose(out["grad"], gt.grad, rtol=1e-13)
    # --theta overrides the file's theta
    assert exact_json(capsys, path, "--theta", "zeros")["J"] == exact(lin, np.zeros(4)).J != gt.J


def test_human_readable_output(capsys):
    rc, out, err = run(capsys, "exact", "gridworld:n=3")
    assert rc == 0 and err == ""
    gt = exact(make("gridworld:n=3"))
    assert f"J         {gt.J:.10g}" in out
    assert "P(still running)" in out and "grad J =" in out


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def bad_files(tmp_path):
    P = np.full((2, 2, 2), 0.5)
    files = {}
    files["text.npz"] = tmp_path / "text.npz"
    files["text.npz"].write_text("not a zip\n")
    files["array.npy"] = tmp_path / "array.npy"
    np.save(files["array.npy"], np.zeros(3))
    files["never_ends.npz"] = tmp_path / "never_ends.npz"
    np.savez(files["never_ends.npz"], P=P, R=np.ones((2, 2)), rho0=[0.5, 0.5], gamma=1.0)
    files["bad_rows.npz"] = tmp_path / "bad_rows.npz"
    np.savez(files["bad_rows.npz"], P=P * 1.1, R=np.ones((2, 2)), rho0=[0.5, 0.5], gamma=0.5)
    files["shape.npy"] = tmp_path / "shape.npy"
    np.save(files["shape.npy"], np.zeros((3, 3)))
    files["nan.npy"] = tmp_path / "nan.npy"
    np.save(files["nan.npy"], np.full((5, 2), np.nan))
    files["words.npy"] = tmp_path / "words.npy"
    np.save(files["words.npy"], np.array(["a"]))
    files["missing.npz"] = tmp_path / "missing.npz"
    files["missing.npy"] = tmp_path / "missing.npy"
    return {k: str(v) for k, v in files.items()}


BAD = [
    (["exact", "nope"], "unknown problem"),
    (["exact", "garnet:S=x"], "cannot read 'x'"),
    (["exact", "garnet:Z=1"], "unknown parameter 'Z'"),
    (["exact", "garnet:S"], "malformed parameter"),
    (["exact", "garnet:S=inf"], "finite"),
    (["exact", "garnet:seed=-2"], "seed"),
    (["exact", "{missing.npz}"], "no such problem file"),
    (["exact", "{text.npz}"], "cannot read"),
    (["exact", "{array.npy}"], "cannot read"),
    (["exact", "{never_ends.npz}"], "singular"),
    (["exact", "{bad_rows.npz}"], "P[s=0, a=0, :] sums to 1.1"),
    (["exact", "garnet:S=5,A=2", "--theta", "bogus"], "--theta must be"),
    (["exact", "garnet:S=5,A=2", "--theta", "random:x"], "integer seed"),
    (["exact", "garnet:S=5,A=2", "--theta", "{missing.npy}"], "cannot read theta"),
    (["exact", "garnet:S=5,A=2", "--theta", "{shape.npy}"], "theta has shape (3, 3)"),
    (["exact", "garnet:S=5,A=2", "--theta", "{nan.npy}"], "non-finite"),
    (["exact", "gaussian_toy", "--theta", "{words.npy}"], "theta must be numeric"),
    (["exact", "garnet:S=5,A=2", "--beta", "-1"], "beta"),
    (["exact", "garnet:S=5,A=2", "--beta", "nan"], "beta"),
    (["exact", "garnet:S=5,A=2", "--beta", "x"], "--beta"),
    (["exact", "garnet:S=5,A=2", "--method", "foo"], "--method"),
    (["exact", "garnet:S=100000,A=2,b=2", "--method", "dense"], "dense P"),
    (["exact"], "required: problem"),
    (["frob"], "invalid choice"),
    (["list", "foo"], "pgbench list takes"),
]


@pytest.mark.parametrize("argv,match", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_gives_one_line_and_status_2(capsys, bad_files, argv, match):
    for key, path in bad_files.items():
        argv = [a.replace("{" + key + "}", path) for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.startswith("pgbench: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert match in err


# ---------------------------------------------------------------------------- as a subprocess
def _subprocess(*argv):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pgbench", *argv], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def test_subprocess_exact_and_error(capsys):
    argv = ("exact", "garnet:S=4,A=2,b=2,seed=0", "--json", "--theta", "random:5")
    r = _subprocess(*argv)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert np.shape(out["grad"]) == (4, 2)
    assert 0.0 <= out["truncated_mass"] <= 1.0 + 1e-12
    assert out == exact_json(capsys, *argv[1:-2], *argv[-2:])  # same answer as in-process
    r = _subprocess("exact", "garnet:S=4,Q=1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("pgbench: error: unknown parameter 'Q'") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    r = _subprocess("list")
    assert r.returncode == 0 and "frozen_lake" in r.stdout

"""Hardening of the surfaces added last: LQG files, the Gymnasium env's actions, plug-ins,
policies and run directories. Every bad input ends in one line (CLI: ``pgbench: error: ...``,
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

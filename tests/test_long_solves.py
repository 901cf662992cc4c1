"""Long exact solves of tabular MDPs: step loops stop at a floating-point fixed point (results
bit-identical to the full loop), and a long sparse solve says on stderr what it is doing."""
import json

import numpy as np
import pytest

import pgbench
from pgbench import inputs
from pgbench.errors import PGBenchWarning
from pgbench.exact import solve
from tests.conftest import run_cli


def _full_loops(problem, max_steps=None):
    """Plain NumPy reference: every step of the backward recursion, the forward visitation and the
    truncation check, with no early stop."""
    mdp = problem.mdp
    pi = problem.policy.probs(problem.resolve_theta(None))
    R = np.where(mdp.terminal[:, None], 0.0, mdp.R)
    dyn = solve._Dynamics(mdp, pi, "auto")
    gamma = mdp.gamma
    if mdp.horizon is None:
        dt = mdp.rho0.copy()
        for _ in range(mdp.max_steps if max_steps is None else max_steps):
            dt = dyn.step_forward(dt)
        return dt
    T = mdp.horizon
    V = np.zeros((T + 1, mdp.S))
    Q = np.zeros((T, mdp.S, mdp.A))
    for t in range(T - 1, -1, -1):
        Q[t] = R + gamma * np.einsum("sak,sak->sa", mdp.next_prob, V[t + 1][mdp.next_idx])
        Q[t][mdp.terminal] = 0.0
        V[t] = (pi * Q[t]).sum(axis=1)
    d = np.zeros((T, mdp.S))
    d[0] = mdp.rho0
    for t in range(1, T):
        d[t] = dyn.step_forward(d[t - 1])
    return V[:T], Q, d


@pytest.mark.parametrize("spec", ["garnet:S=5,A=3,b=2,horizon=50", "garnet:S=7,A=2,b=3,horizon=2000",
                                  "garnet:S=6,A=2,b=2,gamma=1.0,horizon=300", "chain:n=6,horizon=600",
                                  "chain:n=6,gamma=1.0,horizon=3000"])
def test_finite_horizon_is_bit_identical_to_the_full_loop(spec):
    problem = pgbench.make(spec)
    V, Q, d = _full_loops(problem)
    gt = solve.exact(problem)
    # difference 0 exactly: the early stop fills in the numbers the loop would have computed
    np.testing.assert_array_equal(gt.V, V)
    np.testing.assert_array_equal(gt.Q, Q)
    np.testing.assert_array_equal(gt.d, d)
    assert gt.J == float(problem.mdp.rho0 @ V[0])


@pytest.mark.parametrize("spec", ["garnet:S=5,A=2,b=2", "chain:n=6", "frozen_lake"])
def test_truncation_check_is_bit_identical_to_the_full_loop(spec):
    problem = pgbench.make(spec)
    steps = 20000
    dt = _full_loops(problem, steps)
    gt = solve.exact(problem, max_steps=steps)
    assert gt.truncated_mass == float(dt.sum())
    assert gt.truncated_J == float(problem.mdp.gamma ** steps * (dt @ gt.V))


def _count(monkeypatch, name):
    calls = [0]
    orig = getattr(solve, name) if name != "step_forward" else solve._Dynamics.step_forward

    def counted(*args):
        calls[0] += 1
        return orig(*args)

    if name == "step_forward":
        monkeypatch.setattr(solve._Dynamics, "step_forward", counted)
    else:
        monkeypatch.setattr(solve, name, counted)
    return calls


def test_a_million_step_horizon_stops_at_the_fixed_point(capsys, monkeypatch):
    gathers = _count(monkeypatch, "_gather_next")
    steps = _count(monkeypatch, "step_forward")
    rc, out, err = run_cli(capsys, "exact", "garnet:S=3,A=2,b=2,horizon=1000000", "--json")
    assert rc == 0, err
    assert np.isfinite(json.loads(out)["J"])
    # the full loop would make 10^6 of each
    assert 0 < gathers[0] < 10_000 and 0 < steps[0] < 10_000


def test_a_long_truncation_check_stops_at_the_fixed_point(monkeypatch):
    steps = _count(monkeypatch, "step_forward")
    with pytest.warns(PGBenchWarning, match="truncation check"):
        gt = solve.exact(pgbench.make("garnet:S=5,A=2,b=2"), max_steps=10 ** 7)
    assert steps[0] < 10_000
    assert gt.truncated_mass == pytest.approx(1.0, abs=1e-12)


def test_a_large_sparse_solve_says_what_it_is_doing(capsys, monkeypatch):
    monkeypatch.setattr(inputs, "SECONDS_WARNING", 0.0)  # a cheap problem stands in for garnet:S=1000000
    rc, out, err = run_cli(capsys, "exact", "garnet:S=1600,A=2,b=2", "--json")
    assert rc == 0
    lines = [ln for ln in err.splitlines() if "sparse GMRES on 1600 states" in ln]
    assert len(lines) == 1 and "will take roughly" in lines[0]
    json.loads(out)


def test_the_sparse_estimate_is_within_a_small_factor_of_the_measured_rate():
    # garnet S=300000, A=4, b=3 at gamma 0.9 took 6.4-8.6 s on the development machine (2 cores)
    est = solve.sparse_solve_seconds(pgbench.make("garnet:S=300000,A=4,b=3").mdp, 219)
    assert 3.0 < est < 30.0
    assert solve.sparse_solve_seconds(pgbench.make("garnet:S=1000,A=4,b=3").mdp, 219) < 0.1


def test_a_loop_with_no_fixed_point_says_how_long_is_left(monkeypatch):
    # gamma = 1 and no terminal states: V grows every step, so the recursion runs to the end
    monkeypatch.setattr(solve._LoopClock, "AFTER", 0.0)
    monkeypatch.setattr(inputs, "SECONDS_WARNING", 0.0)
    with pytest.warns(PGBenchWarning, match=r"horizon 10000: no fixed point after 4096 steps.*roughly"):
        gt = solve.exact(pgbench.make("garnet:S=3,A=2,b=2,gamma=1.0,horizon=10000"))
    V, Q, d = _full_loops(pgbench.make("garnet:S=3,A=2,b=2,gamma=1.0,horizon=10000"))
    np.testing.assert_array_equal(gt.V, V)


def test_visitation_per_step_is_bit_identical_to_the_full_loop():
    problem = pgbench.make("chain:n=6,gamma=1.0,horizon=3000")
    pi = problem.policy.probs(problem.resolve_theta(None))
    _, _, d = _full_loops(problem)
    np.testing.assert_array_equal(solve.visitation_per_step(problem, pi, 3000), d)

"""pgbench problems as Gymnasium environments, and an agent written for Gymnasium checked
against the exact gradient."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")  # the last test runs without it

import pgbench  # noqa: E402
import pgbench.envs  # noqa: E402
from pgbench import PGBenchError, make  # noqa: E402
from conftest import z_crit  # noqa: E402


def _episode(env, seed, policy_rng):
    s, _ = env.reset(seed=seed)
    out = [s]
    while True:
        s, r, term, trunc, info = env.step(int(policy_rng.integers(env.action_space.n)))
        out.append((s, r, term, trunc))
        if term or trunc:
            return out


def test_spaces_and_seeded_reset():
    env = pgbench.envs.make("garnet:S=7,A=3,b=2,seed=0,horizon=5,noise=0.5")
    assert isinstance(env, gym.Env)
    assert env.observation_space == gym.spaces.Discrete(7) and env.action_space == gym.spaces.Discrete(3)
    a = _episode(env, 11, np.random.default_rng(0))
    b = _episode(env, 11, np.random.default_rng(0))
    c = _episode(env, 12, np.random.default_rng(0))
    assert a == b and a != c
    from gymnasium.utils.env_checker import check_env
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("problem, how", [("three_step_bandit", "horizon"), ("frozen_lake", "terminal"),
                                          ("chain:n=6,gamma=0.95", "cap")])
def test_terminated_and_truncated(problem, how):
    prob = make(problem)
    env = pgbench.envs.make(prob)
    rng = np.random.default_rng(1)
    ends = {"terminated": 0, "truncated": 0}
    for i in range(40):
        ep = _episode(env, i, rng)
        s_last, _, term, trunc = ep[-1]
        assert term != trunc
        assert not any(t or u for _, _, t, u in ep[1:-1])
        if term:
            assert prob.mdp.terminal[s_last]
            ends["terminated"] += 1
        else:
            assert len(ep) - 1 == prob.mdp.episode_cap and not prob.mdp.terminal[s_last]
            ends["truncated"] += 1
    if how == "terminal":
        assert ends["terminated"] > 0
    else:
        assert ends["terminated"] == 0


def test_expected_return_is_the_exact_J():
    """Uniform policy on a finite-horizon noisy garnet: mean discounted return within 5 SE of J."""
    prob = make("garnet:S=5,A=2,b=2,seed=4,gamma=0.9,horizon=4,noise=0.3")
    env = pgbench.envs.make(prob)
    rng = np.random.default_rng(2)
    R = []
    for i in range(4000):
        ep = _episode(env, i, rng)
        R.append(sum(prob.mdp.gamma ** t * r for t, (_, r, _, _) in enumerate(ep[1:])))
    R = np.asarray(R)
    J = pgbench.exact(prob, np.zeros((5, 2))).J
    assert abs(R.mean() - J) <= 5 * R.std(ddof=1) / np.sqrt(R.size)


def test_gymnasium_agent_gradient_matches_exact_at_each_step():
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "gym_policy_gradient.py")
    spec = importlib.util.spec_from_file_location("_gym_pg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.train(steps=3, n_episodes=1500, seed=0)
    Js = [r["J"] for r in rows]
    assert Js[-1] > Js[0]  # the agent improves
    for r in rows:
        d = r["g"].size
        bound = z_crit(d) * np.sqrt((r["se"] ** 2).sum())  # ||g_hat - g|| from the standard errors
        err = np.linalg.norm(r["g_hat"] - r["g"])
        gn = np.linalg.norm(r["g"])
        assert err <= bound
        assert r["rel_error"] == pytest.approx(err / gn)
        assert r["cosine"] >= np.sqrt(max(0.0, 1 - (bound / gn) ** 2)) - 1e-12 if bound < gn else True


def test_objectives_are_not_environments():
    with pytest.raises(PGBenchError, match="only MDP problems"):
        pgbench.envs.make("gaussian_toy")


def test_import_pgbench_without_gymnasium_or_jax():
    """The optional extras stay optional: pgbench imports, and envs.make says what to install."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['gymnasium'] = None; sys.modules['jax'] = None\n"
            "import pgbench, pgbench.envs, pgbench.policies\n"
            "try:\n    pgbench.envs.make('frozen_lake')\nexcept pgbench.PGBenchError as e:\n    print(e)\n"
            "try:\n    pgbench.policies.jax_policy(None, [0.0])\nexcept pgbench.PGBenchError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(__file__), ".."), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "pip install 'pgbench[gym]'" in out.stdout and "pip install 'pgbench[jax]'" in out.stdout


@pytest.mark.parametrize("problem, end", [("three_step_bandit", "truncated"), ("frozen_lake", "terminated")])
def test_a_step_after_the_end_or_before_reset_is_refused(problem, end):
    """An agent that forgets reset() must not keep collecting rewards past its episode's end."""
    env = pgbench.envs.make(problem)
    with pytest.raises(PGBenchError, match="reset"):
        env.step(0)
    rng = np.random.default_rng(3)
    for i in range(50):  # an episode that ends the way the parametrisation names
        ep = _episode(env, i, rng)
        if ep[-1][2 if end == "terminated" else 3]:
            break
    else:
        pytest.fail(f"no {end} episode in 50")
    with pytest.raises(PGBenchError, match=f"after the episode ended \\({end}.*reset"):
        env.step(0)
    with pytest.raises(PGBenchError, match="after the episode ended"):  # still refused, not one-shot
        env.step(1)
    s, _ = env.reset(seed=0)  # and reset starts the next one
    assert env.step(0)[0] in range(env.observation_space.n)

"""Every MDP problem as a Gymnasium environment (optional extra ``pgbench[gym]``).

``pgbench.envs.make(problem)`` returns a ``gymnasium.Env`` with ``Discrete(S)`` observations and
``Discrete(A)`` actions, so an agent written for Gymnasium runs on a pgbench problem unchanged,
and the exact gradient of its current policy is ``pgbench.exact(problem, theta)`` away.
Entering a terminal state ends the episode with ``terminated=True``; reaching the horizon (or,
for an unbounded problem, the sampling cap ``max_steps``) ends it with ``truncated=True``, so
the exact J of a finite-horizon problem is the expected return of the environment's episodes
(the cap's share of an unbounded problem's J is ``pgbench.exact(problem).truncated_J``).
``reset(seed=...)`` seeds the environment's generator (Gymnasium's ``np_random``).
A ``step`` before the first ``reset``, or after a step that returned ``terminated`` or
``truncated``, raises :class:`pgbench.PGBenchError` (an agent that forgets to reset would
otherwise go on collecting rewards past the end of its episode).
"""
from __future__ import annotations

import numpy as np

from pgbench.errors import PGBenchError

try:
    import gymnasium as _gym
except ImportError:  # optional extra
    _gym = None


def make(problem, render_mode=None):
    """A Gymnasium environment for an MDP problem (an id, an ``.npz`` path or an MDPProblem)."""
    if _gym is None:
        raise PGBenchError("pgbench.envs needs Gymnasium: pip install 'pgbench[gym]'")
    from pgbench.problems import make as make_problem
    prob = make_problem(problem) if isinstance(problem, str) else problem
    if getattr(prob, "kind", None) != "mdp":
        raise PGBenchError(f"only MDP problems are Gymnasium environments; {getattr(prob, 'name', problem)!r} is not one")
    return _env_class()(prob, render_mode=render_mode)


_CLASS = []


def _action(action, A: int) -> int:
    """The action as an int in [0, A): Python or NumPy integers (or a 0-d integer array) only, as
    ``Discrete(A).contains`` has it; a float (1.7), a string ('1'), None or a longer array is refused
    rather than read as some action."""
    a = action
    if isinstance(a, np.ndarray):
        if a.ndim != 0:
            raise PGBenchError(f"an action of Discrete({A}) is one integer; got an array of shape {a.shape}")
        a = a[()]
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
        raise PGBenchError(f"an action of Discrete({A}) is an integer in [0, {A}); got {type(a).__name__} {a!r}")
    if not 0 <= int(a) < A:
        raise PGBenchError(f"action {int(a)} outside Discrete({A})")
    return int(a)


def _env_class():
    if _CLASS:
        return _CLASS[0]

    class PGBenchEnv(_gym.Env):
        """A pgbench MDP problem behind the Gymnasium API (see :mod:`pgbench.envs`)."""

        metadata = {"render_modes": ["ansi"]}

        def __init__(self, problem, render_mode=None):
            mdp = problem.mdp
            self.problem = problem
            self.observation_space = _gym.spaces.Discrete(mdp.S)
            self.action_space = _gym.spaces.Discrete(mdp.A)
            self.render_mode = render_mode
            self._cdf_start = np.cumsum(mdp.rho0)
            self._next_idx = mdp.next_idx
            self._next_cdf = np.cumsum(mdp.next_prob, axis=2)
            self._cap = int(mdp.episode_cap)
            self._s = None
            self._t = 0
            self._ended = None  # "terminated" or "truncated" once the episode is over

        @staticmethod
        def _draw(cdf, u) -> int:
            return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), cdf.shape[0] - 1))

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self._s = self._draw(self._cdf_start, self.np_random.random())
            self._t = 0
            self._ended = None
            return self._s, {}

        def step(self, action):
            if self._s is None:
                raise PGBenchError("call reset() before step()")
            if self._ended is not None:
                raise PGBenchError(f"step() after the episode ended ({self._ended} at t={self._t}); "
                                   "call reset() to start the next episode")
            mdp = self.problem.mdp
            a = _action(action, mdp.A)
            s = self._s
            k = self._draw(self._next_cdf[s, a], self.np_random.random())
            s_next = int(self._next_idx[s, a, k])
            r = float(mdp.R[s, a])
            if mdp.reward_noise == "gaussian":
                r += float(mdp.reward_scale[s, a]) * float(self.np_random.standard_normal())
            elif mdp.reward_noise == "uniform":
                r += float(mdp.reward_scale[s, a]) * (float(self.np_random.random()) - 0.5)
            self._t += 1
            terminated = bool(mdp.terminal[s_next])
            truncated = (not terminated) and self._t >= self._cap
            self._s = s_next
            if terminated or truncated:
                self._ended = "terminated" if terminated else "truncated"
            return s_next, r, terminated, truncated, {"t": self._t}

        def render(self):
            if self.render_mode == "ansi":
                return f"t={self._t} s={self._s}"
            return None

    _CLASS.append(PGBenchEnv)
    return PGBenchEnv

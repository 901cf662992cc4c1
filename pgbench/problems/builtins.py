"""Built-in problems. Each factory takes its parameters by keyword (they ride in the name,
e.g. ``garnet:S=20,A=4,b=3,seed=0``) and returns an :class:`MDPProblem` or an objective."""
from __future__ import annotations

import numpy as np

from pgbench import inputs
from pgbench.errors import PGBenchError
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.objectives import CategoricalObjective, GaussianToy
from pgbench.problems.problem import MDPProblem


def three_step_bandit(noise: float = 0.3) -> MDPProblem:
    """T = 3 steps, 3 actions; the best action is 0, 1, 2 at steps 0, 1, 2; reward
    ``1[a = best] + U(-noise, noise)``. State t is step t, so tabular softmax is time-indexed."""
    S = A = 3
    P = np.zeros((S, A, S))
    for s in range(S):
        P[s, :, (s + 1) % S] = 1.0
    R = np.eye(S)
    mdp = TabularMDP.from_dense(P, R, np.eye(S)[0], gamma=1.0, horizon=3, reward_width=2 * noise,
                                name="three_step_bandit")
    return MDPProblem.tabular(mdp, name="three_step_bandit")


def boltzmann_bandit() -> MDPProblem:
    """One state, two actions, linear softmax with features 3 and 1 at theta = 1, rewards 1 and 100.
    ``dJ/dtheta = -20.79``: the policy prefers the worse arm."""
    P = np.ones((1, 2, 1))
    mdp = TabularMDP.from_dense(P, [[1.0, 100.0]], [1.0], gamma=1.0, horizon=1, name="boltzmann_bandit")
    return MDPProblem.linear(mdp, np.array([[[3.0], [1.0]]]), theta=[1.0], name="boltzmann_bandit")


def _numbers(what: str, text: str) -> np.ndarray:
    try:
        v = np.array([float(x) for x in str(text).split(";") if x.strip()], dtype=float)
    except ValueError:
        raise PGBenchError(f"{what} must be numbers separated by ';' (e.g. 1;0.7;0); got {text!r}") from None
    if not np.all(np.isfinite(v)):
        raise PGBenchError(f"{what} must be finite; got {text!r}")
    return v


def bandit(r: str = "1;0", theta: str = "", noise: float = 0.0) -> MDPProblem:
    """One state, one step, tabular softmax over the arms with mean rewards r and starting logits
    theta, both separated by ';' (bandit:r=1;0.7;0,theta=0;3;5), and Gaussian reward noise of std noise."""
    R = _numbers("bandit r", r)
    if R.size < 2:
        raise PGBenchError(f"bandit needs at least two arms; got r={r!r}")
    th = _numbers("bandit theta", theta) if str(theta).strip() else np.zeros(R.size)
    if th.size != R.size:
        raise PGBenchError(f"bandit theta needs one entry per arm ({R.size}); got {th.size}")
    noise = inputs.real_scalar("bandit noise", noise)
    if noise < 0:
        raise PGBenchError(f"bandit needs noise >= 0; got noise={noise}")
    name = f"bandit:r={';'.join(repr(float(x)) for x in R)}"
    mdp = TabularMDP.from_dense(np.ones((1, R.size, 1)), R.reshape(1, -1), [1.0], gamma=1.0, horizon=1,
                                reward_std=(noise if noise > 0 else None), name=name)
    return MDPProblem.tabular(mdp, theta=th.reshape(1, -1), name=name)


def garnet(S: int = 20, A: int = 4, b: int = 3, seed: int = 0, gamma: float = 0.9,
           horizon: int = 0, noise: float = 0.0) -> MDPProblem:
    """Random MDP: each (s, a) moves to b distinct random states with Dirichlet(1) probabilities;
    ``R ~ U(0, 1)``; uniform start; optional Gaussian reward noise of std ``noise``.
    ``horizon=0`` is unbounded."""
    S, A, b = (inputs.integer(f"garnet {k}", v) for k, v in (("S", S), ("A", A), ("b", b)))
    if S < 1 or A < 1 or not 1 <= b <= S:
        raise PGBenchError(f"garnet needs S >= 1, A >= 1 and 1 <= b <= S; got S={S}, A={A}, b={b}")
    seed = inputs.seed(seed, "garnet seed")
    noise = inputs.real_scalar("garnet noise", noise)
    horizon = inputs.integer("garnet horizon (0 = unbounded)", horizon, 0)
    if noise < 0:
        raise PGBenchError(f"garnet needs noise >= 0; got noise={noise}")
    # successor lists and their sorting copies, then the MDP's own arrays; b >= S/4 draws (S, A, S)
    # permutations; up to 1500 states the exact solve is dense (S x S)
    need = 8.0 * S * A * b * 10 + (16.0 * S * A * S if b * 4 >= S else 0.0) + (24.0 * S * S if S <= 1500 else 0.0)
    inputs.require_memory(need, f"garnet:S={S},A={A},b={b}", "use fewer states, actions or successors b")
    rng = np.random.default_rng(int(seed))
    if b * 4 < S:
        # rejection for distinct successors is cheap when b << S (no S-sized permutations)
        idx = rng.integers(0, S, size=(S, A, b))
        for _ in range(100):
            srt = np.sort(idx, axis=2)
            dup = np.any(srt[:, :, 1:] == srt[:, :, :-1], axis=2)
            if not dup.any():
                break
            idx[dup] = rng.integers(0, S, size=(int(dup.sum()), b))
    else:
        idx = np.argsort(rng.random((S, A, S)), axis=2)[:, :, :b]
    prob = rng.dirichlet(np.ones(b), size=(S, A))
    R = rng.random((S, A))
    name = f"garnet:S={S},A={A},b={b},seed={seed}"
    mdp = TabularMDP.from_sparse(idx, prob, R, np.full(S, 1.0 / S), gamma, horizon=horizon or None,
                                 reward_std=(noise if noise > 0 else None), name=name)
    return MDPProblem.tabular(mdp, name=name)


def chain(n: int = 6, gamma: float = 0.95, horizon: int = 0) -> MDPProblem:
    """RiverSwim-style chain of n states (Strehl & Littman 2008): action 0 (left) always moves
    left and pays 0.005 at state 0; action 1 (right) swims against the current (0.35 right,
    0.6 stay, 0.05 left in the middle) and pays 1 at the far end. Starts at state 0."""
    n = inputs.integer("chain n", n)
    if n < 2:
        raise PGBenchError(f"chain needs n >= 2; got {n}")
    inputs.require_memory(4 * 8.0 * n * 2 * n, f"chain:n={n} (a dense (n, 2, n) P)", "use a smaller n")
    P = np.zeros((n, 2, n))
    R = np.zeros((n, 2))
    for s in range(n):
        P[s, 0, max(s - 1, 0)] = 1.0
        if s == 0:
            P[s, 1, 0], P[s, 1, 1] = 0.4, 0.6
        elif s == n - 1:
            P[s, 1, s - 1], P[s, 1, s] = 0.4, 0.6
        else:
            P[s, 1, s - 1], P[s, 1, s], P[s, 1, s + 1] = 0.05, 0.6, 0.35
    R[0, 0] = 0.005
    R[n - 1, 1] = 1.0
    horizon = inputs.integer("chain horizon (0 = unbounded)", horizon, 0)
    mdp = TabularMDP.from_dense(P, R, np.eye(n)[0], gamma, horizon=horizon or None, name=f"chain:n={n}")
    return MDPProblem.tabular(mdp, name=f"chain:n={n}")


_MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right


def _grid_mdp(cells: list[str], slip_to: callable, gamma: float, name: str) -> TabularMDP:
    """Grid from a map of S (start), F (floor), H (hole, terminal) and G (goal, terminal, reward 1)."""
    n_r, n_c = len(cells), len(cells[0])
    S = n_r * n_c
    P = np.zeros((S, 4, S))
    terminal = np.zeros(S, dtype=bool)
    rho0 = np.zeros(S)
    goal = np.zeros(S)
    for r in range(n_r):
        for c in range(n_c):
            s = r * n_c + c
            ch = cells[r][c]
            terminal[s] = ch in "HG"
            goal[s] = ch == "G"
            rho0[s] = ch == "S"
            for a in range(4):
                if terminal[s]:
                    P[s, a, s] = 1.0
                    continue
                for m, p in slip_to(a):
                    rr = min(max(r + _MOVES[m][0], 0), n_r - 1)
                    cc = min(max(c + _MOVES[m][1], 0), n_c - 1)
                    P[s, a, rr * n_c + cc] += p
    R = P @ goal  # mean reward of a step = probability of entering the goal
    R[terminal] = 0.0
    return TabularMDP.from_dense(P, R, rho0, gamma, terminal=terminal, name=name)


def gridworld(n: int = 4, slip: float = 0.1, gamma: float = 0.95) -> MDPProblem:
    """n x n grid from the top-left corner to a terminal goal at the bottom-right (reward 1 on
    entering it). With probability ``slip`` the move goes in one of the other three directions."""
    n = inputs.integer("gridworld n", n)
    slip = inputs.real_scalar("gridworld slip", slip)
    if n < 2 or not 0.0 <= slip <= 1.0:
        raise PGBenchError(f"gridworld needs n >= 2 and slip in [0, 1]; got n={n}, slip={slip}")
    inputs.require_memory(5 * 8.0 * n ** 4 * 4, f"gridworld:n={n} (a dense (n^2, 4, n^2) P)", "use a smaller n")
    cells = ["F" * n for _ in range(n)]
    cells[0] = "S" + cells[0][1:]
    cells[-1] = cells[-1][:-1] + "G"

    def slip_to(a):
        return [(a, 1.0 - slip)] + [(m, slip / 3.0) for m in range(4) if m != a]

    name = f"gridworld:n={n},slip={slip}"
    return MDPProblem.tabular(_grid_mdp(cells, slip_to, gamma, name), name=name)


def frozen_lake(gamma: float = 0.99) -> MDPProblem:
    """The 4x4 FrozenLake (slippery): the intended move or either perpendicular one, 1/3 each;
    holes and the goal are terminal; reward 1 on reaching the goal."""
    cells = ["SFFF", "FHFH", "FFFH", "HFFG"]
    perp = {0: (2, 3), 1: (2, 3), 2: (0, 1), 3: (0, 1)}

    def slip_to(a):
        return [(a, 1 / 3), (perp[a][0], 1 / 3), (perp[a][1], 1 / 3)]

    return MDPProblem.tabular(_grid_mdp(cells, slip_to, gamma, "frozen_lake"), name="frozen_lake")


def gaussian_toy(theta: float = 1.0) -> GaussianToy:
    """``x ~ N(theta, 1)``, ``f = x^2 theta``; ``dJ/dtheta = 1 + 3 theta^2``."""
    return GaussianToy(theta=[theta])


def categorical(K: int = 4, seed: int = -1) -> CategoricalObjective:
    """``x ~ Cat(softmax(theta))``, cost ``||onehot(x) - t||^2``; t = linspace(0.1, 0.9, K),
    or U(0, 1)^K drawn from ``seed`` when seed >= 0. theta = 0."""
    K = inputs.integer("categorical K", K)
    if K < 2:
        raise PGBenchError(f"categorical needs K >= 2; got {K}")
    seed = inputs.integer("categorical seed (-1: fixed targets)", seed, -1, inputs.SEED_LIMIT - 1)
    inputs.require_memory(8.0 * K * 8, f"categorical:K={K}", "use a smaller K")
    t = np.linspace(0.1, 0.9, K) if seed < 0 else np.random.default_rng(seed).random(K)
    return CategoricalObjective(target=t, name=f"categorical:K={K}" + (f",seed={seed}" if seed >= 0 else ""))

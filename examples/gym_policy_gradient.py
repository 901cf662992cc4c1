"""A policy-gradient loop written only against the Gymnasium API, checked against pgbench.

The agent (tabular softmax, REINFORCE with reward-to-go) never touches pgbench's internals: it
sees ``env.reset`` and ``env.step``. At each step of gradient ascent its gradient estimate is
compared with the exact gradient of its current policy: cosine, relative error, and the
largest coordinate's error in standard errors.

    python examples/gym_policy_gradient.py
"""
import numpy as np


def softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def reinforce_gradient(env, theta, n_episodes, gamma, rng):
    """Per-episode REINFORCE (reward-to-go) estimates from Gymnasium episodes: (n_episodes, S, A)."""
    out = np.zeros((n_episodes,) + theta.shape)
    for i in range(n_episodes):
        s, _ = env.reset(seed=int(rng.integers(2 ** 31)))
        traj = []
        done = False
        while not done:
            p = softmax(theta[s])
            a = int(rng.choice(len(p), p=p))
            s_next, r, terminated, truncated, _ = env.step(a)
            traj.append((s, a, r, p))
            s, done = s_next, terminated or truncated
        G = 0.0
        for t in range(len(traj) - 1, -1, -1):
            s_t, a_t, r_t, p_t = traj[t]
            G = r_t + gamma * G
            score = -p_t
            score[a_t] += 1.0
            out[i, s_t] += gamma ** t * G * score
    return out


def train(problem="garnet:S=4,A=2,b=2,seed=3,gamma=0.9,horizon=6", steps=3, n_episodes=2000, lr=0.5, seed=0):
    import pgbench
    import pgbench.envs
    prob = pgbench.make(problem)
    env = pgbench.envs.make(prob)
    rng = np.random.default_rng(seed)
    theta = np.zeros((env.observation_space.n, env.action_space.n))
    rows = []
    for step in range(steps):
        per_episode = reinforce_gradient(env, theta, n_episodes, prob.mdp.gamma, rng)
        g_hat = per_episode.mean(axis=0)
        se = per_episode.std(axis=0, ddof=1) / np.sqrt(n_episodes)
        g = pgbench.exact(prob, theta).grad
        cos = float((g_hat * g).sum() / (np.linalg.norm(g_hat) * np.linalg.norm(g)))
        rel = float(np.linalg.norm(g_hat - g) / np.linalg.norm(g))
        z = np.abs(g_hat - g) / np.where(se > 0, se, np.inf)
        rows.append({"step": step, "J": pgbench.exact(prob, theta).J, "cosine": cos, "rel_error": rel,
                     "max_z": float(z.max()), "g_hat": g_hat, "g": g, "se": se})
        theta = theta + lr * g_hat
    return rows


if __name__ == "__main__":
    for r in train():
        print(f"step {r['step']}: J = {r['J']:.4f}, cosine = {r['cosine']:.4f}, relative error = {r['rel_error']:.3f}, "
              f"largest error = {r['max_z']:.2f} standard errors")

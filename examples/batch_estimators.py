"""Two estimators written in plain NumPy, as an RL library would write them.

    pgbench measure garnet -N 16 -K 400 -e reinforce_rtg -e np_rtg -e np_ppo_normalized --import examples/batch_estimators.py

``np_rtg`` reimplements the built-in ``reinforce_rtg`` (same episodes, same estimates up to
rounding); ``np_ppo_normalized`` is the advantage PPO implementations feed their loss: GAE
with the exact critic, no gamma^t, normalised over the batch's steps (biased, by design).
"""
import numpy as np

from pgbench.estimators import register_batch_estimator


@register_batch_estimator("np_rtg", unbiased=True, doc="reward-to-go in NumPy")
def np_rtg(batch):
    return batch.discount() * batch.reward_to_go()


@register_batch_estimator("np_ppo_normalized", unbiased=False, doc="PPO's normalised GAE advantage, no gamma^t")
def np_ppo_normalized(batch, lam=0.95):
    v, _ = batch.values()  # V(s_t) along the episodes, (N, T+1); 0 off the episode
    v = np.where(batch.terminated[:, None] & (np.arange(v.shape[1]) == batch.lengths[:, None]), 0.0, v)
    delta = batch.rewards + batch.gamma * v[:, 1:] - v[:, :-1]
    adv = np.zeros_like(delta)
    acc = np.zeros(batch.N)
    for t in range(delta.shape[1] - 1, -1, -1):
        acc = np.where(batch.mask[:, t], delta[:, t] + batch.gamma * lam * acc, 0.0)
        adv[:, t] = acc
    steps = adv[batch.mask]
    return np.where(batch.mask, (adv - steps.mean()) / (steps.std() + 1e-8), 0.0)

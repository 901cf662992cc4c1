"""tianshou's numba GAE measured by pgbench: ``pip install tianshou`` (it pulls torch).

    pgbench measure garnet:S=10,A=3,b=3,seed=1,horizon=20 -N 16 -K 200 -e gae -e tianshou_gae --import examples/tianshou_gae.py

The glue is the function below: tianshou's ``_gae`` runs over one flat buffer of steps,
so the padded episodes go in row after row, with ``end_flag`` on each episode's last step and on
the padding (it cuts the recursion there). ``V(s_(t+1))`` is 0 at terminal states and after a
finite horizon, and bootstraps when the sampling cap cut the episode, as the built-in ``gae`` does
(and as tianshou's ``value_mask`` does: only ``terminated`` zeroes the next value).
"""
import numpy as np
from tianshou.algorithm.algorithm_base import _gae  # tianshou 2.x (1.x: tianshou.policy.base._gae_return)

from pgbench.estimators import register_batch_estimator


@register_batch_estimator("tianshou_gae", unbiased=True, replace=True, doc="tianshou GAE(0.95), exact critic, gamma^t")
def tianshou_gae(batch, lam=0.95):
    v, _ = batch.values()  # V(s_t), (N, T+1), 0 off the episode (and at terminal states)
    end = ~np.concatenate([batch.mask[:, 1:], np.zeros((batch.N, 1), bool)], axis=1)
    adv = _gae(v[:, :-1].ravel(), v[:, 1:].ravel(), batch.rewards.ravel(), end.ravel(), batch.gamma, lam)
    return np.where(batch.mask, batch.discount() * adv.reshape(end.shape), 0.0)

"""rlax's GAE (DeepMind's JAX RL library) measured by pgbench: ``pip install rlax``.

    pgbench measure garnet:S=10,A=3,b=3,seed=1,horizon=20 -N 16 -K 200 -e gae -e rlax_gae --import examples/rlax_gae.py

The glue is the function below: V along the episodes from the exact critic, rlax's advantage
per episode (vmapped), and the ``gamma^t`` weight of the policy-gradient theorem.
"""
import jax
import numpy as np
import rlax

from pgbench.estimators import register_batch_estimator

jax.config.update("jax_enable_x64", True)  # pgbench compares in double precision
_gae = jax.jit(jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(0, 0, None, 0)))


@register_batch_estimator("rlax_gae", unbiased=True, replace=True, doc="rlax GAE(0.95), exact critic, gamma^t")
def rlax_gae(batch, lam=0.95):
    v, _ = batch.values()  # V(s_t), (N, T+1), 0 off the episode (and at terminal states)
    discount = np.where(batch.mask, batch.gamma, 0.0)
    adv = _gae(batch.rewards, discount, lam, v)
    return batch.discount() * np.asarray(adv)

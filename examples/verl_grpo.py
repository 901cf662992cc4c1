"""verl's GRPO advantage function (``compute_grpo_outcome_advantage``) measured by pgbench.

    pgbench measure tokens:V=3,L=4,prompts=2,reward=length -N 8 -G 4 -K 2000 \\
        -e grpo -e verl_grpo -e dr_grpo -e verl_dr_grpo --import examples/verl_grpo.py

Needs verl (and so torch). The adapter builds verl's inputs from a pgbench batch as a verl
trainer would: the outcome reward of each sequence at its last token of ``token_level_rewards``
(N, T), ``response_mask`` from ``batch.mask``, and ``index`` from ``batch.group`` (the episodes of
a group share a prompt). verl returns one advantage per token; verl's policy loss then averages
the per-token terms. pgbench turns per-token weights psi into the estimate
``(1/N) sum_i sum_t psi[i, t] grad log pi(a_t|s_t)``, so the loss aggregation becomes a division:

- ``verl_grpo``: ``norm_adv_by_std_in_grpo=True`` with ``loss_agg_mode="seq-mean-token-mean"``
  (each sequence's token mean, then the mean over sequences): psi = A / n_i. This is pgbench's
  ``grpo`` (group std with Bessel's correction as ``torch.std``, eps = 1e-6).
- ``verl_dr_grpo``: ``norm_adv_by_std_in_grpo=False`` with ``"seq-mean-token-sum-norm"`` (token
  sums divided by the maximum response length L): psi = A / L. This is pgbench's ``dr_grpo``.

Both reproduce the built-ins trial by trial (tests/test_verl_adapter.py).
"""
import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from pgbench.estimators import register_batch_estimator

EPS = 1e-6  # verl's default epsilon, pgbench's default eps


def verl_advantages(batch, norm_adv_by_std_in_grpo=True):
    """verl's per-token advantages (N, T) as a NumPy array, for one pgbench batch."""
    if batch.group is None:
        raise ValueError("verl's GRPO advantage needs grouped sampling (--group G)")
    mask = batch.mask
    N, T = mask.shape
    lengths = np.asarray(batch.lengths)
    outcome = np.zeros((N, T))
    outcome[np.arange(N), np.maximum(lengths - 1, 0)] = batch.rewards.sum(axis=1)  # reward at the last token
    adv, _returns = compute_grpo_outcome_advantage(
        token_level_rewards=torch.from_numpy(outcome),
        response_mask=torch.from_numpy(mask.astype(np.float64)),
        index=np.array(batch.group),
        epsilon=EPS,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
    )
    return adv.numpy()


@register_batch_estimator("verl_grpo", unbiased=False, doc="verl's compute_grpo_outcome_advantage, "
                          "seq-mean-token-mean loss aggregation")
def verl_grpo(batch):
    adv = verl_advantages(batch, norm_adv_by_std_in_grpo=True)
    n = np.maximum(np.asarray(batch.lengths), 1)
    return np.where(batch.mask, adv / n[:, None], 0.0)


@register_batch_estimator("verl_dr_grpo", unbiased=False, doc="verl's compute_grpo_outcome_advantage without "
                          "std scaling (Dr. GRPO), seq-mean-token-sum-norm loss aggregation")
def verl_dr_grpo(batch):
    adv = verl_advantages(batch, norm_adv_by_std_in_grpo=False)
    return np.where(batch.mask, adv / batch.horizon, 0.0)

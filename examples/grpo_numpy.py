"""GRPO and DAPO written in plain NumPy over groups, as LLM training libraries write them.

    pgbench measure tokens:V=3,L=4,prompts=2,reward=length -N 8 -G 4 -K 2000 \\
        -e grpo -e np_grpo -e dapo:beta=0.1,kl=k3,kl_in=loss -e np_dapo_k3 --import examples/grpo_numpy.py

An outcome reward per sequence (the episode's return), advantages normalised within each group
(``batch.group`` says which episodes share a prompt), a per-token loss aggregated per sequence
(GRPO) or over all tokens of the batch (DAPO), and DAPO's k3 KL penalty to the reference policy
(``batch.log_pi_ref``). pgbench turns the per-token weights psi into the gradient estimate
``(1/N) sum_i sum_t psi[i, t] grad log pi(a_t|s_t)``: ``np_grpo`` reproduces the built-in ``grpo``
and ``np_dapo_k3`` the built-in ``dapo:beta=0.1,kl=k3,kl_in=loss``, trial by trial, so adapting
this file to your own advantage function tells you whether yours computes what you think it does.
"""
import numpy as np

from pgbench.estimators import register_batch_estimator

EPS = 1e-6


def group_advantages(scores, group, eps=EPS, ddof=1):
    """(score - group mean) / (group std + eps), the std with Bessel's correction as torch.std."""
    adv = np.zeros_like(scores)
    for g in np.unique(group):
        idx = group == g
        s = scores[idx]
        adv[idx] = (s - s.mean()) / (s.std(ddof=ddof) + eps)
    return adv


@register_batch_estimator("np_grpo", unbiased=False, doc="GRPO in NumPy: group-normalised advantage, "
                          "per-sequence token mean")
def np_grpo(batch):
    scores = batch.rewards.sum(axis=1)  # the outcome reward of each sequence
    adv = group_advantages(scores, batch.group)
    mask = batch.mask
    lengths = mask.sum(axis=1)
    return np.where(mask, (adv / lengths)[:, None], 0.0)


@register_batch_estimator("np_dapo_k3", unbiased=False, doc="DAPO in NumPy with a k3 KL penalty in the loss, "
                          "beta = 0.1")
def np_dapo_k3(batch, beta=0.1):
    scores = batch.rewards.sum(axis=1)
    adv = group_advantages(scores, batch.group)
    mask = batch.mask
    s = np.maximum(batch.states[:, :-1], 0)
    a = np.maximum(batch.actions, 0)
    log_ratio = np.log(batch.pi[s, a]) - batch.log_pi_ref[s, a]  # l_t at the sampled tokens
    # d/dlog pi of k3 = exp(-l) - 1 + l is 1 - exp(-l)
    per_token = adv[:, None] - beta * (1.0 - np.exp(-log_ratio))
    return np.where(mask, per_token * batch.N / mask.sum(), 0.0)

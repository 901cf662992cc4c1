"""The group estimators of LLM reinforcement learning (GRPO, Dr. GRPO, DAPO, REINFORCE++, RLOO).

A batch of N = P G episodes in P groups of G (one prompt per group). With ``R_i`` the episode's
return (gamma = 1), ``n_i`` its number of steps (tokens), ``z_i = sum_t grad log pi(a_t|s_t)``:

- ``adv``: ``none`` A_i = R_i; ``mean`` R_i - the group mean; ``loo`` R_i - the mean of the other
  G - 1 returns of the group; ``mean_std`` (R_i - mean) / (std(ddof) + eps) within the group;
  ``mean_batchstd`` centred in the group, divided by the std over the batch of the centred returns (+ eps);
- ``agg``: ``seq-mean-token-sum`` (1/N) sum_i A_i z_i; ``seq-mean-token-mean`` (1/N) sum_i A_i z_i / n_i;
  ``token-mean`` sum_i A_i z_i / sum_i n_i; ``seq-mean-token-sum-norm`` (1/N) sum_i A_i z_i / L;
- a KL penalty to the reference policy, ``l_t = log pi(a_t|s_t) - log pi_ref(a_t|s_t)``:
  ``kl_in=reward`` (k1 only): R_i - beta sum_t l_t before the advantages; ``kl_in=loss``: the
  gradient of -beta k(l_t) at every sampled token, aggregated like the main term, with
  k1 = l, k2 = l^2 / 2, k3 = exp(-l) - 1 + l.

The target is grad J with beta = 0, else the gradient of ``J_beta = E[sum_t r_t] - beta E[sum_t l_t]``.
Claimed unbiased: adv none or loo with agg seq-mean-token-sum, and a KL only as k1 in the reward.
"""
from __future__ import annotations

from pgbench.errors import PGBenchError

GROUP_CODE = -4
ADVS = ("none", "mean", "loo", "mean_std", "mean_batchstd")
AGGS = ("seq-mean-token-sum", "seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
KLS = ("k1", "k2", "k3")
KL_INS = ("reward", "loss")
# kernel codes: the index in ADVS / AGGS; KL 0 = none, 1 + index in KLS
ADV_NONE, ADV_MEAN, ADV_LOO, ADV_MEAN_STD, ADV_MEAN_BATCHSTD = range(5)
AGG_SEQ_SUM, AGG_SEQ_MEAN, AGG_TOKEN_MEAN, AGG_SEQ_SUM_NORM = range(4)
KL_NONE, KL_K1, KL_K2, KL_K3 = range(4)

BASE = {"adv": "mean", "agg": "seq-mean-token-sum", "ddof": 1, "eps": 1e-6, "kl": "k1", "kl_in": "reward",
        "beta": 0.0}
ALIASES = {
    "group": ({}, "group-relative advantages over the episodes of each group, aggregated over tokens"),
    "grpo": ({"adv": "mean_std", "agg": "seq-mean-token-mean"},
             "GRPO: (R - group mean) / (group std + eps), per-sequence token mean"),
    "dr_grpo": ({"adv": "mean", "agg": "seq-mean-token-sum-norm"},
                "Dr. GRPO: R - group mean, token sum divided by the maximum length L"),
    "dapo": ({"adv": "mean_std", "agg": "token-mean"}, "DAPO: GRPO's advantage, mean over all tokens of the batch"),
    "reinforce_pp": ({"adv": "mean_batchstd", "agg": "token-mean"},
                     "REINFORCE++: R - group mean over the batch std, mean over all tokens of the batch"),
}
# built-in names that keep their meaning on grouped batches, as members of the family
GROUPED = {"rloo": {"adv": "loo", "agg": "seq-mean-token-sum"},
           "reinforce": {"adv": "none", "agg": "seq-mean-token-sum"}}


def defaults(name: str) -> dict:
    over = ALIASES[name][0] if name in ALIASES else GROUPED[name]
    return {**BASE, **over}


def is_group(spec) -> bool:
    return getattr(spec.info, "code", None) == GROUP_CODE


def validate(name: str, p: dict) -> None:
    for key, known in (("adv", ADVS), ("agg", AGGS), ("kl", KLS), ("kl_in", KL_INS)):
        if p[key] not in known:
            raise PGBenchError(f"unknown {key} {p[key]!r} for estimator {name}; known: {', '.join(known)}")
    if not p["beta"] >= 0:
        raise PGBenchError(f"beta of estimator {name} must be non-negative; got {p['beta']}")
    if not p["eps"] >= 0:
        raise PGBenchError(f"eps of estimator {name} must be non-negative; got {p['eps']}")
    if p["ddof"] not in (0, 1):
        raise PGBenchError(f"ddof of estimator {name} must be 0 or 1; got {p['ddof']}")
    if p["beta"] > 0 and p["kl_in"] == "reward" and p["kl"] != "k1":
        raise PGBenchError(f"estimator {name}: a KL in the reward is k1 only (the per-token log ratio); "
                           f"got kl={p['kl']} (use kl_in=loss for k2 or k3)")


def claimed_unbiased(p: dict) -> bool:
    """Unbiased for grad J_beta: adv none or loo, agg seq-mean-token-sum, any KL only as k1 in the reward."""
    return (p["adv"] in ("none", "loo") and p["agg"] == "seq-mean-token-sum"
            and (p["beta"] == 0 or (p["kl"] == "k1" and p["kl_in"] == "reward")))


def check_group(spec, G: int, gamma: float, problem_name: str, has_ref: bool) -> None:
    """One-line errors for a family member on groups of G."""
    p = spec.p
    if gamma != 1.0:
        raise PGBenchError(f"estimator {spec.label} needs gamma = 1 (a sequence problem); problem {problem_name} "
                           f"has gamma={gamma}")
    if G < 2 and p["adv"] == "loo":
        raise PGBenchError(f"estimator {spec.label}: a leave-one-out advantage needs groups of G >= 2; got G={G}")
    if G < 2 and p["adv"] == "mean_std" and p["ddof"] == 1:
        raise PGBenchError(f"estimator {spec.label}: the group std with ddof=1 needs G >= 2; got G={G}")
    if p["beta"] > 0 and not has_ref:
        raise PGBenchError(f"estimator {spec.label} has beta={p['beta']} but problem {problem_name} has no "
                           f"reference policy (theta_ref)")


def codes(p: dict) -> tuple:
    """Kernel codes (adv, agg, kl, kl_in_reward) of the parameters."""
    kl = KL_NONE if p["beta"] == 0 else 1 + KLS.index(p["kl"])
    return ADVS.index(p["adv"]), AGGS.index(p["agg"]), kl, p["beta"] > 0 and p["kl_in"] == "reward"

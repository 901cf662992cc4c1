"""Benchmark suites declared as data (bsuite-style): ids like ``baselines/garnet-20``.

A suite is a problem (and theta), a list of estimators, a list of batch sizes and a number of
trials. Sparse-reward problems (chain, gridworld, FrozenLake) get more trials: their per-trial
estimates are skewed, and the unbiasedness test needs the K N episodes to make the mean normal. Each batch size is one *cell*: every estimator of the suite runs on the same episodes
there. ``quick`` variants keep a few cells with fewer trials (the CI subset).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pgbench.errors import PGBenchError


@dataclass(frozen=True)
class Learning:
    """A learning-dynamics suite's runs (:func:`pgbench.dynamics.train`): the suite's batch size is N,
    its trials the runs R; ``quick_steps`` (0: ``steps``) for the quick subset."""
    optimizer: str
    lr: float
    steps: int
    stuck_below: Optional[float] = None
    quick_steps: int = 0
    nsr_points: int = 20


@dataclass(frozen=True)
class Suite:
    id: str
    problem: str
    estimators: tuple
    batch_sizes: tuple
    trials: int
    tags: tuple = ()
    theta: Optional[str] = None  # None (the problem's), "zeros" or "random:SEED"
    description: str = ""
    proxy: bool = False
    quick_batch_sizes: tuple = ()
    quick_trials: int = 0
    figures: tuple = field(default=())  # report figures this suite feeds
    groups: int = 0  # > 0: grouped sampling with this many groups P per batch; the cells are group sizes G (N = P G)
    quick_skip: bool = False  # no cell in the quick subset (its family is represented there by another suite)
    train: Optional[Learning] = None  # a learning-dynamics suite (runs, not trials of one cell)

    def cells(self, quick: bool = False) -> list[int]:
        """Batch sizes N, or for a grouped suite (``groups`` > 0) group sizes G."""
        if quick and self.quick_skip:
            return []
        return list(self.quick_batch_sizes if quick and self.quick_batch_sizes else self.batch_sizes)

    def cell_shape(self, value: int) -> tuple[int, Optional[int]]:
        """``(N, G)`` of the cell ``value``: (N, None) for an ungrouped suite, (P G, G) for a grouped one."""
        return (self.groups * value, value) if self.groups else (value, None)

    def n_trials(self, quick: bool = False) -> int:
        return self.quick_trials if quick and self.quick_trials else self.trials


BASELINES = ("reinforce", "const_baseline:b=1.0", "batch_mean_baseline", "rloo", "w_baseline", "w_baseline_loo",
             "score_norm_baseline", "optimal_const_baseline", "value_baseline")
GAE_SWEEP = tuple(f"gae:lambda={lam},critic={c}" + (",scale=0.3" if c == "perturbed" else "")
                  for c in ("exact", "perturbed") for lam in (0.0, 0.5, 0.8, 0.9, 0.95, 1.0))

# Linear-Gaussian control: score function against pathwise as the horizon grows and as sigma shrinks.
# One suite per horizon (or sigma), so each is its own problem; the family's last suite draws the
# family figure (log variance against T, or against sigma) from every suite of the family in the run.
CONTROL_ESTIMATORS = ("reinforce", "reinforce_rtg", "value_baseline", "svg0", "svg_inf", "mppi:lambda=10.0")
CONTROL_HORIZONS = (5, 10, 20, 50, 100, 200)
CONTROL_SIGMAS = (1.0, 0.3, 0.1, 0.03)
CONTROL_SUITES = [
    *[Suite(f"control/horizon/T={T}", f"double_integrator:T={T},gamma=0.99", CONTROL_ESTIMATORS, (16,), 400,
            tags=("control", "pathwise", "horizon"),
            description=f"Double integrator, T = {T}, sigma = 0.5: score-function estimators against the pathwise "
                        "SVG(inf) and SVG(0) gradients and MPPI-style weighting, as the horizon grows.",
            quick_trials=50, figures=("variance_vs_T",) if T == CONTROL_HORIZONS[-1] else ())
      for T in CONTROL_HORIZONS],
    *[Suite(f"control/sigma/sigma={sg}", f"double_integrator:T=50,gamma=0.99,sigma={sg}", CONTROL_ESTIMATORS, (16,),
            400, tags=("control", "pathwise", "sigma"),
            description=f"Double integrator, T = 50, sigma = {sg}: the score grows as 1/sigma, the pathwise "
                        "gradient does not.",
            quick_trials=50, figures=("variance_vs_sigma",) if sg == CONTROL_SIGMAS[-1] else ())
      for sg in CONTROL_SIGMAS],
]

SUITES = {s.id: s for s in [
    Suite("ladder/three-step-bandit", "three_step_bandit", ("reinforce", "reinforce_rtg", "value_baseline", "rloo"),
          (1, 2, 4, 16, 64, 256, 1024), 400, tags=("variance", "ladder", "1/N"),
          description="Full return > reward-to-go > baseline, and variance falling as 1/N.",
          quick_batch_sizes=(1, 16, 256), quick_trials=100, figures=("variance_vs_N", "bias_variance")),
    Suite("baselines/garnet-20", "garnet:S=20,A=4,b=3,seed=0,horizon=20", BASELINES + ("reinforce_rtg",), (4, 16, 64), 200,
          tags=("baselines",), theta="random:1", proxy=True,
          description="Constant, batch-mean, leave-one-out, W-weighted, score-norm, value and optimal baselines.",
          quick_batch_sizes=(16,), quick_trials=60, figures=("bias_variance", "efficiency", "proxy")),
    Suite("baselines/chain-6", "chain:n=6,gamma=0.9", BASELINES + ("reinforce_rtg",), (4, 16, 64), 1000,
          tags=("baselines",), theta="random:2", proxy=True,
          description="Baselines on a RiverSwim chain (sparse, delayed reward).",
          quick_batch_sizes=(16,), quick_trials=400, figures=("bias_variance", "efficiency")),
    Suite("baselines/gridworld-4", "gridworld:n=4,slip=0.1,gamma=0.9", BASELINES + ("reinforce_rtg",), (4, 16, 64), 1000,
          tags=("baselines", "terminal"), theta="random:3", proxy=True,
          description="Baselines on a slippery gridworld with a terminal goal.",
          quick_batch_sizes=(16,), quick_trials=400, figures=("bias_variance", "efficiency")),
    Suite("gae/garnet-10", "garnet:S=10,A=3,b=3,seed=1,horizon=20", GAE_SWEEP + ("reinforce_rtg", "td0:critic=fitted",
          "gae:lambda=0.9,critic=fitted"), (16,), 300, tags=("gae", "critic"), theta="random:4",
          description="GAE lambda sweep with the exact critic (unbiased for every lambda) and a perturbed one "
                      "(bias shrinking as lambda -> 1, variance growing).",
          quick_trials=80, figures=("gae_lambda", "variance_decomposition")),
    Suite("discount/chain-6", "chain:n=6,gamma=0.8", ("reinforce_rtg", "rtg_no_gamma_t", "geometric_termination"),
          (16, 64), 1000, tags=("discount", "bias"), theta="random:5",
          description="Dropping gamma^t (common practice) is biased (Thomas 2014); geometric termination is not.",
          quick_batch_sizes=(16,), quick_trials=400, figures=("bias_variance",)),
    Suite("objectives/gaussian-toy", "gaussian_toy", ("naive", "score_function", "reparameterization"),
          (1, 10, 100), 400, tags=("objective", "reparameterization"),
          description="x ~ N(theta, 1), f = x^2 theta at theta = 1: naive's mean is 2 (bias -2), the truth 4.",
          quick_batch_sizes=(10,), quick_trials=100, figures=("bias_variance", "variance_vs_N")),
    Suite("objectives/gumbel-temperature", "categorical:K=4", ("score_function", "rloo", "straight_through",
          "gumbel_softmax:tau=0.1", "gumbel_softmax:tau=0.5", "gumbel_softmax:tau=1.0", "gumbel_softmax:tau=2.0",
          "gumbel_softmax:tau=5.0"), (16,), 400, tags=("objective", "relaxation"), theta="random:6",
          description="Gumbel-softmax: low temperature, little bias and much variance; high temperature, the reverse.",
          quick_trials=100, figures=("bias_variance",)),
    Suite("natural/garnet-8", "garnet:S=8,A=3,b=2,seed=2,horizon=15", ("reinforce_rtg", "natural",
          "natural:base=true_advantage", "true_advantage"), (16, 64, 256), 200, tags=("natural",), theta="random:7",
          description="Natural gradient F_hat^+ g_hat from one batch: biased (a ratio), the bias shrinking with N.",
          quick_batch_sizes=(64,), quick_trials=60, figures=("bias_variance",)),
    Suite("entropy/garnet-8", "garnet:S=8,A=3,b=2,seed=3,horizon=15", ("entropy_bonus:beta=0.0",
          "entropy_bonus:beta=0.1", "entropy_bonus:beta=1.0"), (16,), 200, tags=("entropy",), theta="random:8",
          description="Entropy-regularised gradient grad J_beta, each measured against its own exact value.",
          quick_trials=60, figures=("bias_variance",)),
    Suite("oracles/frozen-lake", "frozen_lake", ("reinforce_rtg", "value_baseline", "true_advantage", "all_action",
          "time_baseline_loo", "importance_sampling:mu=mix,eps=0.3", "importance_sampling:mu=mix,eps=0.3,weighted=1"),
          (16, 64), 1000, tags=("oracle", "terminal"), theta="random:9",
          description="Oracle baselines and critics, importance sampling, on FrozenLake 4x4.",
          quick_batch_sizes=(16,), quick_trials=400, figures=("bias_variance", "efficiency")),
    Suite("calibration/three-step-bandit", "three_step_bandit", ("reinforce", "reinforce_rtg", "value_baseline",
          "rloo", "batch_mean_baseline", "optimal_const_baseline"), (2, 3, 8), 2000, tags=("calibration", "exact"),
          description="Measured variance and MSE beside the exact values by trajectory enumeration (every batch of "
                      "2 or 3 episodes for the in-batch baselines); batch_mean_baseline at N has bias exactly -grad/N.",
          quick_batch_sizes=(2,), quick_trials=400, figures=("variance_vs_N", "bias_variance")),
    Suite("calibration/garnet-4", "garnet:S=4,A=3,b=2,seed=0,horizon=4,noise=0.3",
          ("reinforce", "reinforce_rtg", "rtg_no_gamma_t", "value_baseline", "gae:lambda=0.9", "td0",
           "geometric_termination", "importance_sampling:mu=mix,eps=0.3", "entropy_bonus:beta=0.1"), (4, 16), 1000,
          tags=("calibration", "exact"), theta="random:1",
          description="Per-episode estimators on a small noisy garnet (5184 trajectories): measured against exact "
                      "variance and MSE; rtg_no_gamma_t's exact bias is its only error beyond noise.",
          quick_batch_sizes=(16,), quick_trials=200, figures=("bias_variance",)),
] + CONTROL_SUITES}

# Variance against the horizon T and the discount gamma (the figure every policy-gradient paper
# draws): one suite per T or gamma on the same small garnet, one cell (N = 16) each, drawn together
# by the report's "horizon" figure. Exact variances come from the moment DP at every T and gamma
# (the unbounded ones to the sampling cap).
HORIZON_ESTIMATORS = ("reinforce", "reinforce_rtg", "value_baseline", "gae:lambda=0.95")
HORIZON_PROBLEM = "garnet:S=4,A=2,b=2,seed=3"
HORIZONS = (2, 4, 8, 16, 32)
GAMMAS = (0.5, 0.8, 0.9, 0.95, 0.99)
for _T in HORIZONS:
    SUITES[f"horizon/T={_T}"] = Suite(
        f"horizon/T={_T}", f"{HORIZON_PROBLEM},gamma=1.0,horizon={_T}", HORIZON_ESTIMATORS, (16,), 300,
        tags=("horizon",), theta="random:10", quick_trials=60, figures=("horizon",),
        description=f"Variance against the horizon: T = {_T}, undiscounted (gamma = 1). The full return's "
                    "variance grows fastest with T, reward-to-go's slower, the value baseline's and GAE's least.")
for _g in GAMMAS:
    SUITES[f"horizon/gamma={_g}"] = Suite(
        f"horizon/gamma={_g}", f"{HORIZON_PROBLEM},gamma={_g}", HORIZON_ESTIMATORS, (16,), 300,
        tags=("horizon",), theta="random:10", quick_trials=60, figures=("horizon",),
        description=f"Variance against the discount: gamma = {_g}, unbounded horizon (effective horizon "
                    f"1/(1 - gamma) = {1 / (1 - _g):.3g}), sampled to the cap where gamma^t < 1e-10.")

PRACTICE = ("reinforce_rtg", "gae:lambda=0.95", "ppo_gae:lambda=0.95", "normalized_advantage", "gpomdp_baseline")
SUITES.update({s.id: s for s in [
    Suite(f"practice/{pid}", spec, PRACTICE, (16,), 400, tags=("practice", "bias"), theta=theta,
          description="Advantages as PPO implementations use them (GAE without gamma^t, normalised over the batch) "
                      "against the exact gradient, beside GAE and a G(PO)MDP per-coordinate baseline; "
                      "the exact bias norm is ppo_gae's closed form (0 for gpomdp_baseline). " + note,
          quick_trials=100, figures=("bias_variance",))
    for pid, spec, theta, note in [
        ("garnet-10", "garnet:S=10,A=3,b=3,seed=1,gamma=0.9", "random:11", "Discounted, the cap far away."),
        ("chain-6", "chain:n=6,gamma=0.95", "random:12",
         "Dropping gamma^t is catastrophic here: no state is terminal, every step up to the sampling cap counts alike."),
        ("gridworld-4", "gridworld:n=4,slip=0.1,gamma=0.9", "random:13", "A terminal goal ends most episodes."),
    ]]})

# The estimators of LLM reinforcement learning on sequence problems (token trees), the cells being
# group sizes G with P groups (prompts drawn) per batch; exact bias, scale and direction per estimator.
# Their figures (exact scale and cosine against G, length bias) are the report's LLM section
# (pgbench.reports.llm), drawn from every llm/ cell of a run.
LLM_ESTIMATORS = ("reinforce", "rloo", "group:adv=mean", "grpo", "grpo:ddof=0", "dr_grpo", "dapo", "reinforce_pp",
                  "group:adv=mean,agg=seq-mean-token-mean")
LLM_KL = ("group:adv=loo,beta=0.5", "group:adv=loo,beta=0.5,kl_in=loss", "group:adv=loo,beta=0.5,kl=k2,kl_in=loss",
          "group:adv=loo,beta=0.5,kl=k3,kl_in=loss", "grpo:beta=0.5,kl=k3,kl_in=loss")
LLM_G = (2, 4, 8, 16)
SUITES.update({s.id: s for s in [
    Suite(f"llm/{sid}", spec, ests, LLM_G, 2000, tags=("llm", "groups", "bias"), groups=P,
          description=text, quick_batch_sizes=(4,) if quick else (), quick_trials=200 if quick else 0,
          quick_skip=not quick)
    for sid, spec, ests, P, quick, text in [
        ("verifier-1p", "tokens:V=3,L=4,prompts=1,reward=verifier,seed=0", LLM_ESTIMATORS, 1, True,
         "One prompt, a 0/1 verifier: mean-centring scales the gradient by 1 - 1/G, Dr. GRPO by (1 - 1/G)/L; "
         "std normalisation and per-sequence token means also turn it."),
        ("verifier-4p", "tokens:V=3,L=4,prompts=4,reward=verifier,seed=1", LLM_ESTIMATORS, 4, False,
         "Four prompts of different difficulty, four groups a batch: GRPO's std normalisation reweights the "
         "prompts (difficulty bias)."),
        ("graded-2p", "tokens:V=3,L=4,prompts=2,reward=graded,seed=2", LLM_ESTIMATORS, 2, False,
         "Graded rewards in [0, 1], two prompts."),
        ("length-1p", "tokens:V=3,L=4,prompts=1,reward=length,seed=3", LLM_ESTIMATORS, 1, True,
         "Correctness more likely for longer sequences: per-sequence token means down-weight long correct "
         "sequences (length bias)."),
        ("length-4p", "tokens:V=3,L=4,prompts=4,reward=length,seed=4", LLM_ESTIMATORS, 4, False,
         "Length reward, four prompts and groups."),
        ("kl-2p", "tokens:V=3,L=4,prompts=2,reward=verifier,seed=5", ("rloo",) + LLM_KL, 2, False,
         "KL to the reference (uniform) policy at beta = 0.5: k1 in the reward is unbiased for grad J_beta; k1, "
         "k2 and k3 in the loss are not."),
        ("bigram-1p", "tokens:V=3,L=4,prompts=1,reward=length,seed=6,policy=bigram", LLM_ESTIMATORS, 1, False,
         "A bigram policy (logits shared across prefixes by the last token), as in a tiny language model."),
    ]]})

# Learning dynamics (Chung et al. 2021): baselines of equal variance, very different fates under NPG
CHUNG_BASELINES = ("optimal_const_baseline:shift=-0.5", "optimal_const_baseline", "optimal_const_baseline:shift=0.5",
                   "value_baseline", "value_baseline:shift=-0.5", "value_baseline:shift=0.5", "const_baseline:b=0.0",
                   "const_baseline:b=1.0")
COMMITTAL_THETA = "-0.9946226703824351;0"  # log(0.27 / 0.73): p(best arm) = 0.27
LEARNING_PRACTICAL = ("reinforce", "reinforce_rtg", "rloo", "batch_mean_baseline")
SUITES.update({s.id: s for s in [
    Suite("dynamics/three-armed", "bandit:r=1;0.7;0,theta=0;3;5", CHUNG_BASELINES, (1,), 4000,
          tags=("dynamics",), quick_trials=200, train=Learning("npg", 0.025, 1000, stuck_below=0.75),
          description="Three arms (rewards 1, 0.7, 0), theta0 = (0, 3, 5), NPG with step 0.025 for 1000 updates of "
                      "one sample each: the perturbed baselines b* - 0.5 and V - 0.5 commit to a suboptimal arm "
                      "far more often than b* + 0.5 and V + 0.5 (stuck: final exact J <= 0.75)."),
    *[Suite(f"dynamics/committal/lr={lr}", f"bandit:r=1;0,theta={COMMITTAL_THETA}", ("const_baseline:b=-1.0",
            "optimal_const_baseline", "value_baseline"), (1,), 4000, tags=("dynamics",), quick_trials=400,
            quick_skip=lr != 0.1, train=Learning("npg", lr, 200, stuck_below=0.5),
            description=f"Two arms (rewards 1, 0), p(best) = 0.27 at the start, NPG with step {lr} for 200 updates: "
                        "the constant baseline -1 is committal (it reinforces whatever arm was drawn); stuck: "
                        "final exact J <= 0.5.")
      for lr in (0.05, 0.1, 0.15)],
    *[Suite(f"dynamics/{pid}-{opt}", spec, LEARNING_PRACTICAL, (16,), 200, tags=("dynamics",), quick_skip=True,
            train=Learning(opt, lr, 200, nsr_points=10),
            description=f"Practical estimators under {opt} (step {lr}), 200 updates of N = 16 episodes, 200 runs. "
                        + note)
      for pid, spec, note in [("garnet-20", "garnet:S=20,A=4,b=3,seed=0,horizon=50",
                               "Random MDP, 20 states, horizon 50."),
                              ("gridworld-4", "gridworld:n=4,slip=0.1,gamma=0.95",
                               "Sparse reward at a terminal goal.")]
      for opt, lr in (("sgd", 1.0), ("adam", 0.05))],
]})

DEFAULT_SUITES = tuple(SUITES)


def get_suite(sid: str) -> Suite:
    if sid not in SUITES:
        raise PGBenchError(f"unknown suite {sid!r}; known: {', '.join(SUITES)}")
    return SUITES[sid]


def select(ids=None, tags=None) -> list[Suite]:
    """Suites by id (a prefix like ``baselines`` selects a family) and/or tag."""
    if not ids:
        out = list(SUITES.values())
    else:
        out = []
        for sid in ids:
            hits = [s for s in SUITES.values() if s.id == sid or s.id.startswith(sid.rstrip("/") + "/")]
            if not hits:
                raise PGBenchError(f"unknown suite {sid!r}; known: {', '.join(SUITES)}")
            out += [h for h in hits if h not in out]
    if tags:
        out = [s for s in out if set(tags) & set(s.tags)]
    return out

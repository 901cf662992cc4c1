"""The estimator catalogue (the contract's :ref:`contract-estimators`): names, parameters, unbiasedness.

An estimator is a name with parameters, ``gae:lambda=0.9,critic=perturbed,scale=0.1``. Almost
every MDP estimator is a sum of per-step weights on scores,
``g_hat = (1/N) sum_i sum_t psi_t^i grad log pi(a_t|s_t)``, so an estimator here is its rule
for ``psi_t`` (implemented in :mod:`pgbench.kernels.mdp`); ``natural`` post-multiplies another
estimator by the batch Fisher's pseudo-inverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pgbench.errors import PGBenchError
from pgbench.estimators import groups
from pgbench.estimators.lqg import LQG_ESTIMATORS
from pgbench.estimators.objectives import OBJECTIVE_ESTIMATORS
from pgbench.estimators.registry import BATCH_CODE, BATCH_ESTIMATORS, USER_ESTIMATORS  # noqa: F401


# kernel codes for psi_t rules
REINFORCE, RTG, RTG_NO_GAMMA, CONST_B, BATCH_MEAN_B, RLOO, W_B, W_B_LOO, SCORE_NORM_B, OPT_CONST_B, \
    VALUE_B, TIME_B_LOO, TRUE_ADV, ALL_ACTION, GAE, GEOMETRIC, IS_PD, ENTROPY, FISHER = range(19)


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    doc: str
    unbiased: str  # "yes", "no", or a condition
    params: dict = field(default_factory=dict)  # name -> default (type of default is the type)
    target: str = "mdp"  # "mdp" or an objective kind
    code: int = -1
    in_batch: bool = False  # needs batch statistics (a first pass over the batch)
    required: tuple = ()
    oracle: str = ""  # the exact quantity it reads (V, Q, A, b*): not implementable outside pgbench


def _group_infos():
    """Catalogue entries of the family."""
    return [EstimatorInfo(n, doc, "yes iff adv=none|loo, agg=seq-mean-token-sum, any KL k1 in the reward",
                          groups.defaults(n), code=groups.GROUP_CODE, in_batch=True) for n, (_, doc) in groups.ALIASES.items()]


def grouped_spec(spec):
    """``rloo`` and ``reinforce`` on a grouped batch: the family member with the same meaning
    (leave-one-out within the group; the plain return), under the same label."""
    base = spec.info
    info = EstimatorInfo(base.name, base.doc + " (within groups)", "yes", groups.defaults(spec.name), code=groups.GROUP_CODE,
                         in_batch=True)
    return EstimatorSpec(info, tuple(sorted(groups.defaults(spec.name).items())))


MDP_ESTIMATORS = {e.name: e for e in [
    EstimatorInfo("reinforce", "R z: full discounted return times the trajectory score", "yes", code=REINFORCE),
    EstimatorInfo("reinforce_rtg", "sum_t gamma^t G_t grad log pi_t (reward-to-go)", "yes", code=RTG),
    EstimatorInfo("rtg_no_gamma_t", "sum_t G_t grad log pi_t, gamma^t dropped (common practice)",
                  "no (Thomas 2014)", code=RTG_NO_GAMMA),
    EstimatorInfo("const_baseline", "(R - b) z for a constant b", "yes", {"b": 0.0}, code=CONST_B, required=("b",)),
    EstimatorInfo("batch_mean_baseline", "(R - mean R) z, the batch mean including the episode itself",
                  "no, O(1/N)", code=BATCH_MEAN_B, in_batch=True),
    EstimatorInfo("rloo", "(R - mean of the other N-1 returns) z", "yes", code=RLOO, in_batch=True),
    EstimatorInfo("w_baseline", "(R - b_W) z, b_W = sum W R / sum W with W(tau) the logit-space score proxy",
                  "no (in-batch)", code=W_B, in_batch=True),
    EstimatorInfo("w_baseline_loo", "the W-weighted baseline, leave-one-out", "yes", code=W_B_LOO, in_batch=True),
    EstimatorInfo("score_norm_baseline", "as w_baseline with weights ||z||^2 (exact, cross terms kept)",
                  "no (in-batch)", code=SCORE_NORM_B, in_batch=True),
    EstimatorInfo("optimal_const_baseline", "(R - b* - shift) z, oracle b* = E[R ||z||^2] / E[||z||^2]", "yes",
                  {"shift": 0.0}, code=OPT_CONST_B, oracle="b*"),
    EstimatorInfo("value_baseline", "sum_t gamma^t (G_t - V_t(s_t) - shift) grad log pi_t, oracle V", "yes",
                  {"shift": 0.0}, code=VALUE_B, oracle="V"),
    EstimatorInfo("time_baseline_loo", "sum_t gamma^t (G_t - b_t) grad log pi_t, b_t the leave-one-out mean of G_t",
                  "yes", code=TIME_B_LOO, in_batch=True),
    EstimatorInfo("true_advantage", "sum_t gamma^t A_t(s_t, a_t) grad log pi_t, oracle A", "yes", code=TRUE_ADV,
                  oracle="A"),
    EstimatorInfo("all_action", "sum_t gamma^t sum_a grad pi(a|s_t) Q_t(s_t, a), oracle Q", "yes", code=ALL_ACTION,
                  oracle="Q"),
    EstimatorInfo("gae", "sum_t gamma^t A^GAE_t grad log pi_t (Schulman et al. 2016)",
                  "yes with critic=exact; no otherwise",
                  {"lambda": 0.95, "critic": "exact", "scale": 0.1, "seed": 0}, code=GAE, oracle="V"),
    EstimatorInfo("td0", "gae with lambda = 0 (one-step actor-critic)", "yes with critic=exact; no otherwise",
                  {"critic": "exact", "scale": 0.1, "seed": 0}, code=GAE, oracle="V"),
    EstimatorInfo("geometric_termination", "stop each step with probability 1 - gamma, undiscounted reward-to-go",
                  "yes", code=GEOMETRIC),
    EstimatorInfo("importance_sampling", "episodes from a behaviour policy mu, per-decision ratios",
                  "ordinary: yes; weighted: no", {"mu": "uniform", "eps": 0.5, "weighted": False}, code=IS_PD),
    EstimatorInfo("entropy_bonus", "estimate of grad J_beta: reward-to-go of r - beta log pi", "yes",
                  {"beta": 0.01}, code=ENTROPY),
    EstimatorInfo("natural", "F_hat^+ g_hat, Fisher and gradient from the same batch", "no (ratio)",
                  {"base": "reinforce_rtg"}),
    # common practice (pgbench.estimators.practice), run on the Python batch path
    EstimatorInfo("ppo_gae", "psi_t = A^GAE_t with the exact critic, no gamma^t (as PPO implementations use it)",
                  "no (gamma^t dropped)", {"lambda": 0.95}, code=BATCH_CODE, oracle="V"),
    EstimatorInfo("normalized_advantage", "the base's psi normalised over the batch's steps (mean 0, std 1)",
                  "no (batch normalisation)", {"base": "ppo_gae"}, code=BATCH_CODE, in_batch=True),
    EstimatorInfo("gpomdp_baseline", "sum_t gamma^t (r_t - b_t^k) c_t,k: G(PO)MDP with a per-coordinate, "
                  "time-dependent baseline, leave-one-out", "yes", code=BATCH_CODE, in_batch=True),
    # the group estimators of LLM reinforcement learning (pgbench.estimators.groups), on grouped batches
    *_group_infos(),
]}

CRITICS = ("exact", "perturbed", "fitted")

ESTIMATOR_CLASSES = ("practical", "oracle", "biased")
"""How reports group estimators. ``oracle``: reads an exact quantity of the problem (V, Q, A or
b*) that no agent has, so it is a reference, not a contender; ``biased``: biased by design
(its expectation is not what it estimates); ``practical``: everything else, unbiased and
implementable from sampled episodes alone."""


@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed estimator: its catalogue entry and resolved parameters."""

    info: EstimatorInfo
    params: tuple  # sorted (key, value) pairs

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def p(self) -> dict:
        return dict(self.params)

    @property
    def label(self) -> str:
        """Canonical id: the name with the parameters given that differ from defaults, in catalogue order."""
        given = self.p
        parts = [f"{k}={_fmt(given[k])}" for k in self.info.params if k in given and given[k] != self.info.params[k]]
        parts += [f"{k}={_fmt(v)}" for k, v in self.params if k not in self.info.params]
        return self.name + (":" + ",".join(parts) if parts else "")

    @property
    def unbiased(self) -> bool:
        """Whether the estimator is unbiased for its target *with these parameters*."""
        n, p = self.name, self.p
        if n in ("gae", "td0"):
            return p.get("critic", "exact") == "exact"
        if n == "importance_sampling":
            return not p.get("weighted", False)
        if n == "natural":
            return False
        if n == "svg0" and self.info.target == "lqg":
            return self.p.get("scale", 0.0) == 0.0
        if n == "user":
            return bool(p.get("unbiased", False))
        if self.info.code == -4:  # the group family (pgbench.estimators.groups)
            return groups.claimed_unbiased(p)
        return self.info.unbiased == "yes"

    @property
    def oracle(self) -> str:
        """The exact quantity this estimator reads (``V``, ``Q``, ``A``, ``b*``), or ``""``.
        GAE and TD(0) read the exact V with ``critic=exact`` and ``critic=perturbed`` (exact V plus
        a fixed error); ``critic=fitted`` learns its critic from the batch."""
        if self.name in ("gae", "td0") and self.p.get("critic") == "fitted":
            return ""
        if self.name == "natural":
            return self.base.oracle
        if self.name == "normalized_advantage":  # reads what its base reads
            return parse(str(self.p["base"])).oracle
        return self.info.oracle

    @property
    def estimator_class(self) -> str:
        """One of :data:`ESTIMATOR_CLASSES`: ``oracle`` before ``biased`` (an oracle estimator is a
        reference whatever its bias), then ``biased`` for what is not unbiased, else ``practical``."""
        if self.oracle:
            return "oracle"
        return "practical" if self.unbiased else "biased"

    @property
    def in_batch(self) -> bool:
        if self.name in ("gae", "td0"):
            return self.p.get("critic") == "fitted"
        if self.name == "importance_sampling":
            return bool(self.p.get("weighted"))
        if self.name == "natural":
            return self.base.in_batch
        return self.info.in_batch

    @property
    def base(self) -> "EstimatorSpec":
        """For ``natural``: the estimator whose output the Fisher pseudo-inverse multiplies (for
        ``normalized_advantage``: the estimator whose weights are normalised)."""
        return parse(self.p["base"])


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return repr(v) if isinstance(v, float) else str(v)


def _split_params(text: str, spec: str) -> dict:
    out = {}
    if not text.strip():
        return out
    # natural:base=gae:lambda=0.9 -> the base's own parameters ride after the first '='
    if text.startswith("base="):
        return {"base": text[5:]}
    for item in text.split(","):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise PGBenchError(f"malformed estimator parameter {item!r} in {spec!r}: expected key=value")
        out[key.strip()] = val.strip()
    return out


def parse(spec, kind: str = "mdp") -> EstimatorSpec:
    """``"gae:lambda=0.9,critic=perturbed,scale=0.1"`` -> an :class:`EstimatorSpec` (validated).

    ``kind`` is the problem kind (``mdp``, ``gaussian``, ``categorical``): a name such as
    ``rloo`` exists for MDPs and for categorical objectives.
    """
    if isinstance(spec, EstimatorSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise PGBenchError(f"an estimator must be a name like 'reinforce' or 'gae:lambda=0.9'; got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    if kind == "lqg" or name in _lqg_only_names():
        return _lqg_spec(name, _split_params(rest, spec), spec, kind)
    if kind != "mdp" and name in _objective_names():
        return _objective_spec(name, _split_params(rest, spec), spec)
    if name not in MDP_ESTIMATORS:
        if name in USER_ESTIMATORS:
            return USER_ESTIMATORS[name].spec(_split_params(rest, spec))
        if name in BATCH_ESTIMATORS:
            return BATCH_ESTIMATORS[name].spec(_split_params(rest, spec))
        objective_names = _objective_names()
        if name in objective_names:
            return _objective_spec(name, _split_params(rest, spec), spec)
        known = sorted(set(MDP_ESTIMATORS) | set(objective_names) | set(USER_ESTIMATORS) | set(BATCH_ESTIMATORS))
        raise PGBenchError(f"unknown estimator {name!r}; known: {', '.join(known)} (your own estimators: register "
                           f"them in a file and pass it with --import FILE.py)")
    info = MDP_ESTIMATORS[name]
    raw = _split_params(rest, spec)
    params = {}
    for key, val in raw.items():
        if key not in info.params:
            known = ", ".join(info.params) or "none"
            raise PGBenchError(f"unknown parameter {key!r} for estimator {name} (known: {known})")
        params[key] = _coerce(val, info.params[key], f"parameter {key} of estimator {name}")
    for key in info.required:
        if key not in params:
            raise PGBenchError(f"estimator {name} needs parameter {key} (e.g. {name}:{key}=...)")
    full = {**info.params, **params}
    _validate(name, full)
    return EstimatorSpec(info, tuple(sorted(full.items())))


def _group_names() -> tuple:
    return tuple(groups.ALIASES)


def _coerce(val: str, default, what: str):
    from pgbench.problems.registry import coerce
    return coerce(val, default, what)


def _validate(name: str, p: dict) -> None:
    if name in ("gae", "td0"):
        lam = p.get("lambda", 0.0)
        if not 0.0 <= lam <= 1.0:
            raise PGBenchError(f"gae lambda must be in [0, 1]; got {lam}")
        if p["critic"] not in CRITICS:
            raise PGBenchError(f"unknown critic {p['critic']!r} for {name}; known: {', '.join(CRITICS)}")
        if p["scale"] < 0:
            raise PGBenchError(f"critic scale must be non-negative; got {p['scale']}")
        from pgbench.inputs import seed
        seed(p["seed"], f"{name} critic seed")
    if name == "importance_sampling":
        if p["mu"] not in ("uniform", "mix"):
            raise PGBenchError(f"importance_sampling mu must be 'uniform' or 'mix' (eps-mixture of pi and uniform); got {p['mu']!r}")
        if not 0.0 < p["eps"] <= 1.0:
            raise PGBenchError(f"importance_sampling eps must be in (0, 1]; got {p['eps']}")
    if name == "entropy_bonus" and not p["beta"] >= 0:
        raise PGBenchError(f"entropy_bonus beta must be non-negative; got {p['beta']}")
    if name == "natural":
        base = parse(p["base"])
        if base.name == "natural":
            raise PGBenchError("natural of natural is not an estimator")
        if base.name == "user" or base.info.target != "mdp" or base.info.code < 0:
            raise PGBenchError(f"natural takes a built-in MDP estimator as base; got {p['base']!r}")
    if name in _group_names():
        groups.validate(name, p)
    if name == "ppo_gae" and not 0.0 <= p["lambda"] <= 1.0:
        raise PGBenchError(f"ppo_gae lambda must be in [0, 1]; got {p['lambda']}")
    if name == "normalized_advantage":
        from pgbench.estimators.practice import PSI_BASES
        base = parse(p["base"])
        if base.name not in PSI_BASES or (base.name == "gae" and base.p["critic"] != "exact"):
            raise PGBenchError(f"normalized_advantage takes a base among {', '.join(PSI_BASES)} (gae with the "
                               f"exact critic); got {p['base']!r}")


def _objective_names() -> dict:
    names = {}
    for kind, table in OBJECTIVE_ESTIMATORS.items():
        for n, entry in table.items():
            names.setdefault(n, {})[kind] = entry
    return names


def _objective_spec(name: str, raw: dict, spec: str) -> EstimatorSpec:
    kinds = _objective_names()[name]
    entry = next(iter(kinds.values()))
    params = {}
    for key, val in raw.items():
        if key not in entry["params"]:
            raise PGBenchError(f"unknown parameter {key!r} for estimator {name} (known: {', '.join(entry['params']) or 'none'})")
        params[key] = _coerce(val, entry["params"][key], f"parameter {key} of estimator {name}")
    info = EstimatorInfo(name, entry["doc"], "yes" if entry["unbiased"] else "no", dict(entry["params"]),
                         target="/".join(sorted(kinds)))
    return EstimatorSpec(info, tuple(sorted({**entry["params"], **params}.items())))


def _lqg_table() -> dict:
    return LQG_ESTIMATORS


def _lqg_only_names() -> set:
    """LQG estimators with no MDP or objective namesake (``svg_inf``, ``svg0``, ``mppi``)."""
    return set(_lqg_table()) - set(MDP_ESTIMATORS) - set(_objective_names())


def _lqg_spec(name: str, raw: dict, spec: str, kind: str) -> EstimatorSpec:
    table = _lqg_table()
    if kind != "lqg":
        raise PGBenchError(f"estimator {name!r} applies to linear-Gaussian control (lqg) problems only, "
                           f"not to a {kind} problem")
    if name not in table:
        raise PGBenchError(f"estimator {name!r} does not apply to an lqg problem (for lqg: {', '.join(table)})")
    entry = table[name]
    params = {}
    for key, val in raw.items():
        if key not in entry["params"]:
            raise PGBenchError(f"unknown parameter {key!r} for estimator {name} (known: {', '.join(entry['params']) or 'none'})")
        params[key] = _coerce(val, entry["params"][key], f"parameter {key} of estimator {name}")
    unb = entry["unbiased"]
    info = EstimatorInfo(name, entry["doc"], unb if isinstance(unb, str) else ("yes" if unb else "no"),
                         dict(entry["params"]), target="lqg", in_batch=(name == "mppi"),
                         oracle={"value_baseline": "V", "svg0": "Q"}.get(name, ""))
    return EstimatorSpec(info, tuple(sorted({**entry["params"], **params}.items())))


def estimator_class(label: str, unbiased=None, kind: str = "mdp") -> str:
    """The class (:data:`ESTIMATOR_CLASSES`) of an estimator id, from the catalogue; an id the
    catalogue does not know (a user estimator not registered in this process) falls back on its
    claimed unbiasedness."""
    try:
        return parse(label, kind).estimator_class
    except PGBenchError:
        for k in ("gaussian", "categorical", "lqg"):
            try:
                return parse(label, k).estimator_class
            except PGBenchError:
                pass
    return "practical" if unbiased else "biased"


def describe() -> list[tuple[str, str, str, str]]:
    """(name, parameters with defaults, unbiased, doc) for every estimator."""
    rows = []
    for e in MDP_ESTIMATORS.values():
        rows.append((e.name, ",".join(f"{k}={_fmt(v)}" for k, v in e.params.items()), e.unbiased, e.doc))
    for name, kinds in _objective_names().items():
        entry = next(iter(kinds.values()))
        rows.append((name, ",".join(f"{k}={_fmt(v)}" for k, v in entry["params"].items()),
                     "yes" if entry["unbiased"] else "no", f"[{'/'.join(sorted(kinds))}] " + entry["doc"]))
    for name, entry in _lqg_table().items():
        unb = entry["unbiased"]
        rows.append((name, ",".join(f"{k}={_fmt(v)}" for k, v in entry["params"].items()),
                     unb if isinstance(unb, str) else ("yes" if unb else "no"), "[lqg] " + entry["doc"]))
    for name, u in USER_ESTIMATORS.items():
        rows.append((name, "", "yes" if u.unbiased else "no", "[user] " + u.doc))
    for name, u in BATCH_ESTIMATORS.items():
        rows.append((name, "", "yes" if u.unbiased else "no", f"[user batch, returns {u.returns}] " + u.doc))
    return rows

"""Validate an estimator against ground truth over a standard panel of problems.

``validate(estimator)`` measures the estimator on every problem of a panel (finite and unbounded
horizons, terminal states, reward noise, tabular and linear softmax), beside the reference
estimators ``reinforce_rtg`` and ``value_baseline`` on the *same* episodes (one cell per problem),
and asks, per problem, whether its mean is consistent with the exact gradient. The panel's
p-values are adjusted by Holm's step-down procedure, so the probability that a correct (unbiased)
estimator fails anywhere on the panel is at most ``alpha`` (the family-wise false-alarm rate).

The per-problem test is a bootstrap max-t test (:func:`bootstrap_max_t`): the largest studentised
coordinate of ``mean - grad J``, referred to its bootstrap distribution under the null (trials
resampled after centring at their mean). Trial estimates of sparse-reward problems are skewed and
zero-inflated, and there the normal-theory tests of :func:`pgbench.stats.metrics.summarize`
(Hotelling's T^2, Holm-adjusted t-tests) reject a correct estimator far more often than their
level (``calibration()`` measures it: on ``frozen_lake`` at N = 10, K = 400 about 60% of cells at
the 5% level); the bootstrap-t corrects the skewness to second order and the maximum over
coordinates handles their correlation without a Bonferroni factor. The normal-theory p-value is
still reported (``p_metrics``).
The variance relative to the references (paired ratios with intervals) says what the estimator
buys. On problems small enough to enumerate, the exact bias (:mod:`pgbench.exact.moments`) is
shown as well.

``calibration()`` checks the test itself: its false-rejection rate on unbiased estimators against
its level, its power against ``batch_mean_baseline`` at N = 2 (bias exactly ``-grad/2``; the
predicted power from the exact covariance beside the measured one), and the coverage of the
variance and MSE intervals of the exact values.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from pgbench.threads import keeps_thread_settings
from pgbench.errors import PGBenchError, user_exit
from pgbench.stats.metrics import MIN_OBSERVED, bootstrap_max_t  # noqa: F401  (re-exported)

__all__ = ["PANEL", "PanelProblem", "REFERENCES", "validate", "holm", "bootstrap_max_t", "calibration",
           "format_validation", "import_plugin"]

REFERENCES = ("reinforce_rtg", "value_baseline")
"""Measured on the same episodes as the validated estimator; variances are reported relative to them."""


@dataclass(frozen=True)
class PanelProblem:
    """A problem id and how to set theta: ``None`` (the problem's own) or a seed for
    ``N(0, scale^2)`` parameters."""

    problem: str
    theta_seed: Optional[int] = None
    theta_scale: float = 0.5
    why: str = ""

    def build(self):
        from pgbench.problems import make
        prob = make(self.problem)
        if self.theta_seed is None or prob.kind != "mdp":
            return prob
        th = np.random.default_rng(self.theta_seed).normal(scale=self.theta_scale, size=prob.policy.theta_shape)
        return prob.with_theta(th)


PANEL = (
    PanelProblem("three_step_bandit", why="finite horizon, uniform reward noise, time-indexed tabular softmax"),
    PanelProblem("garnet:S=4,A=3,b=2,seed=0,horizon=4,noise=0.3", 1, why="finite horizon, Gaussian noise, "
                 "random theta (small enough for exact moments)"),
    PanelProblem("garnet:S=6,A=3,b=3,seed=1,gamma=0.8", 2, why="unbounded, discounted (gamma = 0.8), no terminal state"),
    PanelProblem("gridworld:n=3,slip=0.1,gamma=0.9", 3, why="unbounded, terminal goal, discounted"),
    PanelProblem("boltzmann_bandit", why="linear softmax (one feature), closed form dJ/dtheta = -20.79"),
    PanelProblem("frozen_lake", why="terminal holes and goal, sparse reward, gamma = 0.99"),
)
"""The default panel (see :func:`validate`)."""

DEFAULT_BATCH = 10
DEFAULT_TRIALS = 400


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.maximum.accumulate(adj)
    out = np.empty(m)
    out[order] = adj
    return out


def _panel(problems) -> list:
    if problems is None:
        return list(PANEL)
    if isinstance(problems, (str, PanelProblem)) or hasattr(problems, "kind"):
        problems = [problems]
    out = []
    for p in problems:
        if isinstance(p, PanelProblem) or hasattr(p, "kind"):
            out.append(p)
        elif isinstance(p, str):
            out.append(PanelProblem(p))
        else:
            raise PGBenchError(f"a panel problem must be a problem id, a .npz path or a problem; got {type(p).__name__}")
    if not out:
        raise PGBenchError("the panel is empty: give at least one problem")
    return out


def import_plugin(target: str):
    """Import a module (``package.module``) or a Python file (``path/to/file.py``), e.g. one that
    registers user estimators with :func:`pgbench.estimators.register_estimator`."""
    import importlib
    import importlib.util
    import os
    import sys
    if target.endswith(".py") or os.path.sep in target or (os.path.altsep or os.path.sep) in target \
            or os.path.isfile(target):
        if not os.path.isfile(target):
            raise PGBenchError(f"cannot import {target}: no such file")
        if not target.endswith(".py"):
            raise PGBenchError(f"cannot import {target}: a plug-in is a Python file (.py) or a module name")
        name = "pgbench_plugin_" + os.path.splitext(os.path.basename(target))[0]
        spec = importlib.util.spec_from_file_location(name, target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except PGBenchError:
            raise
        except Exception as exc:
            sys.modules.pop(name, None)
            raise PGBenchError(f"importing {target} failed: {type(exc).__name__}: {exc}") from None
        except SystemExit as exc:
            sys.modules.pop(name, None)
            raise user_exit(f"importing {target}", exc) from None
        return module
    try:
        return importlib.import_module(target)
    except PGBenchError:
        raise
    except Exception as exc:
        raise PGBenchError(f"importing {target} failed: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:
        raise user_exit(f"importing {target}", exc) from None


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise PGBenchError(f"alpha must be a number in (0, 1); got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise PGBenchError(f"alpha must be in (0, 1); got {alpha}")
    return a


"""A coordinate is tested only if the estimator or the first reference is non-zero there in at
least this many trials (a state almost no sampled episode visited tells nothing)."""


def _n_boot(alpha: float, n_problems: int) -> int:
    """Enough resamples that the smallest Holm threshold alpha / n is 20 bootstrap steps."""
    return int(min(50_000, max(1999, math.ceil(20 * n_problems / alpha) - 1)))


def _exact_bias(prob, spec, N: int, limit: int) -> tuple:
    """Exact bias norm by enumeration when the problem is small enough, and why not otherwise:
    ``(value, "")`` or ``(nan, reason)``."""
    from pgbench.exact import moments
    from pgbench.estimators.registry import BATCH_CODE, USER_CODE
    if getattr(prob, "kind", None) != "mdp":
        return math.nan, "no exact moments for objectives"
    if spec.info.code in (USER_CODE, BATCH_CODE):
        return math.nan, "user estimator: pgbench cannot enumerate its moments (only built-ins); the test uses the exact gradient"
    if not moments.supports(spec):
        return math.nan, f"no exact moments for {spec.name}"
    try:
        if moments.enumeration_size(prob, [spec], N, stop_above=limit) > limit:
            return math.nan, f"too many trajectories to enumerate (more than {limit:.3g})"
        em = moments.exact_moments(prob, [spec], batch=N, limit=limit)
    except PGBenchError as exc:
        return math.nan, f"exact moments refused: {exc}"
    return float(em.bias_norm[0]), ""


def fmt_interval(v: float, lo: float, hi: float, digits: int = 3, max_digits: int = 8) -> str:
    """``v [lo, hi]`` with the same number of significant digits for all three, enough that
    distinct bounds print distinct (at least ``digits``). Rounding to a fixed number of
    significant digits is monotone, so an estimate inside its interval prints inside it."""
    vals = (v, lo, hi)
    if not all(np.isfinite(x) for x in vals):
        return " ".join(["-" if not np.isfinite(v) else f"{v:.{digits}g}",
                         "[" + ", ".join("-" if not np.isfinite(x) else f"{x:.{digits}g}" for x in (lo, hi)) + "]"])
    n = digits
    while n < max_digits and lo != hi and f"{lo:.{n}g}" == f"{hi:.{n}g}":
        n += 1
    return f"{v:.{n}g} [{lo:.{n}g}, {hi:.{n}g}]"


DEFAULT_TIMEOUT = 600.0
"""Seconds one problem's cell may take in :func:`validate` before it is stopped (see :mod:`pgbench.timeouts`)."""


@keeps_thread_settings
def validate(estimator, problems=None, batch: int = DEFAULT_BATCH, trials: int = DEFAULT_TRIALS, seed: int = 0,
             alpha: float = 0.05, references=REFERENCES, exact_limit: int = 20_000,
             timeout: float | None = DEFAULT_TIMEOUT) -> pd.DataFrame:
    """Test ``estimator`` for unbiasedness on every problem of a panel; one row per problem.

    ``p_value`` is the verdict's p-value (:func:`pgbench.stats.metrics.verdict_p`, the policy
    of the reports and the pytest summary: the larger of the bootstrap max-t p ``p_bootstrap``
    and the normal-theory p ``p_metrics``, the latter alone once the bootstrap is at its floor),
    ``test`` names the test it comes from, ``p_holm`` is its Holm adjustment over the panel
    (``passed = p_holm > alpha``). The bootstrap's resamples are sized so that its floor is 20
    times below the smallest Holm threshold ``alpha / n``.

    Parameters
    ----------
    estimator
        A built-in estimator id (``gae:lambda=0.9``) or the name of a user estimator
        registered with :func:`pgbench.estimators.register_estimator`.
    problems
        Problem ids, ``.npz`` paths, problems or :class:`PanelProblem` (default :data:`PANEL`).
    batch, trials
        Batch size N and trials K of each problem's cell.
    seed
        The run's seed (each problem's cell draws its own streams from it).
    alpha
        Family-wise false-alarm rate over the panel (Holm).
    references
        Estimators measured on the same episodes, for the variance ratios (the first one
        also decides which coordinates the sampled episodes observe; see :func:`bootstrap_max_t`).
    timeout
        Seconds each problem's cell may run (default :data:`DEFAULT_TIMEOUT`; None: no limit):
        a plug-in that hangs ends in a :class:`pgbench.timeouts.CellTimeout` naming the cell.
        User numba functions are compiled with bounds checks here (an index out of range is an
        error naming the estimator, not a crash).

    Returns
    -------
    DataFrame
        Columns ``problem``, ``theta``, ``estimator``, ``claimed_unbiased``, ``N``, ``K``, ``d``,
        ``test``, ``p_value``, ``p_bootstrap``, ``p_holm``, ``passed``, ``tested``, ``unobserved``,
        ``p_metrics``, ``test_metrics``, ``bias_norm``, ``bias_norm_lo``, ``bias_norm_hi``,
        ``rel_bias``, ``exact_grad_norm``, ``exact_bias_norm``, ``exact_note`` (why
        ``exact_bias_norm`` is nan: a user estimator, too many trajectories, ...; else ``""``),
        ``variance``, ``variance_se``,
        ``var_ratio_<ref>``, ``var_ratio_<ref>_lo``, ``var_ratio_<ref>_hi``, ``seconds``;
        ``df.attrs``: ``passed`` (every problem passed), ``alpha``, ``correction`` (``'holm'``),
        ``estimator``, ``references``.
    """
    from pgbench.estimators.catalogue import parse
    from pgbench.estimators.user import bounds_checked
    from pgbench.stats import metrics
    from pgbench.measure.api import run_cell

    from pgbench.timeouts import check_timeout, time_limit
    alpha = _check_alpha(alpha)
    timeout = check_timeout(timeout, "timeout")
    panel = _panel(problems)
    rows = []
    refs_used: list = []
    label = None
    n_boot = _n_boot(alpha, len(panel))
    for idx, entry in enumerate(panel):
        prob = entry.build() if isinstance(entry, PanelProblem) else entry
        pid = entry.problem if isinstance(entry, PanelProblem) else prob.name
        theta_desc = "default" if not isinstance(entry, PanelProblem) or entry.theta_seed is None else \
            f"N(0, {entry.theta_scale:g}^2) seed {entry.theta_seed}"
        spec = parse(estimator, prob.kind)
        label = spec.label
        names = [spec]
        ref_labels = []
        if prob.kind == "mdp":
            for r in references:
                rs = parse(r)
                if rs.label != spec.label:
                    names.append(rs)
                ref_labels.append(rs.label)
        t0 = time.perf_counter()
        with bounds_checked(), time_limit(timeout, f"validate {spec.label} on {pid}"):
            # a user's numba function writing out of range: an error, not a crash
            cell = run_cell(prob, names, batch, trials, seed=seed, exact=False)
        secs = time.perf_counter() - t0
        est = cell.estimates[:, 0, :]
        labels = [s.label for s in cell.specs]
        # the first reference tells which coordinates the episodes visit (not for importance sampling,
        # whose episodes come from another policy)
        ref = cell.estimates[:, labels.index(ref_labels[0]), :] \
            if ref_labels and getattr(spec, "name", "") != "importance_sampling" else None
        m = metrics.summarize(est, cell.targets[0])
        bt = bootstrap_max_t(est, cell.targets[0], reference=ref, B=n_boot, seed=seed * 7919 + idx)
        p, test = metrics.verdict_p(m["p_value"], m["test"], bt["p_value"], n_boot)
        row = {"problem": pid, "theta": theta_desc, "estimator": spec.label, "claimed_unbiased": bool(spec.unbiased),
               "N": batch, "K": trials, "d": est.shape[1], "test": test, "p_value": p,
               "p_bootstrap": bt["p_value"],
               "p_holm": math.nan, "passed": False, "tested": bt["tested"], "unobserved": bt["unobserved"],
               "p_metrics": m["p_value"], "test_metrics": m["test"],
               "bias_norm": m["bias_norm"], "bias_norm_lo": m["bias_norm_ci"][0],
               "bias_norm_hi": m["bias_norm_ci"][1], "rel_bias": m["rel_bias"],
               "exact_grad_norm": float(np.linalg.norm(cell.targets[0])),
               "exact_bias_norm": math.nan, "exact_note": "",
               "variance": m["variance"], "variance_se": m["variance_se"]}
        for rl in ref_labels:
            if rl not in refs_used:
                refs_used.append(rl)
            if rl == spec.label:
                row.update({f"var_ratio_{rl}": 1.0, f"var_ratio_{rl}_lo": 1.0, f"var_ratio_{rl}_hi": 1.0})
                continue
            pr = metrics.paired(est, cell.estimates[:, labels.index(rl), :], cell.targets[0])
            row.update({f"var_ratio_{rl}": pr["variance_ratio"], f"var_ratio_{rl}_lo": pr["variance_ratio_ci"][0],
                        f"var_ratio_{rl}_hi": pr["variance_ratio_ci"][1]})
        row["exact_bias_norm"], row["exact_note"] = _exact_bias(prob, spec, batch, exact_limit)
        row["seconds"] = secs
        rows.append(row)
    df = pd.DataFrame(rows)
    for rl in refs_used:  # problems without references (objectives) get nan ratios
        for suf in ("", "_lo", "_hi"):
            if f"var_ratio_{rl}{suf}" not in df:
                df[f"var_ratio_{rl}{suf}"] = np.nan
    df["p_holm"] = holm(df["p_value"].to_numpy())
    df["passed"] = df["p_holm"] > alpha
    cols = [c for c in df.columns if c != "seconds"] + ["seconds"]
    df = df[cols]
    df.attrs.update(passed=bool(df["passed"].all()), alpha=alpha, correction="holm", estimator=label,
                    references=refs_used)
    return df


def format_validation(df: pd.DataFrame) -> str:
    """The table ``pgbench validate`` prints, and a verdict line."""
    refs = df.attrs.get("references", [])
    lines = []
    head = f"{'problem':46s} {'p':>9s} {'p_holm':>9s} {'bias_norm [95% CI]':>28s} {'exact':>9s}"
    for r in refs:
        head += f" {'var/' + r:>22s}"
    lines.append(head + "  verdict")
    notes: dict = {}
    for _, r in df.iterrows():
        ci = fmt_interval(r["bias_norm"], r["bias_norm_lo"], r["bias_norm_hi"])
        if np.isfinite(r["exact_bias_norm"]):
            ex = f"{r['exact_bias_norm']:.3g}"
        else:  # blank says why, below the table
            ex = "-"
            note = str(r.get("exact_note", "") or "not computed")
            ex += "*" * (list(notes).index(note) + 1 if note in notes else len(notes) + 1)
            notes.setdefault(note, None)
        line = f"{str(r['problem'])[:46]:46s} {r['p_value']:9.3g} {r['p_holm']:9.3g} {ci:>28s} {ex:>9s}"
        for ref in refs:
            v = r.get(f"var_ratio_{ref}", np.nan)
            lo, hi = r.get(f"var_ratio_{ref}_lo", np.nan), r.get(f"var_ratio_{ref}_hi", np.nan)
            txt = "-" if not np.isfinite(v) else fmt_interval(v, lo, hi)
            line += f" {txt:>22s}"
        lines.append(line + ("  pass" if r["passed"] else "  FAIL") + f"  ({r['test']})")
    for i, note in enumerate(notes):
        lines.append(f"exact {'-' + '*' * (i + 1)}: {note}")
    n_fail = int((~df["passed"]).sum())
    a = df.attrs.get("alpha", float("nan"))
    est = df.attrs.get("estimator", "")
    N, K = int(df["N"].iloc[0]), int(df["K"].iloc[0])
    if n_fail == 0:
        lines.append(f"PASS: {est} is consistent with unbiasedness on all {len(df)} problems "
                     f"(N={N}, K={K}; family-wise false-alarm rate {a:g}, Holm)")
    else:
        bad = ", ".join(df.loc[~df["passed"], "problem"].astype(str))
        lines.append(f"FAIL: {est} is biased on {n_fail} of {len(df)} problems ({bad}) at family-wise level {a:g} "
                     f"(N={N}, K={K}, Holm)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- calibration


def _clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple:
    from scipy import stats
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@keeps_thread_settings
def calibration(problem="three_step_bandit", unbiased=("reinforce_rtg", "rloo"), biased="batch_mean_baseline",
                batch: int = 2, trials: int = 100, reps: int = 200, alpha: float = 0.05, level: float = 0.95,
                seed: int = 0, theta=None, bootstrap: int = 0) -> dict:
    """How well the unbiasedness test and the intervals of :func:`metrics.summarize` are calibrated.

    One sample of ``reps * trials`` independent trials (batch size ``batch``) of every estimator,
    split into ``reps`` cells of ``trials`` trials. Per estimator:

    - ``rejection_rate`` of ``H0: E g_k = target`` at level ``alpha`` by the test of
      :func:`metrics.summarize`, with its Clopper-Pearson interval: the false-rejection rate for
      ``unbiased`` estimators (should be ``alpha``), the power for ``biased``
      (``batch_mean_baseline`` at N has bias ``-grad/N``); ``rejection_rate_bootstrap`` the same
      for :func:`bootstrap_max_t` with ``bootstrap`` resamples (when ``bootstrap > 0``);
    - ``predicted_power``: for Hotelling's test, ``P(F(r, K - r, lambda) > F_crit)`` with the exact
      noncentrality ``lambda = K b^T Sigma^+ b`` (exact bias and covariance by the moment DP, else enumeration);
    - ``variance_coverage`` / ``mse_coverage`` / ``bias_norm_coverage``: how often the ``level``
      intervals contain the exact variance, MSE and bias norm (from :mod:`pgbench.exact.moments`).
    """
    from scipy import stats

    from pgbench.estimators.catalogue import parse
    from pgbench.exact.moments import exact_moments
    from pgbench.stats import metrics
    from pgbench.measure.engine import sample_mdp
    from pgbench.problems import make

    alpha = _check_alpha(alpha)
    prob = make(problem) if isinstance(problem, str) else problem
    names = list(unbiased) + ([biased] if biased else [])
    specs = [parse(n) for n in names]
    t0 = time.perf_counter()
    res = sample_mdp(prob, specs, batch, reps * trials, seed=seed, theta=theta)
    ems = []  # exact moments per estimator; None where neither the DP nor enumeration reaches
    for sp in specs:
        try:
            ems.append(exact_moments(prob, [sp], batch=batch, theta=theta, cov=True))
        except PGBenchError:
            ems.append(None)
    out = {"problem": prob.name, "N": batch, "K": trials, "reps": reps, "alpha": alpha, "level": level,
           "estimators": {}}
    nan = math.nan
    for j, sp in enumerate(specs):
        X = res.estimates[:, j, :].reshape(reps, trials, -1)
        target = res.targets[j]
        em = ems[j]
        ev, emse, ebn = (float(em.variance[0]), float(em.mse[0]), float(em.bias_norm[0])) if em else (nan, nan, nan)
        rej = rej_b = cov_v = cov_m = cov_b = 0
        tests = []
        for r in range(reps):
            m = metrics.summarize(X[r], target, level=level)
            tests.append(m["test"])
            rej += m["p_value"] <= alpha
            if bootstrap:
                rej_b += bootstrap_max_t(X[r], target, B=bootstrap, seed=seed * 1_000_003 + r)["p_value"] <= alpha
            lo, hi = m["variance_ci"]
            cov_v += lo <= ev <= hi
            lo, hi = m["mse_ci"]
            cov_m += lo <= emse <= hi
            lo, hi = m["bias_norm_ci"]
            cov_b += (lo <= ebn <= hi) if ebn > 1e-12 else (lo <= 1e-12)
        # predicted power of Hotelling's test from the exact bias and covariance
        pred, r_, lam = nan, -1, nan
        if em is not None:
            w, V = np.linalg.eigh(em.cov[0])
            keep = w > 1e-10 * max(w.max(), 1e-300)
            r_ = int(keep.sum())
            lam = float(trials * np.sum((V[:, keep].T @ em.bias[0]) ** 2 / w[keep])) if r_ else 0.0
            if r_ and trials - r_ > 0:
                fcrit = stats.f.isf(alpha, r_, trials - r_)
                pred = float(stats.ncf.sf(fcrit, r_, trials - r_, lam)) if lam > 1e-12 else alpha
        exact_ok = em is not None
        out["estimators"][sp.label] = {
            "claimed_unbiased": bool(sp.unbiased), "exact_bias_norm": ebn, "exact_variance": ev, "exact_mse": emse,
            "rejection_rate": rej / reps, "rejection_ci": _clopper_pearson(int(rej), reps),
            "rejection_rate_bootstrap": rej_b / reps if bootstrap else nan,
            "rejection_ci_bootstrap": _clopper_pearson(int(rej_b), reps) if bootstrap else (nan, nan),
            "tests": sorted(set(tests)), "predicted_power_hotelling": pred, "rank": r_, "noncentrality": lam,
            "variance_coverage": cov_v / reps if exact_ok else nan, "mse_coverage": cov_m / reps if exact_ok else nan,
            "bias_norm_coverage": cov_b / reps if exact_ok else nan,
        }
    out["seconds"] = time.perf_counter() - t0
    return out

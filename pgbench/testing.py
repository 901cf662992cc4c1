"""Test helpers for your own estimators (use them in pytest).

>>> from pgbench.testing import assert_unbiased
>>> assert_unbiased("my_gae", "garnet:S=6,A=3,b=3,seed=1,gamma=0.8", batch=16, trials=400)  # doctest: +SKIP

``assert_unbiased`` measures the estimator on one problem (beside ``reinforce_rtg`` on the same
episodes) and raises ``AssertionError`` when the test of "its mean equals the exact gradient"
rejects at level ``alpha``; the message gives the p-value, the bias norm with its confidence
interval, the relative bias and the variance relative to ``reinforce_rtg``. With a fixed seed the
outcome is deterministic; a correct estimator fails with probability ``alpha`` over seeds.
"""
from __future__ import annotations

import math

__all__ = ["assert_unbiased"]


def assert_unbiased(estimator, problem, batch: int = 16, trials: int = 400, seed: int = 0, alpha: float = 1e-3,
                    theta=None) -> dict:
    """Raise ``AssertionError`` unless ``estimator`` is consistent with unbiasedness on ``problem``.

    Parameters
    ----------
    estimator : a built-in estimator id or a registered user estimator's name
    problem : a problem id, a ``.npz`` path or a problem object
    batch, trials : batch size N and number of trials K of the cell
    seed : the cell's seed
    alpha : the test's level (its false-alarm rate for an unbiased estimator)
    theta : parameters to evaluate at (default: the problem's)

    Returns the validation row (a dict) when the test does not reject.
    """
    from pgbench.problems import make
    from pgbench.validate import validate

    prob = make(problem) if isinstance(problem, str) else problem
    if theta is not None:
        prob = make(prob, theta=theta)
    df = validate(estimator, problems=[problem if isinstance(problem, str) and theta is None else prob], batch=batch,
                  trials=trials, seed=seed, alpha=alpha, references=("reinforce_rtg",) if prob.kind == "mdp" else ())
    row = df.iloc[0].to_dict()
    if isinstance(problem, str):
        row["problem"] = problem
    if not row["passed"]:
        rel = row["rel_bias"]
        ratio = row.get("var_ratio_reinforce_rtg", math.nan)
        parts = [f"{row['estimator']} looks biased on {row['problem']}: p = {row['p_value']:.3g} < alpha = {alpha:g} "
                 f"({row['test']} test of E[g_hat] = grad J, N={batch}, K={trials}, seed={seed})",
                 f"bias norm {row['bias_norm']:.4g}, 95% CI [{row['bias_norm_lo']:.4g}, {row['bias_norm_hi']:.4g}], "
                 f"|grad J| = {row['exact_grad_norm']:.4g}" + (f" (relative bias {rel:.3g})" if math.isfinite(rel) else "")]
        if math.isfinite(row.get("exact_bias_norm", math.nan)):
            parts.append(f"exact bias norm by enumeration: {row['exact_bias_norm']:.4g}")
        if isinstance(ratio, float) and math.isfinite(ratio):
            parts.append(f"variance {row['variance']:.4g}, {ratio:.3g} x that of reinforce_rtg "
                         f"(95% CI [{row['var_ratio_reinforce_rtg_lo']:.3g}, {row['var_ratio_reinforce_rtg_hi']:.3g}])")
        else:
            parts.append(f"variance {row['variance']:.4g}")
        raise AssertionError("; ".join(parts))
    return row

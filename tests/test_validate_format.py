"""`pgbench validate`'s table: point estimates never print outside their own rounded interval,
and a blank exact column says why."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pgbench.validate import fmt_interval, format_validation, validate

INTERVAL = re.compile(r"(-?[\d.]+(?:e[-+]\d+)?) \[(-?[\d.]+(?:e[-+]\d+)?), (-?[\d.]+(?:e[-+]\d+)?)\]")


def _row(**kw):
    row = {"problem": "three_step_bandit", "p_value": 0.5, "p_holm": 0.5, "passed": True, "test": "Holm t-tests",
           "bias_norm": 0.05, "bias_norm_lo": 0.01, "bias_norm_hi": 0.09, "exact_bias_norm": np.nan,
           "exact_note": "user estimator: pgbench cannot enumerate its moments (only built-ins)",
           "var_ratio_reinforce_rtg": 1.37, "var_ratio_reinforce_rtg_lo": 1.3655,
           "var_ratio_reinforce_rtg_hi": 1.3749, "N": 10, "K": 400}
    row.update(kw)
    return row


def _check_inside(text):
    found = INTERVAL.findall(text)
    assert found
    for v, lo, hi in found:
        assert float(lo) <= float(v) <= float(hi), (v, lo, hi, text)


def test_estimates_inside_their_rounded_intervals():
    df = pd.DataFrame([_row(), _row(problem="chain:n=6", bias_norm=1.37, bias_norm_lo=1.3652, bias_norm_hi=1.3748,
                                    exact_bias_norm=0.0, exact_note="")])
    df.attrs.update(references=["reinforce_rtg"], alpha=0.05, estimator="mine")
    text = format_validation(df)
    _check_inside(text)
    assert "1.37 [1.4, 1.4]" not in text and "1.37 [1.37, 1.37]" not in text
    for v, lo, hi in [(1.37, 1.3655, 1.3749), (0.001234, 0.0012339, 0.0012341), (2e5, 1.99999e5, 2.00001e5),
                      (0.5, 0.1, 0.9), (1.0, 1.0, 1.0)]:
        _check_inside(fmt_interval(v, lo, hi))


def test_blank_exact_column_says_why():
    df = pd.DataFrame([_row(), _row(problem="frozen_lake", exact_note="too many trajectories to enumerate")])
    df.attrs.update(references=["reinforce_rtg"], alpha=0.05, estimator="mine")
    lines = format_validation(df).splitlines()
    assert " -* " in lines[1] and " -** " in lines[2]
    assert lines[3] == "exact -*: user estimator: pgbench cannot enumerate its moments (only built-ins)"
    assert lines[4] == "exact -**: too many trajectories to enumerate"
    assert "nan" not in "\n".join(lines)


def test_user_estimator_row_names_the_reason():
    from pgbench.estimators.batch import register_batch_estimator, unregister_batch_estimator

    @register_batch_estimator("mine_rtg_for_validate", unbiased=True)
    def mine(batch):
        return batch.reward_to_go()

    try:
        df = validate("mine_rtg_for_validate", problems=["three_step_bandit"], batch=2, trials=60)
    finally:
        unregister_batch_estimator("mine_rtg_for_validate")
    assert np.isnan(df["exact_bias_norm"]).all()
    assert df["exact_note"].str.startswith("user estimator").all()
    lines = format_validation(df).splitlines()
    assert " -* " in lines[1] and lines[2].startswith("exact -*: user estimator")
    # a built-in on the same problem has its exact value (enumeration)
    df = validate("reinforce_rtg", problems=["three_step_bandit"], batch=2, trials=60)
    assert np.isfinite(df["exact_bias_norm"]).all() and (df["exact_note"] == "").all()

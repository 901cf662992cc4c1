"""examples/verl_grpo.py: verl's compute_grpo_outcome_advantage, adapted to a batch estimator,
reproduces pgbench's grpo and dr_grpo trial by trial. Skips where verl is not installed."""
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("verl.trainer.ppo.core_algos")


def test_verl_grpo_reproduces_builtins_trial_by_trial():
    from pgbench.estimators.batch import unregister_batch_estimator
    from pgbench.measure.api import run_cell
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "verl_grpo.py")
    spec = importlib.util.spec_from_file_location("verl_grpo_example", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        cell = run_cell("tokens:V=3,L=4,prompts=2,reward=length,seed=2",
                        ["grpo", "verl_grpo", "dr_grpo", "verl_dr_grpo"], 8, 300, seed=4, group=4, exact=False)
    finally:
        unregister_batch_estimator("verl_grpo")
        unregister_batch_estimator("verl_dr_grpo")
    est = cell.estimates
    assert np.abs(est[:, 0]).max() > 0.01 and np.abs(est[:, 2]).max() > 0.01  # not trivially zero
    assert np.abs(est[:, 0] - est[:, 2]).max() > 0.01  # the two variants differ, so each pair tests something
    np.testing.assert_allclose(est[:, 1], est[:, 0], atol=1e-10, rtol=0)
    np.testing.assert_allclose(est[:, 3], est[:, 2], atol=1e-10, rtol=0)

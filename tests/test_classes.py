"""Estimator classes (practical, oracle, biased) come from the catalogue, not from a list in a report."""
from __future__ import annotations

import pytest

from pgbench.estimators.catalogue import ESTIMATOR_CLASSES, MDP_ESTIMATORS, estimator_class, parse


@pytest.mark.parametrize("label, cls", [
    ("reinforce", "practical"), ("rloo", "practical"), ("time_baseline_loo", "practical"),
    ("importance_sampling", "practical"), ("gae:critic=fitted", "biased"),
    ("value_baseline", "oracle"), ("true_advantage", "oracle"), ("all_action", "oracle"),
    ("optimal_const_baseline", "oracle"), ("gae:lambda=0.9", "oracle"),
    ("gae:lambda=0.9,critic=perturbed,scale=0.3", "oracle"), ("td0:critic=exact", "oracle"),
    ("rtg_no_gamma_t", "biased"), ("batch_mean_baseline", "biased"), ("w_baseline", "biased"),
    ("importance_sampling:weighted=1", "biased"), ("natural:base=true_advantage", "oracle"),
    ("natural", "biased"),
])
def test_class_follows_what_the_estimator_reads_and_its_bias(label, cls):
    assert parse(label).estimator_class == cls
    assert estimator_class(label) == cls


def test_every_catalogue_entry_has_a_class_and_oracles_name_their_exact_quantity():
    for name, info in MDP_ESTIMATORS.items():
        spec = parse(name + (":b=0.5" if "b" in info.required else ""))
        assert spec.estimator_class in ESTIMATOR_CLASSES
        assert (spec.estimator_class == "oracle") == bool(spec.oracle)
    assert {parse(n).oracle for n in ("value_baseline", "true_advantage", "all_action", "optimal_const_baseline")} \
        == {"V", "A", "Q", "b*"}


def test_objective_estimators_and_unknown_names():
    assert estimator_class("naive") == "biased"
    assert estimator_class("reparameterization") == "practical"
    # not in the catalogue (an unregistered user estimator): its claim decides
    assert estimator_class("someone_elses", unbiased=True) == "practical"
    assert estimator_class("someone_elses", unbiased=False) == "biased"

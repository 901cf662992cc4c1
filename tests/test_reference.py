"""The committed reference run (results/reference) must have been drawn by this sampler."""
from __future__ import annotations

import json
import os

import pytest

REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "reference")


def test_reference_run_was_drawn_by_this_sampler():
    """A change of the random streams, alias tables or rollout changes every number of the
    reference run; this fails until the reference is regenerated (pgbench run --out ...)."""
    from pgbench.measure.fingerprint import sampler_fingerprint
    path = os.path.join(REFERENCE, "meta.json")
    if not os.path.isfile(path):
        pytest.skip("no committed reference run in this checkout")
    with open(path) as f:
        meta = json.load(f)
    assert (meta.get("provenance") or {}).get("sampler") == sampler_fingerprint(), (
        "results/reference was made by a sampler whose draws differ from this one's: regenerate it "
        "(pgbench run --out results/reference after moving the old one away)")
    assert meta.get("status") == "complete" and not meta.get("quick")


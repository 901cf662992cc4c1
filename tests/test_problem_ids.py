"""Canonical problem ids: ``make(id).name`` given back to ``make`` builds the same problem."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from pgbench.problems import REGISTRY, make
from pgbench.suites.registry import SUITES

# a value off the default for each parameter of the built-ins (kept small and valid)
OFF_DEFAULT = {"S": 5, "A": 3, "b": 2, "seed": 1, "gamma": 0.5, "horizon": 3, "noise": 0.25, "n": 3,
               "slip": 0.05, "K": 3, "theta": 0.5, "m": 1, "T": 7, "sigma": 0.25, "dt": 0.05,
               "r": "1;0.5;0", "V": 4, "L": 2, "prompts": 2, "reward": "length", "policy": "bigram", "scale": 2.0}
# parameters whose only other value is refused (a sequence problem's gamma), or that need another
# parameter beside them (a bandit's theta has one entry per arm)
REFUSED = {("tokens", "gamma"), ("bandit", "theta")}


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if f.name not in ("name", "meta", "_cache", "policy")}


def _same(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        fa, fb = _fields(a), _fields(b)
        return type(a) is type(b) and fa.keys() == fb.keys() and all(_same(fa[k], fb[k]) for k in fa)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and np.array_equal(a, b)
    return a == b


def _ids():
    out = []
    for name, fn in REGISTRY.items():
        out.append(name)
        for key in inspect.signature(fn).parameters:
            if (name, key) not in REFUSED:
                out.append(f"{name}:{key}={OFF_DEFAULT[key]}")
    out += ["bandit:r=1;0.7;0,theta=0;3;5", "bandit:r=1;0,theta=0.5;0,noise=0.1"]
    out += sorted({s.problem for s in SUITES.values()})
    return out


@pytest.mark.parametrize("spec", _ids())
def test_an_id_round_trips_to_the_same_problem(spec):
    p = make(spec)
    q = make(p.name)
    assert q.name == p.name, (spec, p.name, q.name)
    assert _same(p, q), f"{spec}: make({p.name!r}) builds another problem"


@pytest.mark.parametrize("spec, want", [
    ("garnet:S=20,A=4,b=3,seed=0,horizon=20", "garnet:S=20,A=4,b=3,seed=0,horizon=20"),
    ("chain:n=6,gamma=0.9", "chain:n=6,gamma=0.9"),
    ("chain:n=6", "chain:n=6"),
    ("frozen_lake:gamma=0.9", "frozen_lake:gamma=0.9"),
    ("frozen_lake", "frozen_lake"),
    ("bandit:r=1;0.7;0,theta=0;3;5", "bandit:r=1.0;0.7;0.0,theta=0.0;3.0;5.0"),  # the starting logits stay
    ("tokens:V=3,L=4,prompts=2,reward=length,seed=0,policy=bigram",
     "tokens:V=3,L=4,prompts=2,reward=length,seed=0,policy=bigram"),
    ("garnet:seed=0,horizon=20,b=3,A=4,S=20", "garnet:S=20,A=4,b=3,seed=0,horizon=20"),  # signature order
    ("garnet:S=20,A=4,b=3,seed=0,gamma=0.9", "garnet:S=20,A=4,b=3,seed=0"),  # a default is not repeated
])
def test_ids_keep_every_parameter_off_its_default(spec, want):
    assert make(spec).name == want


def test_every_parameter_off_its_default_is_in_the_id():
    for name, fn in REGISTRY.items():
        for key in inspect.signature(fn).parameters:
            if (name, key) in REFUSED:
                continue
            pid = make(f"{name}:{key}={OFF_DEFAULT[key]}").name
            assert f"{key}=" in pid, (name, key, pid)
    assert "theta=" in make("bandit:r=1;0,theta=0.5;0").name


def test_suite_cells_that_differ_only_in_gamma_or_horizon_have_distinct_ids():
    horizon = [s for s in SUITES.values() if s.id.startswith("horizon/")]
    assert len(horizon) >= 10
    names = [make(s.problem).name for s in horizon]
    assert len(set(names)) == len(names), names
    # and across every suite: two suites share a problem id only if they share the problem
    by_name: dict = {}
    for s in SUITES.values():
        by_name.setdefault(make(s.problem).name, set()).add(s.problem)
    for pid, specs in by_name.items():
        probs = [make(sp) for sp in specs]
        assert all(_same(probs[0], q) for q in probs[1:]), (pid, specs)


def test_a_file_problem_is_named_by_its_path(tmp_path):
    from pgbench.problems import save_npz
    path = str(tmp_path / "mine.npz")
    save_npz(path, make("garnet:S=3,A=2,b=2,seed=0,horizon=4"))
    p = make(path)
    assert p.name == path and _same(make(p.name), p)

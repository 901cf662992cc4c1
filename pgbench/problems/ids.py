"""Canonical problem ids: ``name:key=value,...`` that, given back to ``make``, build the same problem.

A built-in factory names its problem with :func:`problem_id`: the parameters it always shows
(``S``, ``A``, ``b``, ``seed`` of a garnet) and every other parameter whose value differs from
its default (``gamma``, ``horizon``, ``noise`` ...), in the factory's signature order. So
``garnet:S=20,A=4,b=3,seed=0,horizon=20`` keeps its horizon, ``chain:n=6,gamma=0.9`` its
discount and ``frozen_lake:gamma=0.9`` its gamma, while the default problems keep their short
ids (``frozen_lake``, ``chain:n=6``). Floats are written with ``repr`` so that they read back
exactly.
"""
from __future__ import annotations

import inspect

import numpy as np


def format_value(v) -> str:
    """A parameter value as an id writes it (exactly readable back)."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return str(int(f)) + ".0" if f.is_integer() and abs(f) < 1e16 else repr(f)
    return str(v)


def problem_id(base: str, factory, values: dict, always: tuple = ()) -> str:
    """``base`` plus ``always`` parameters and every parameter of ``factory`` that is off its default."""
    sig = inspect.signature(factory)
    items = []
    for key, par in sig.parameters.items():
        if key not in values:
            continue
        v = values[key]
        if key in always or par.default is inspect.Parameter.empty or not _same(v, par.default):
            items.append(f"{key}={format_value(v)}")
    return base + (":" + ",".join(items) if items else "")


def _same(a, b) -> bool:
    try:
        return type(a) is type(b) and a == b or (not isinstance(a, str) and not isinstance(b, str) and float(a) == float(b))
    except (TypeError, ValueError):
        return False

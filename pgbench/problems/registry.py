"""Problem ids: ``name`` or ``name:key=value,key=value`` (bsuite-style), or a path to a ``.npz``."""
from __future__ import annotations

import decimal
import inspect
import os

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.problems import builtins as _b
from pgbench.problems import lqg as _lqg
from pgbench.problems import tokens as _tokens

REGISTRY = {
    "three_step_bandit": _b.three_step_bandit,
    "boltzmann_bandit": _b.boltzmann_bandit,
    "bandit": _b.bandit,
    "garnet": _b.garnet,
    "chain": _b.chain,
    "gridworld": _b.gridworld,
    "frozen_lake": _b.frozen_lake,
    "gaussian_toy": _b.gaussian_toy,
    "categorical": _b.categorical,
    "lqg": _lqg.lqg,
    "point_mass": _lqg.point_mass,
    "double_integrator": _lqg.double_integrator,
    "tokens": _tokens.tokens,
}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"garnet:S=20,A=4"`` -> ``("garnet", {"S": "20", "A": "4"})`` (values still strings)."""
    name, _, rest = spec.partition(":")
    params = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, val = item.partition("=")
            if not eq or not key.strip():
                raise PGBenchError(f"malformed parameter {item!r} in {spec!r}: expected key=value")
            if key.strip() in params:
                raise PGBenchError(f"duplicate parameter {key.strip()!r} in {spec!r}")
            params[key.strip()] = val.strip()
    return name.strip(), params


def coerce(value: str, default, what: str):
    """Convert a parameter string to the type of its default."""
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError(value)
        if isinstance(default, (int, float)) and not np.isfinite(float(value)):
            raise PGBenchError(f"{what}: {value!r} is not a finite number")
        if isinstance(default, int):
            # exact: "1e9" is 10^9, and 2^53 + 1 is not rounded to 2^53 on the way through a float
            d = decimal.Decimal(value.strip())
            if d != d.to_integral_value():
                raise ValueError(value)
            return int(d)
        if isinstance(default, float):
            return float(value)
        return value
    except (ValueError, ArithmeticError) as exc:
        if isinstance(exc, PGBenchError):
            raise
        raise PGBenchError(f"{what}: cannot read {value!r} as {type(default).__name__}") from None


def bind_params(fn, params: dict, what: str) -> dict:
    sig = inspect.signature(fn)
    out = {}
    for key, val in params.items():
        if key not in sig.parameters:
            known = ", ".join(sig.parameters) or "none"
            raise PGBenchError(f"unknown parameter {key!r} for {what} (known: {known})")
        default = sig.parameters[key].default
        out[key] = coerce(val, default, f"parameter {key} of {what}") if default is not inspect._empty else val
    return out


def make(spec, theta=None):
    """Build a problem from an id (``garnet:S=20,A=4,b=3,seed=0``) or a ``.npz`` path."""
    from pgbench.problems.problem import MDPProblem
    if not isinstance(spec, str):
        if hasattr(spec, "kind"):
            return spec if theta is None else spec.with_theta(theta) if isinstance(spec, MDPProblem) else spec
        raise PGBenchError(f"a problem must be a name or a path; got {type(spec).__name__}")
    builtin = spec.partition(":")[0].strip() in REGISTRY
    # a built-in name wins over a same-named file or folder in the working directory
    if spec.endswith(".npz") or os.path.sep in spec or (os.path.exists(spec) and not builtin):
        from pgbench.problems.io import load_npz
        prob = load_npz(spec)
    else:
        name, params = parse_spec(spec)
        if name not in REGISTRY:
            raise PGBenchError(f"unknown problem {name!r}; known: {', '.join(sorted(REGISTRY))} (or a path to a .npz file)")
        fn = REGISTRY[name]
        prob = fn(**bind_params(fn, params, f"problem {name}"))
    if theta is not None:
        if isinstance(prob, MDPProblem):
            prob = prob.with_theta(theta)
        else:
            prob = type(prob)(**{**{k: getattr(prob, k) for k in prob.__dataclass_fields__}, "theta": theta})
    return prob


def describe() -> list[tuple[str, str, str]]:
    """(name, parameters with defaults, first docstring line) for each built-in problem."""
    rows = []
    for name, fn in REGISTRY.items():
        sig = inspect.signature(fn)
        ps = ",".join(f"{k}={v.default}" for k, v in sig.parameters.items())
        para = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
        doc = para.split(". ")[0].rstrip(".") + "."  # the first sentence, whole
        rows.append((name, ps, doc))
    return rows

"""Bring your own MDP: the ``.npz`` format of SPEC section 6."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.problem import MDPProblem

REQUIRED = ("P", "R", "rho0", "gamma")
OPTIONAL = ("horizon", "terminal", "reward_std", "features", "theta")


def load_npz(path: str) -> MDPProblem:
    """Read ``P (S,A,S), R (S,A), rho0 (S), gamma`` and optionally ``horizon`` (0 = unbounded),
    ``terminal``, ``reward_std``, ``features`` (linear softmax) and ``theta``."""
    if not os.path.exists(path):
        raise PGBenchError(f"no such problem file: {path}")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a .npy file holds one bare array
            raise ValueError("it holds a single array, not named arrays (P, R, rho0, gamma, ...)")
        with z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PGBenchError(f"cannot read {path} as a .npz problem file: {exc}") from None
    if "kind" in data:
        kind = str(data["kind"].item()) if np.ndim(data["kind"]) == 0 else repr(data["kind"])
        if kind != "lqg":
            raise PGBenchError(f"{path}: unknown problem kind {kind!r} (known: lqg; without 'kind': a tabular MDP)")
        from pgbench.problems.lqg import from_arrays
        return from_arrays(data, path, os.path.splitext(os.path.basename(path))[0])
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise PGBenchError(f"{path} lacks required array(s) {', '.join(missing)} (needs P, R, rho0, gamma)")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise PGBenchError(f"{path} has unknown array(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED + OPTIONAL)}")
    if np.ndim(data["gamma"]) != 0:
        raise PGBenchError(f"{path}: gamma must be a scalar")
    horizon = None
    if "horizon" in data:
        if np.ndim(data["horizon"]) != 0:
            raise PGBenchError(f"{path}: horizon must be a scalar integer")
        h = data["horizon"].item()
        if not isinstance(h, (int, float)) or not np.isfinite(h) or h != int(h) or h < 0:
            raise PGBenchError(f"{path}: horizon must be a non-negative integer (0 = unbounded); got {h!r}")
        horizon = int(h) or None
    name = os.path.splitext(os.path.basename(path))[0]
    mdp = TabularMDP.from_dense(data["P"], data["R"], data["rho0"], data["gamma"].item(), horizon=horizon,
                                terminal=data.get("terminal"), reward_std=data.get("reward_std"), name=name)
    theta = data.get("theta")
    if "features" in data:
        return MDPProblem.linear(mdp, data["features"], theta=theta, name=name, path=path)
    return MDPProblem.tabular(mdp, theta=theta, name=name, path=path)


def save_npz(path: str, problem: MDPProblem, theta=None) -> None:
    """Write a problem in the format :func:`load_npz` reads (atomically)."""
    if getattr(problem, "kind", None) == "lqg":
        from pgbench.problems.lqg import to_arrays
        tmp = path + ".tmp.npz"
        np.savez(tmp, **to_arrays(problem, theta))
        os.replace(tmp, path)
        return
    mdp = problem.mdp
    arrays = dict(P=mdp.P, R=mdp.R, rho0=mdp.rho0, gamma=np.float64(mdp.gamma),
                  horizon=np.int64(mdp.horizon or 0), terminal=mdp.terminal,
                  theta=problem.resolve_theta(theta))
    if mdp.reward_noise == "gaussian":
        arrays["reward_std"] = mdp.reward_scale
    elif mdp.reward_noise == "uniform":
        raise PGBenchError("the .npz format stores Gaussian reward noise only (reward_std); this problem has uniform noise")
    if problem.policy.kind == "linear":
        arrays["features"] = problem.policy.features
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)

"""Bring your own MDP: the ``.npz`` format (:ref:`npz-format`)."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from pgbench import inputs
from pgbench.errors import PGBenchError
from pgbench.problems.mdp import TabularMDP
from pgbench.problems.problem import MDPProblem

REQUIRED = ("P", "R", "rho0", "gamma")
OPTIONAL = ("horizon", "terminal", "reward_std", "features", "theta", "theta_ref")


def load_npz(path: str) -> MDPProblem:
    """Read ``P (S,A,S), R (S,A), rho0 (S), gamma`` and optionally ``horizon`` (0 = unbounded),
    ``terminal``, ``reward_std``, ``features`` (linear softmax), ``theta`` and ``theta_ref`` (the
    reference policy of KL penalties; zeros, the uniform policy, when absent)."""
    if not os.path.exists(path):
        raise PGBenchError(f"no such problem file: {path}")
    _check_declared_sizes(path)
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
        if (isinstance(h, bool) or not isinstance(h, (int, float)) or not np.isfinite(h) or h != int(h)
                or h < 0):
            raise PGBenchError(f"{path}: horizon must be a non-negative integer (0 = unbounded); got {h!r}")
        horizon = int(h) or None
    name = os.path.splitext(os.path.basename(path))[0]
    mdp = TabularMDP.from_dense(data["P"], data["R"], data["rho0"], data["gamma"].item(), horizon=horizon,
                                terminal=data.get("terminal"), reward_std=data.get("reward_std"), name=name)
    theta = data.get("theta")
    if "features" in data:
        d = np.shape(data["features"])[-1] if np.ndim(data["features"]) == 3 else 0
        ref = data.get("theta_ref", np.zeros(d))
        return MDPProblem.linear(mdp, data["features"], theta=theta, name=name, theta_ref=ref, path=path)
    ref = data.get("theta_ref", np.zeros((mdp.S, mdp.A)))
    return MDPProblem.tabular(mdp, theta=theta, name=name, theta_ref=ref, path=path)


def _check_declared_sizes(path: str) -> None:
    """Read only the array headers: a small compressed file can declare arrays of any size,
    and loading them would allocate it all before any check."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0.0
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        continue
                    shape, _, dtype = read(f)
                n = float(np.prod(shape, dtype=float))
                # loading holds the array; P is then copied into floats, a mask and an argsort
                total += n * dtype.itemsize + (4 * 8 * n if info.filename == "P.npy" else 8 * n)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError):
        return  # not a readable .npz: np.load below says so
    inputs.require_memory(total, f"the arrays {path} declares", "a .npz problem holds dense arrays; "
                          "build large problems in Python with TabularMDP.from_sparse")


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
    if problem.theta_ref is not None:
        arrays["theta_ref"] = problem.theta_ref
    if mdp.reward_noise == "gaussian":
        arrays["reward_std"] = mdp.reward_scale
    elif mdp.reward_noise == "uniform":
        raise PGBenchError("the .npz format stores Gaussian reward noise only (reward_std); this problem has uniform noise")
    if problem.policy.kind == "linear":
        arrays["features"] = problem.policy.features
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)

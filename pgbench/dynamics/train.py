"""Learning dynamics: what an estimator does to training, from exact quantities.

``train(problem, estimators, optimizer=..., lr=..., steps=T, runs=R, batch=N, seed=S)`` runs R
independent learning runs of T updates per estimator (every update from a fresh batch of N
episodes at the current theta, common random numbers across estimators) in the numba kernel
:func:`pgbench.kernels.train.train_runs`, and summarises them: the exact J of every run at the
recorded steps (mean and quantiles over runs), the fraction of runs stuck below a threshold
with its Wilson interval, the regret of every run with mean, median and IQM and their
bootstrap intervals, and, along the mean path, the exact noise-to-signal ratio, the cosine of
the estimate to the exact gradient and the exact gradient norm.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pgbench import inputs
from pgbench.errors import PGBenchError
from pgbench.estimators.catalogue import parse
from pgbench.problems.registry import make

OPTIMIZERS = ("sgd", "npg", "adam")
TRAIN_ESTIMATORS = ("exact", "reinforce", "reinforce_rtg", "const_baseline", "batch_mean_baseline", "rloo",
                    "optimal_const_baseline", "value_baseline", "true_advantage")
"""Estimators a learning run can use (``exact``: the exact gradient, the deterministic path)."""
RECORD_ALL = 1000
"""Every step is recorded up to this many steps; beyond, about this many evenly spaced ones (with 0 and T)."""
KEEP_PATHS = 100
"""Runs whose whole policy path is kept (the mean path of the NSR, the simplex figure)."""
BOOTSTRAP = 1000
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
ADAM_BETAS = (0.9, 0.999, 1e-8)


def recorded_steps(T: int) -> np.ndarray:
    """Steps at which the exact J is recorded: all of 0..T up to :data:`RECORD_ALL`, else about
    that many evenly spaced (always 0 and T)."""
    if T <= RECORD_ALL:
        return np.arange(T + 1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, T, RECORD_ALL + 1)).astype(np.int64))


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (95% by default)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1.0 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if k == 0 else max(0.0, c - h)  # exact ends: rounding must not move them off 0 and 1
    hi = 1.0 if k == n else min(1.0, c + h)
    return lo, hi


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle half (a quarter cut from each end, as scipy's trim_mean)."""
    x = np.sort(np.asarray(x, dtype=float), axis=axis)
    n = x.shape[axis]
    lo = int(0.25 * n)
    return np.take(x, np.arange(lo, n - lo), axis=axis).mean(axis=axis)


def _bootstrap(x: np.ndarray, seed: int) -> dict:
    """Mean, median and IQM of x with percentile bootstrap 95% intervals (rliable's reporting).

    A resample is the sorted sample with its draw counts, so its median and IQM come from the
    counts' cumulative sums (no sort per resample)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = x.size
    out = {"mean": float(x.mean()), "median": float(np.median(x)), "iqm": float(iqm(x))}
    if n < 2:
        for k in ("mean", "median", "iqm"):
            out[k + "_lo"] = out[k + "_hi"] = out[k]
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(BOOTSTRAP, n)) + (np.arange(BOOTSTRAP) * n)[:, None]
    cnt = np.bincount(idx.ravel(), minlength=BOOTSTRAP * n).reshape(BOOTSTRAP, n).astype(np.float64)
    hi_ = np.cumsum(cnt, axis=1)
    lo_ = hi_ - cnt

    def window(a, b):  # mean of the sorted resample's positions a..b-1
        w = np.clip(np.minimum(hi_, b) - np.maximum(lo_, a), 0.0, None)
        return (w @ x) / (b - a)

    cut = int(0.25 * n)
    med = window(n // 2, n // 2 + 1) if n % 2 else window(n // 2 - 1, n // 2 + 1)
    for k, v in (("mean", (cnt @ x) / n), ("median", med), ("iqm", window(cut, n - cut))):
        out[k + "_lo"], out[k + "_hi"] = (float(q) for q in np.quantile(v, [0.025, 0.975]))
    return out


def optimal_J(mdp) -> float:
    """J* of the MDP (finite horizon: backward induction; unbounded: value iteration to 1e-12)."""
    S, A, K = mdp.next_prob.shape
    term = mdp.terminal
    nxt = lambda V: np.einsum("sak,sak->sa", mdp.next_prob, V[mdp.next_idx])  # noqa: E731
    V = np.zeros(S)
    if mdp.horizon is not None:
        for _ in range(mdp.horizon):
            V = np.where(term, 0.0, (mdp.R + mdp.gamma * nxt(V)).max(axis=1))
    else:
        for _ in range(100_000):
            Vn = np.where(term, 0.0, (mdp.R + mdp.gamma * nxt(V)).max(axis=1))
            if np.max(np.abs(Vn - V)) <= 1e-13 * max(1.0, np.max(np.abs(Vn))):
                V = Vn
                break
            V = Vn
    return float(mdp.rho0 @ V)


@dataclass
class TrainResult:
    """What :func:`train` returns. ``summary``: one row per estimator; ``curves``: one row per
    (estimator, recorded step); ``J``: (estimators, runs, recorded steps) exact J of every run;
    ``regret``: (estimators, runs); ``grad_norm``, ``cosine``: (estimators, recorded steps), means over
    runs of the exact ||grad J|| and of cos(estimate, grad J); ``paths``: (estimators, kept runs, recorded steps, S, A) policies."""

    problem: str
    estimators: list
    config: dict
    t: np.ndarray
    J: np.ndarray
    regret: np.ndarray
    grad_norm: np.ndarray
    cosine: np.ndarray
    paths: np.ndarray
    J_star: float
    summary: pd.DataFrame
    curves: pd.DataFrame
    seconds: float
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"problem": self.problem, "config": self.config, "J_star": self.J_star,
                "seconds": self.seconds, "summary": _records(self.summary), "curves": _records(self.curves)}

    def write(self, out_dir: str) -> list[str]:
        """Write ``train.json``, ``summary.csv``, ``curves.csv`` and ``regret.csv`` (atomically) into out_dir."""
        os.makedirs(out_dir, exist_ok=True)
        reg = pd.DataFrame({e: self.regret[j] for j, e in enumerate(self.estimators)})
        reg.insert(0, "run", np.arange(self.regret.shape[1]))
        files = {"train.json": json.dumps(self.to_dict(), indent=1) + "\n",
                 "summary.csv": self.summary.to_csv(index=False), "curves.csv": self.curves.to_csv(index=False),
                 "regret.csv": reg.to_csv(index=False)}
        paths = []
        for name, text in files.items():
            p = os.path.join(out_dir, name)
            _atomic_write(p, text)
            paths.append(p)
        return paths


def _records(df: pd.DataFrame) -> list:
    return [{k: _plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _atomic_write(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_lr(lr) -> float:
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise PGBenchError(f"the step size (lr) must be a number; got {lr!r}") from None
    if isinstance(lr, bool) or not np.isfinite(v) or v < 0:
        raise PGBenchError(f"the step size (lr) must be finite and >= 0; got {lr!r}")
    return v


def _specs(estimators, prob) -> list:
    if isinstance(estimators, str):
        estimators = [estimators]
    if not isinstance(estimators, (list, tuple)) or not estimators:
        raise PGBenchError("give at least one estimator (e.g. 'reinforce', or 'exact' for the exact gradient)")
    out = []
    for e in estimators:
        if e == "exact":
            out.append(None)
            continue
        sp = parse(e, prob.kind)
        if sp.name not in TRAIN_ESTIMATORS:
            raise PGBenchError(f"estimator {sp.label} is not available for learning runs; "
                               f"available: {', '.join(TRAIN_ESTIMATORS)}")
        if sp.name == "optimal_const_baseline" and prob.mdp.horizon != 1:
            raise PGBenchError("optimal_const_baseline in learning runs needs a one-step problem (a bandit): "
                               "its b* is recomputed exactly at every update")
        out.append(sp)
    labels = ["exact" if s is None else s.label for s in out]
    if len(set(labels)) != len(labels):
        raise PGBenchError(f"estimator given twice: {labels}")
    return out


def train(problem, estimators, optimizer: str = "sgd", lr: float = 0.1, steps: int = 100, runs: int = 100,
          batch: int = 1, seed: int = 0, stuck_below=None, theta=None, nsr_points: int = 50,
          keep_paths: int = KEEP_PATHS) -> TrainResult:
    """R = ``runs`` learning runs of T = ``steps`` updates for every estimator (see the module docstring).

    ``optimizer``: ``sgd`` (theta += lr g), ``npg`` (theta += lr F^+ g with the exact Fisher at the
    current theta, the minimum-norm natural direction) or ``adam`` (betas 0.9, 0.999, eps 1e-8).
    ``stuck_below``: a run is stuck when its final exact J is <= this (None: no p_stuck).
    ``nsr_points``: at how many recorded steps the exact NSR is computed along the mean path (the
    mean policy of the first ``keep_paths`` runs; 0: none).

    >>> res = train("bandit:r=1;0.7;0,theta=0;3;5", ["value_baseline"], optimizer="npg", lr=0.025,
    ...             steps=1000, runs=100, stuck_below=0.75)  # doctest: +SKIP
    """
    from pgbench.kernels import train as K
    from pgbench.kernels.rng import cell_key, seed_u64
    prob = make(problem)
    if prob.kind != "mdp":
        raise PGBenchError(f"learning runs need an MDP problem (a bandit, garnet, gridworld, ...); {prob.name} is a "
                           f"{prob.kind} problem")
    if getattr(prob.policy, "kind", "") != "tabular":
        raise PGBenchError("learning runs use the tabular softmax policy; this problem has a "
                           f"{getattr(prob.policy, 'kind', type(prob.policy).__name__)} policy")
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise PGBenchError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    lr = _check_lr(lr)
    T = inputs.integer("steps", steps, 1)
    R = inputs.integer("runs", runs, 1)
    N = inputs.integer("batch size N", batch, 1)
    seed = inputs.seed(seed)
    nsr_points = inputs.integer("nsr_points", nsr_points, 0)
    keep = min(inputs.integer("keep_paths", keep_paths, 0), R)
    if stuck_below is not None:
        stuck_below = inputs.real_scalar("stuck_below", stuck_below)
    th0 = np.ascontiguousarray(prob.resolve_theta(theta), dtype=np.float64)
    specs = _specs(estimators, prob)
    labels = ["exact" if s is None else s.label for s in specs]
    if N < 2 and any(s is not None and s.name == "rloo" for s in specs):
        raise PGBenchError("rloo needs a batch of N >= 2 episodes")
    mdp = prob.mdp
    S, A, Ksucc = mdp.next_prob.shape
    finite = mdp.horizon is not None
    H = int(mdp.episode_cap)
    nT = int(mdp.horizon) if finite else 1
    E = len(specs)
    rec = recorded_steps(T)
    n_rec = rec.size
    inputs.require_memory(8.0 * E * R * n_rec * 3 + 8.0 * E * keep * n_rec * S * A
                          + 8.0 * E * R * (S * A * 12 + 3 * N * H + S * S),
                          f"learning runs ({E} estimator(s) x {R} runs x {n_rec} recorded steps)",
                          "use fewer runs, steps or estimators")
    codes = np.array([K.EXACT if s is None else s.info.code for s in specs], dtype=np.int64)
    fpar = np.array([0.0 if s is None else float(s.p.get("b", s.p.get("shift", 0.0))) for s in specs])
    opt = {"sgd": K.SGD, "npg": K.NPG, "adam": K.ADAM}[optimizer]
    rho_cum = np.cumsum(mdp.rho0)
    ncum = np.cumsum(mdp.next_prob, axis=2)
    noise_kind = {"none": 0, "gaussian": 1, "uniform": 2}[mdp.reward_noise]
    noise_scale = np.ascontiguousarray(mdp.reward_scale if mdp.reward_scale is not None else np.zeros((S, A)),
                                       dtype=np.float64)
    J_star = optimal_J(mdp)
    cell = np.uint64(cell_key("train", prob.name, th0, N) % (1 << 64))
    out_J = np.full((E, R, n_rec), np.nan)
    out_gn = np.full((E, n_rec), np.nan)  # means over runs
    out_cos = np.full((E, n_rec), np.nan)
    out_regret = np.zeros((E, R))
    out_pi = np.full((E, keep, n_rec, S, A), np.nan)
    b1, b2, eps = ADAM_BETAS
    t0 = time.perf_counter()
    for e in range(E):  # one estimator at a time: the per-run gradient norms and cosines are reduced at once
        gn = np.empty((1, R, n_rec))  # every recorded step is written (or the job stops with an error)
        cos = np.empty((1, R, n_rec))
        err = np.zeros((1, R, 2), dtype=np.int64)
        K.train_runs(seed_u64(seed), cell, 0, R, T, N, codes[e:e + 1], fpar[e:e + 1], opt, lr, b1, b2, eps, th0,
                     mdp.rho0, rho_cum, mdp.next_idx, mdp.next_prob, ncum, mdp.R, noise_kind, noise_scale,
                     mdp.terminal, mdp.gamma, finite, H, nT, rec, keep, J_star, out_J[e:e + 1], gn, cos,
                     out_regret[e:e + 1], out_pi[e:e + 1], err)
        bad = np.flatnonzero(err[0, :, 0] == K.ERR_NPG_SINGULAR)
        if bad.size:
            r = bad[0]
            raise PGBenchError(f"npg: the exact Fisher is singular along a direction the update of {labels[e]} "
                               f"needs (run {r}, step {err[0, r, 1]}: a state of zero visitation or an action of "
                               "probability 0 that the estimate moves); use sgd or adam")
        out_gn[e] = gn[0].mean(axis=0)
        fin = np.isfinite(cos[0])
        n_fin = fin.sum(axis=0)
        out_cos[e] = np.where(n_fin > 0, np.where(fin, cos[0], 0.0).sum(axis=0) / np.maximum(n_fin, 1), np.nan)
    secs = time.perf_counter() - t0
    if not np.all(np.isfinite(out_J)):
        raise PGBenchError("the exact J became non-finite during training (the policy evaluation failed or theta "
                           "overflowed); use a smaller step size")
    config = {"optimizer": optimizer, "lr": lr, "steps": T, "runs": R, "batch": N, "seed": seed,
              "stuck_below": stuck_below, "estimators": labels, "theta0": th0.tolist()}
    res = TrainResult(prob.name, labels, config, rec, out_J, out_regret, out_gn, out_cos, out_pi, J_star,
                      pd.DataFrame(), pd.DataFrame(), secs)
    _summarise(res, prob, specs, N, stuck_below, nsr_points, seed)
    return res


def one_estimate(problem, estimator: str, theta, batch: int, seed: int = 0, cell: int = 0, run: int = 0) -> np.ndarray:
    """The estimate one update of a learning run computes at ``theta`` from the streams of
    ``(seed, cell, run)`` (a learning run's update k uses cell ``cell_key(...) + k``)."""
    from pgbench.kernels import train as K
    from pgbench.kernels.rng import seed_u64
    prob = make(problem)
    sp = _specs([estimator], prob)[0]
    if sp is None:
        raise PGBenchError("one_estimate takes a sampled estimator, not 'exact'")
    mdp = prob.mdp
    S, A, _ = mdp.next_prob.shape
    th = np.ascontiguousarray(prob.resolve_theta(theta), dtype=np.float64)
    finite = mdp.horizon is not None
    noise_scale = np.ascontiguousarray(mdp.reward_scale if mdp.reward_scale is not None else np.zeros((S, A)),
                                       dtype=np.float64)
    return K.batch_estimate(seed_u64(seed), np.uint64(cell), np.uint64(run), int(batch), sp.info.code,
                            float(sp.p.get("b", sp.p.get("shift", 0.0))), th, mdp.rho0, np.cumsum(mdp.rho0),
                            mdp.next_idx, mdp.next_prob, np.cumsum(mdp.next_prob, axis=2), mdp.R,
                            {"none": 0, "gaussian": 1, "uniform": 2}[mdp.reward_noise], noise_scale, mdp.terminal,
                            mdp.gamma, finite, int(mdp.episode_cap), int(mdp.horizon) if finite else 1)


def _summarise(res: TrainResult, prob, specs, N: int, stuck_below, nsr_points: int, seed: int) -> None:
    E, R, n_rec = res.J.shape
    rows, curves = [], []
    nsr_idx = (np.unique(np.round(np.linspace(0, n_rec - 1, nsr_points)).astype(int)) if nsr_points > 0
               else np.zeros(0, int))
    for e, lab in enumerate(res.estimators):
        J = res.J[e]
        q = np.quantile(np.ascontiguousarray(J.T), QUANTILES, axis=1)  # contiguous rows: a faster partition
        nsr = np.full(n_rec, np.nan)
        if res.paths.shape[1] > 0:
            nsr[nsr_idx] = _nsr_along(prob, specs[e], N, res.paths[e][:, nsr_idx])
        cur = {"estimator": lab, "t": res.t, "J_mean": J.mean(axis=0)}
        for qq, v in zip(QUANTILES, q):
            cur[f"J_q{int(round(qq * 100)):02d}"] = v
        if stuck_below is not None:
            cur["p_stuck"] = (J <= stuck_below).mean(axis=0)
        cur["grad_norm"] = res.grad_norm[e]
        cur["cosine"] = res.cosine[e]
        cur["exact_nsr"] = nsr
        curves.append(pd.DataFrame(cur))
        final = J[:, -1]
        row = {"problem": res.problem, "estimator": lab, "optimizer": res.config["optimizer"], "lr": res.config["lr"],
               "steps": res.config["steps"], "runs": R, "batch": N, "J_star": res.J_star, "J0": float(J[0, 0]),
               "J_final_mean": float(final.mean()), "J_final_median": float(np.median(final))}
        if stuck_below is not None:
            k = int((final <= stuck_below).sum())
            lo, hi = wilson(k, R)
            row.update({"stuck_below": stuck_below, "p_stuck": k / R, "p_stuck_lo": lo, "p_stuck_hi": hi})
        else:
            row.update({"stuck_below": np.nan, "p_stuck": np.nan, "p_stuck_lo": np.nan, "p_stuck_hi": np.nan})
        b = _bootstrap(res.regret[e], seed + e)
        row.update({f"regret_{k}": v for k, v in b.items()})
        row["seconds"] = res.seconds
        rows.append(row)
    res.summary = pd.DataFrame(rows)
    res.curves = pd.concat(curves, ignore_index=True)


ONE_STEP_NSR = ("reinforce", "reinforce_rtg", "const_baseline", "optimal_const_baseline", "value_baseline",
                "true_advantage")


def one_step_nsr(mdp, spec, N: int, pis: np.ndarray) -> np.ndarray:
    """Exact NSR of a per-sample estimator on a one-step problem, for policies ``pis`` (n, S, A):
    the estimate is psi (e_a - pi(.|s)) with psi = r - b, so E||g||^2 = sum rho pi E[psi^2] ||e_a - pi||^2
    and tr Var = (E||g||^2 - ||grad J||^2) / N."""
    R, rho = mdp.R[None], mdp.rho0[None, :, None]
    var = mdp.reward_variance()[None]
    V = np.sum(pis * R, axis=2, keepdims=True)
    zn = 1.0 - 2.0 * pis + np.sum(pis ** 2, axis=2, keepdims=True)
    grad = rho * pis * (R - V)
    if spec.name == "true_advantage":
        m2 = (R - V) ** 2
    else:
        if spec.name in ("reinforce", "reinforce_rtg"):
            b = np.zeros_like(V)
        elif spec.name == "const_baseline":
            b = np.full_like(V, spec.p["b"])
        elif spec.name == "value_baseline":
            b = V + spec.p.get("shift", 0.0)
        else:  # optimal_const_baseline: b* = E[R ||z||^2] / E[||z||^2], plus the shift
            w = rho * pis * zn
            b = (np.sum(w * R, axis=(1, 2)) / np.sum(w, axis=(1, 2)))[:, None, None] + spec.p.get("shift", 0.0)
        m2 = (R - b) ** 2 + var
    g1 = np.sum(rho * pis * m2 * zn, axis=(1, 2))
    g2 = np.sum(grad ** 2, axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g2 > 0, (g1 - g2) / N / g2, np.nan)


def _nsr_along(prob, spec, N: int, pis: np.ndarray) -> np.ndarray:
    """Exact NSR at the mean policy over the kept runs, at each given recorded step (NaN where the
    exact moments do not cover the estimator)."""
    from pgbench.exact.moments import exact_moments
    out = np.full(pis.shape[1], np.nan)
    if spec is None:
        return np.zeros(pis.shape[1])
    if prob.mdp.horizon == 1 and spec.name in ONE_STEP_NSR:
        return one_step_nsr(prob.mdp, spec, N, pis.mean(axis=0))
    for i in range(pis.shape[1]):
        pbar = pis[:, i].mean(axis=0)
        with np.errstate(divide="ignore"):
            th = np.log(np.maximum(pbar, 1e-300))
        try:
            em = exact_moments(prob, [spec], batch=N, theta=th)
        except PGBenchError:
            return out
        g2 = float(np.sum(em.target[0] ** 2))
        out[i] = em.variance[0] / g2 if g2 > 0 else np.nan
    return out

"""One cell of a suite: measure it and make its JSON-ready record (rows, paired comparisons,
provenance, exact extras). Run in this process by :mod:`pgbench.suites.runner` and on cluster workers
by :mod:`pgbench.suites.distributed`, which both import it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import time

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.suites.registry import Suite, get_suite
from pgbench.suites.store import to_jsonable

SCATTER_EPISODES = 1500
LOO_ESTIMATORS = ("rloo", "w_baseline_loo", "time_baseline_loo")


def suite_theta(suite: Suite, problem):
    """The parameters a suite evaluates at: the problem's own, zeros, or N(0, 1) from a seed."""
    if suite.theta is None:
        return None
    shape = problem.policy.theta_shape if problem.kind == "mdp" else problem.theta_shape
    if suite.theta == "zeros":
        return np.zeros(shape)
    if suite.theta.startswith("random:"):
        return np.random.default_rng(int(suite.theta.split(":")[1])).normal(size=shape)
    raise PGBenchError(f"suite {suite.id}: theta must be None, 'zeros' or 'random:SEED'")


def cell_id(suite: Suite, N: int) -> str:
    """``suite/N=16``, or ``suite/G=4`` for a grouped suite (whose cells are group sizes)."""
    return f"{suite.id}/G={N}" if suite.groups else f"{suite.id}/N={N}"


def suite_definition(suite: Suite, quick: bool) -> str:
    """A hash of what a suite's cells measure (problem, theta, estimators, trials): a cell made
    under another definition of the suite must not be resumed into this one."""
    what = [suite.problem, suite.theta, list(suite.estimators), suite.n_trials(quick), bool(suite.proxy)]
    if suite.groups:
        what.append(suite.groups)
    if suite.train is not None:
        what.append(repr(suite.train))
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def run_provenance() -> dict:
    """What a run's cells must share: the pgbench version and the sampler's fingerprint."""
    import pgbench
    from pgbench.measure.fingerprint import sampler_fingerprint
    return {"pgbench": pgbench.__version__, "sampler": sampler_fingerprint()}


def cell_provenance(suite: Suite, N: int, quick: bool, seed: int, K: int) -> dict:
    return {"suite": suite.id, "cell": cell_id(suite, N), "seed": seed, "trials": K, "quick": bool(quick),
            "definition": suite_definition(suite, quick), **run_provenance()}


def run_cell_record(suite_id: str, N: int, quick: bool, seed: int, backend: str = "cpu") -> dict:
    """Measure one cell of a suite; a JSON-ready record (rows, paired comparisons, diagnostics)."""
    from pgbench.problems import make
    from pgbench.measure.measure import measure
    suite = get_suite(suite_id)
    if suite.train is not None:  # learning dynamics: runs, summarised by pgbench.suites.dynamics
        from pgbench.suites.dynamics import run_train_record
        return to_jsonable(run_train_record(suite, N, quick, seed, cell_provenance(suite, N, quick, seed,
                                                                                   suite.n_trials(quick))))
    value = N
    N, G = suite.cell_shape(value)
    prob = make(suite.problem)
    theta = suite_theta(suite, prob)
    # leave-one-out estimators need a second episode in the batch (group); at 1 they sit the cell out
    ests = [e for e in suite.estimators if (G or N) >= 2 or e.split(":")[0] not in LOO_ESTIMATORS]
    t0 = time.time()
    # objectives and user estimators run on the CPU whatever the run's backend
    be = backend if prob.kind == "mdp" else "cpu"
    with _compile_timer() as compiled:  # a cold cell compiles kernels: its wall time says how much
        df = measure(prob, ests, batch=N, trials=suite.n_trials(quick), seed=seed, theta=theta, backend=be,
                     proxy=suite.proxy and N >= 2, group=G)
    from pgbench.measure.cost import add_own_costs
    t_own = time.time()
    add_own_costs(df, prob, N, theta, be, group=G)  # each estimator's own time, so efficiency ranks by what it costs
    t_own = time.time() - t_own
    rec = {"suite": suite.id, "cell": cell_id(suite, value), "N": N, **({"G": G} if G else {}), "K": suite.n_trials(quick),
           "seed": seed,
           "quick": quick, "tags": list(suite.tags), "problem": prob.name, "figures": list(suite.figures),
           "rows": df.to_dict(orient="records"), "paired": list(df.attrs["paired"]),
           "wall_seconds": time.time() - t0 - t_own, "own_cost_seconds": t_own,
           "compile_seconds": compiled.seconds,
           "provenance": cell_provenance(suite, value, quick, seed, suite.n_trials(quick))}
    if prob.kind == "mdp":
        from pgbench.exact import exact
        gt = exact(prob, theta)
        rec["exact"] = {"J": gt.J, "grad_norm": gt.grad_norm, "truncated_mass": gt.truncated_mass,
                       "truncated_J": gt.truncated_J}
    if "variance_decomposition" in suite.figures and prob.kind == "mdp":
        rec["variance_decomposition"] = exact_decomposition(prob, ests, N, theta)
    if "length_profile" in df.attrs:
        rec["length_profile"] = {lab: {str(n): w for n, w in prof.items()} for lab, prof in df.attrs["length_profile"].items()}
    if "proxy" in df.attrs:
        rec["proxy"] = df.attrs["proxy"]
        from pgbench.measure.engine import episode_samples
        rec["scatter"] = episode_samples(prob, theta, n=SCATTER_EPISODES, seed=seed)
    return to_jsonable(rec)


class _Compiled:
    seconds = 0.0


@contextlib.contextmanager
def _compile_timer():
    """Seconds numba spends compiling (cache misses, nested compiles counted once) in the block."""
    out = _Compiled()
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - numba is a dependency
        yield out
        return
    tl = event.TimingListener()
    with event.install_listener("numba:compile", tl):
        try:
            yield out
        finally:
            out.seconds = float(tl.duration) if tl.done else 0.0


def exact_decomposition(prob, estimators, N: int, theta) -> list:
    """The exact variance split (state, action, noise) of the estimators the moment DP splits
    (the per-step ones), as JSON-ready rows; [] when none applies or the DP is over its budget."""
    from pgbench.estimators.catalogue import parse
    from pgbench.exact import dp
    from pgbench.exact.moments import variance_decomposition
    from pgbench.measure.measure import EXACT_DP_WORK
    specs = [parse(e) for e in estimators]
    ok = [sp.label for sp in specs if sp.name in dp.TRACE and dp.dp_supports(sp)]
    if not ok or len(ok) * dp.dp_work(prob) > EXACT_DP_WORK:
        return []
    return variance_decomposition(prob, ok, batch=N, theta=theta).to_dict(orient="records")

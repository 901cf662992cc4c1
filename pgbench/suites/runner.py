"""Running suites: cells in order, each written as soon as it finishes; ``resume`` skips
finished cells. The same engine serves ``pgbench run`` and the pytest plugin."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from pgbench.errors import PGBenchError
from pgbench.suites.registry import Suite, get_suite, select
from pgbench.suites.store import RunDir, to_jsonable

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
    return f"{suite.id}/N={N}"


def run_cell_record(suite_id: str, N: int, quick: bool, seed: int, backend: str = "cpu") -> dict:
    """Measure one cell of a suite; a JSON-ready record (rows, paired comparisons, diagnostics)."""
    from pgbench.problems import make
    from pgbench.measure.measure import measure
    suite = get_suite(suite_id)
    prob = make(suite.problem)
    theta = suite_theta(suite, prob)
    # leave-one-out estimators need a second episode in the batch; at N = 1 they sit the cell out
    ests = [e for e in suite.estimators if N >= 2 or e.split(":")[0] not in LOO_ESTIMATORS]
    t0 = time.time()
    # objectives and user estimators run on the CPU whatever the run's backend
    be = backend if prob.kind == "mdp" else "cpu"
    df = measure(prob, ests, batch=N, trials=suite.n_trials(quick), seed=seed, theta=theta, backend=be,
                 proxy=suite.proxy and N >= 2)
    from pgbench.measure.cost import add_own_costs
    t_own = time.time()
    add_own_costs(df, prob, N, theta, be)  # each estimator's own time, so efficiency ranks by what it costs
    t_own = time.time() - t_own
    rec = {"suite": suite.id, "cell": cell_id(suite, N), "N": N, "K": suite.n_trials(quick), "seed": seed,
           "quick": quick, "tags": list(suite.tags), "problem": prob.name, "figures": list(suite.figures),
           "rows": df.to_dict(orient="records"), "paired": list(df.attrs["paired"]),
           "wall_seconds": time.time() - t0 - t_own, "own_cost_seconds": t_own}
    if prob.kind == "mdp":
        from pgbench.exact import exact
        gt = exact(prob, theta)
        rec["exact"] = {"J": gt.J, "grad_norm": gt.grad_norm, "truncated_mass": gt.truncated_mass,
                       "truncated_J": gt.truncated_J}
    if "proxy" in df.attrs:
        rec["proxy"] = df.attrs["proxy"]
        from pgbench.measure.engine import episode_samples
        rec["scatter"] = episode_samples(prob, theta, n=SCATTER_EPISODES, seed=seed)
    return to_jsonable(rec)


def kernels_cached() -> bool:
    """Whether numba's on-disk cache already holds the MDP sampling kernels (else the first cell
    compiles them, a minute or two). A heuristic: the cache index files exist."""
    try:
        from pgbench.kernels import mdp
        return all(os.path.exists(getattr(mdp, name)._cache._cache_file._index_path)
                   for name in ("_batch_stats", "_score_weights"))
    except Exception:  # a numba without these internals: say nothing rather than guess
        return True


def _say(msg: str) -> None:
    print(f"pgbench: {msg}", file=sys.stderr, flush=True)


def plan(suites: list[Suite], quick: bool) -> list[tuple[str, int]]:
    return [(s.id, N) for s in suites for N in s.cells(quick)]


def run(suite_ids=None, quick: bool = False, out: str | None = None, seed: int = 0, resume: str | None = None,
        progress: bool | None = None, executor=None, report: bool = True, backend: str = "cpu") -> str:
    """Run suites into a run directory (a new one, or the one ``resume`` names); returns its path.

    ``progress``: ``None`` (default) shows a progress bar on a terminal and otherwise (CI, a
    redirect) one line per finished cell on stderr; ``True`` forces the bar, ``False`` is silent.
    Either way (unless ``False``) stderr says when the kernels are being compiled and while the
    report is written."""
    from pgbench.measure.backend import resolve_backend
    backend = resolve_backend(backend)
    if resume:
        rd = RunDir.open(resume)
        meta = rd.meta()
        suite_ids, quick, seed = meta["suites"], meta["quick"], meta["seed"]
        rd.update_meta(status="running")
    else:
        suites = select(suite_ids)
        suite_ids = [s.id for s in suites]
        if out is None:
            out = os.path.join("results", time.strftime("run-%Y%m%d-%H%M%S") + ("-quick" if quick else ""))
        rd = RunDir.create(out, suite_ids, quick, seed)
        rd.update_meta(backend=backend)
    cells = [c for c in plan([get_suite(s) for s in suite_ids], quick) if not rd.has_cell(cell_id(get_suite(c[0]), c[1]))]
    quiet = progress is False
    lines = progress is None and not sys.stderr.isatty()  # no terminal: a line per cell instead of a bar
    if progress is None:
        progress = sys.stderr.isatty()
    if not quiet and cells and not kernels_cached():
        _say("compiling kernels (first run only: a minute or two; cached afterwards)")
    from tqdm import tqdm
    bar = tqdm(total=len(cells), desc="pgbench run", unit="cell", disable=not progress, file=sys.stderr)
    if lines:
        bar = _LineProgress(len(cells))
    try:
        if executor is None:
            for sid, N in cells:
                bar.set_postfix_str(f"{sid} N={N}")
                rd.write_cell(run_cell_record(sid, N, quick, seed, backend))
                bar.update()
        else:
            from pgbench.suites.distributed import run_on_executor
            run_on_executor(executor, rd, cells, quick, seed, bar, backend)
    except KeyboardInterrupt:
        bar.close()
        rd.finalize(status="interrupted")
        print(f"pgbench: interrupted; finished cells are kept in {rd.path} (continue with --resume {rd.path})",
              file=sys.stderr)
        raise
    bar.close()
    rd.finalize()
    if report:
        from pgbench.reports.report import write_report
        if not quiet:
            _say("writing the report (figures and tables)")
        write_report(rd.path, progress=None if quiet else _say)
    return rd.path


class _LineProgress:
    """The progress bar's interface, as one stderr line per finished cell (for logs and CI)."""

    def __init__(self, total: int):
        self.total, self.n, self.what, self.t0 = total, 0, "", time.time()
        self.last = self.t0

    def set_postfix_str(self, s: str) -> None:
        self.what = s

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.time()
        _say(f"cell {self.n}/{self.total} done: {self.what} ({now - self.last:.1f} s; {now - self.t0:.0f} s so far)")
        self.last = now

    def close(self) -> None:
        pass

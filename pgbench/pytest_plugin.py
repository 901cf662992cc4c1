"""pytest plugin shipped with pgbench (entry point ``pytest11``: ``pgbench``).

Fixtures
--------
``pgbench_cell``
    A callable ``measure_cell(suite_id, N, *, quick=None, trials=None, seed=None)`` that measures
    one cell of a registered suite (:mod:`pgbench.suites.registry`) inside pytest-benchmark's
    ``benchmark`` fixture (exactly once: ``benchmark.pedantic(rounds=1, iterations=1)``, so the
    timing is that of the whole cell) and returns the cell's record (the JSON-ready dict that
    :func:`pgbench.suites.runner.run_cell_record` makes). Its metrics go into
    ``benchmark.extra_info``, so ``--benchmark-json`` holds bias, variance and MSE beside the
    timings. With ``--pgbench-out DIR`` the record is also written into a run directory.
``pgbench_measure``
    A callable ``measure(problem, estimators, batch, trials, seed=0, theta=None, proxy=False)``:
    :func:`pgbench.measure.api.measure` inside ``benchmark``; returns its DataFrame. These
    measurements reach ``extra_info`` and the terminal summary but not the run directory
    (whose cells belong to suites).

Either fixture can be called once per test (a ``benchmark`` fixture times one thing).

Options
-------
``--pgbench-quick``     each suite's quick cells and trials (the CI subset)
``--pgbench-trials K``  override every cell's number of trials
``--pgbench-seed S``    the seed cells are measured with (default 0)
``--pgbench-out DIR``   write a run directory (``pgbench/suites/store.py`` format) into DIR:
                        each cell as it finishes, ``results.csv`` etc. at the end, and
                        pytest-benchmark's JSON as ``DIR/benchmark.json`` when
                        ``--benchmark-json`` is given

A terminal summary lists, per cell and estimator, bias norm, variance and MSE (each ± its
standard error) and the unbiasedness p-value that verdicts use (``p_robust``, from
:func:`pgbench.stats.metrics.verdict_p`) with the test it comes from, flagging (``!``) an
estimator that claims to be unbiased and has ``p < 1e-3``.

The plugin is loaded in every pytest session of an environment where pgbench is installed: at
import it imports nothing beyond pytest and the standard library (``import pgbench`` itself is
lazy: no numba, NumPy or pandas until a fixture or ``--pgbench-out`` needs them), and a session
that neither requests its fixtures nor passes ``--pgbench-out`` gets no output and no files from
it. pytest-benchmark is optional (``pip install "pgbench[pytest]"``): without it the fixtures
measure the same way, timed by the plugin itself, and nothing reaches ``--benchmark-json``.
"""
from __future__ import annotations

import dataclasses
import math
import os

import pytest

P_FLAG = 1e-3
"""The summary flags an estimator claimed unbiased whose p-value is below this."""

METRIC_KEYS = ("class", "unbiased", "bias_norm", "bias_norm_se", "bias_norm_lo", "bias_norm_hi", "rel_bias", "variance",
               "variance_se", "mse", "mse_se", "cosine", "cosine_se", "p_value", "p_bootstrap", "p_robust", "p_test", "test", "seconds", "episodes",
               "episodes_per_second", "own_seconds", "own_mse_x_seconds")
"""Per-estimator fields copied into ``benchmark.extra_info["metrics"]``."""

_STATE = pytest.StashKey["_State"]()


# ------------------------------------------------------------------------------------------------ options


def pytest_addoption(parser):
    group = parser.getgroup("pgbench", "pgbench: policy-gradient estimator suites")
    group.addoption("--pgbench-quick", action="store_true", default=False,
                    help="measure each suite's quick cells with its quick number of trials (the CI subset)")
    group.addoption("--pgbench-trials", type=int, default=None, metavar="K",
                    help="override the number of trials K of every measured cell")
    group.addoption("--pgbench-seed", type=int, default=0, metavar="S",
                    help="seed the cells are measured with (default 0)")
    group.addoption("--pgbench-out", default=None, metavar="DIR",
                    help="write a pgbench run directory into DIR (cells as they finish; results.csv, "
                         "meta.json and, with --benchmark-json, benchmark.json at the end)")


class _State:
    """Per-session state, kept in ``config.stash``."""

    def __init__(self, config, out: str | None):
        self.config = config
        self.quick = bool(config.getoption("pgbench_quick"))
        self.trials = config.getoption("pgbench_trials")
        self.seed = int(config.getoption("pgbench_seed"))
        self.out = os.path.abspath(os.path.expanduser(out)) if out else None
        self.rundir = None  # a RunDir, created when first needed
        self.lock = None  # its RunLock
        self.measured: list[dict] = []  # {"cell", "K", "seed", "seconds", "rows"} per measurement, for the summary
        self.suites: list[str] = []  # suites with a cell written to the run directory
        self.errors = 0  # measurements that raised
        self.report_error = None  # why the run directory's report could not be written

    @property
    def used(self) -> bool:
        return bool(self.measured or self.out or self.errors)

    def run_dir(self):
        if self.rundir is None:
            from pgbench.suites.runner import run_provenance
            from pgbench.suites.store import RunDir, RunLock
            self.lock = RunLock(self.out).acquire()  # held until the session ends
            self.rundir = RunDir.create(self.out, [], self.quick, self.seed, source="pytest",
                                        provenance=run_provenance(), trials=self.trials)
        return self.rundir


def pytest_configure(config):
    trials = config.getoption("pgbench_trials", None)
    if trials is not None and trials < 2:
        raise pytest.UsageError(f"--pgbench-trials must be an integer >= 2; got {trials}")
    out = config.getoption("pgbench_out", None)
    if out and hasattr(config, "workerinput"):
        out = None  # pytest-xdist worker: only a plain session writes a run directory
    if out and os.path.exists(os.path.join(out, "meta.json")):
        raise pytest.UsageError(f"--pgbench-out {out} already holds a pgbench run; choose another directory "
                                f"(or continue it with pgbench's resume)")
    if out:
        from pgbench.errors import PGBenchError
        from pgbench.suites.store import check_new_run_dir
        try:
            check_new_run_dir(out)
        except PGBenchError as exc:
            raise pytest.UsageError(f"--pgbench-out: {exc}") from None
    config.stash[_STATE] = _State(config, out)


def _state(config) -> _State:
    return config.stash[_STATE]


# ------------------------------------------------------------------------------------------------ fixtures


def _jsonable(v):
    from pgbench.suites.store import to_jsonable
    return to_jsonable(v)


def _cell_record(suite_id: str, N: int, quick: bool, seed: int, trials: int | None) -> dict:
    """The runner's record of one cell; ``trials`` (if given) overrides the suite's trials."""
    from pgbench.suites import registry, runner
    if trials is None:
        return runner.run_cell_record(suite_id, N, quick, seed)
    suite = registry.get_suite(suite_id)
    # run_cell_record reads the trials from the registry: substitute the suite for the call
    registry.SUITES[suite.id] = dataclasses.replace(suite, trials=int(trials), quick_trials=int(trials))
    try:
        return runner.run_cell_record(suite.id, N, quick, seed)
    finally:
        registry.SUITES[suite.id] = suite


class _Timer:
    """What the fixtures use of pytest-benchmark's ``benchmark`` when it is not installed: one
    call, its metrics kept in ``extra_info`` (which then goes nowhere)."""

    def __init__(self):
        self.extra_info: dict = {}
        self.group = None

    def pedantic(self, target, args=(), kwargs=None, rounds=1, iterations=1):
        return target(*args, **(kwargs or {}))


def _benchmark(request):
    """pytest-benchmark's ``benchmark`` fixture when that plugin is active, else a :class:`_Timer`."""
    try:
        return request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        return _Timer()


def _extra_info(rows: list[dict]) -> dict:
    return {r["estimator"]: {k: r.get(k) for k in METRIC_KEYS} for r in rows}


@pytest.fixture
def pgbench_cell(request):
    """``measure_cell(suite_id, N, *, quick=None, trials=None, seed=None) -> record``: measure one
    suite cell once under ``benchmark``; metrics into ``benchmark.extra_info``; the record into
    ``--pgbench-out`` if given. ``quick``/``trials``/``seed`` default to the command line's."""
    st = _state(request.config)
    benchmark = _benchmark(request)

    def measure_cell(suite_id: str, N: int, *, quick: bool | None = None, trials: int | None = None,
                     seed: int | None = None) -> dict:
        from pgbench.suites.registry import get_suite
        suite = get_suite(suite_id)
        q = st.quick if quick is None else bool(quick)
        k = st.trials if trials is None else trials
        s = st.seed if seed is None else int(seed)
        benchmark.group = f"pgbench {suite.id}"
        try:
            rec = benchmark.pedantic(_cell_record, args=(suite.id, int(N), q, s, k), rounds=1, iterations=1)
        except BaseException:
            st.errors += 1
            raise
        benchmark.extra_info.update(_jsonable({
            "pgbench": "cell", "cell": rec["cell"], "suite": rec["suite"], "problem": rec["problem"], "N": rec["N"],
            "K": rec["K"], "seed": rec["seed"], "quick": rec["quick"], "wall_seconds": rec["wall_seconds"],
            "exact": rec.get("exact"), "metrics": _extra_info(rec["rows"])}))
        st.measured.append({"cell": rec["cell"], "K": rec["K"], "seed": rec["seed"], "seconds": rec["wall_seconds"],
                            "rows": rec["rows"], "train": (rec.get("train") or {}).get("summary")})
        if st.out:
            st.run_dir().write_cell(rec)
            if rec["suite"] not in st.suites:
                st.suites.append(rec["suite"])
        return rec

    return measure_cell


@pytest.fixture
def pgbench_measure(request):
    """``measure(problem, estimators, batch, trials, seed=0, theta=None, proxy=False) -> DataFrame``:
    :func:`pgbench.measure.api.measure` once under ``benchmark``, metrics into ``extra_info``."""
    st = _state(request.config)
    benchmark = _benchmark(request)

    def measure(problem, estimators, batch: int, trials: int | None = None, seed: int | None = None, theta=None,
                proxy: bool = False):
        import time
        from pgbench.measure.api import measure as _measure
        from pgbench.problems import make
        prob = make(problem) if isinstance(problem, str) else problem
        k = trials if trials is not None else st.trials
        if k is None:
            raise TypeError("pgbench_measure needs trials (or --pgbench-trials)")
        s = st.seed if seed is None else int(seed)
        benchmark.group = f"pgbench {prob.name}"
        t0 = time.time()
        try:
            df = benchmark.pedantic(_measure, args=(prob, estimators), rounds=1, iterations=1,
                                    kwargs=dict(batch=batch, trials=k, seed=s, theta=theta, proxy=proxy))
        except BaseException:
            st.errors += 1
            raise
        rows = df.to_dict(orient="records")
        label = f"{prob.name}/N={batch}"
        benchmark.extra_info.update(_jsonable({
            "pgbench": "measure", "cell": label, "problem": prob.name, "N": batch, "K": k, "seed": s,
            "metrics": _extra_info(rows)}))
        st.measured.append({"cell": label, "K": k, "seed": s, "seconds": time.time() - t0, "rows": _jsonable(rows)})
        return df

    return measure


# ------------------------------------------------------------------------------------------------ session end


def _flagged(row: dict) -> bool:
    # the verdict's p-value (metrics.verdict_p): the one the reports and suites/test_suites.py use
    p = row.get("p_robust", row.get("p_value"))
    return bool(row.get("unbiased")) and p is not None and p < P_FLAG


def _benchmark_json_path(config):
    try:
        return config.getoption("benchmark_json")
    except ValueError:  # pytest-benchmark not loaded
        return None


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    st = config.stash.get(_STATE, None)
    if st is not None and st.used:
        output_json["pgbench"] = {"quick": st.quick, "trials": st.trials, "seed": st.seed, "out": st.out}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    # pytest-benchmark writes --benchmark-json in its pytest_sessionfinish hookwrapper, before the
    # wrapped (plain) implementations like this one run: the file is complete here.
    st = session.config.stash.get(_STATE, None)
    if st is None or not st.out or session.config.option.collectonly:
        return
    from pgbench.suites.store import atomic_write_bytes
    rd = st.run_dir()
    bj = _benchmark_json_path(session.config)
    if bj and os.path.isfile(bj):
        with open(bj, "rb") as f:
            atomic_write_bytes(os.path.join(rd.path, "benchmark.json"), f.read())
    rd.update_meta(suites=st.suites, pytest_exitstatus=int(exitstatus))
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        status = "interrupted"
    elif st.errors:
        status = "incomplete"  # a measurement raised: its cell is missing
    else:
        status = "complete"
    try:
        # as `pgbench run`: "complete" only once the report is written (a run without cells has none)
        rd.finalize(status="finishing" if status == "complete" and st.suites else status)
        if st.suites:
            from pgbench.reports.report import write_report
            try:
                write_report(rd.path)
            except Exception as exc:  # the cells and tables stay; the report can be made later
                st.report_error = f"{type(exc).__name__}: {exc}"
                rd.update_meta(status="incomplete" if status == "complete" else status,
                               report_error=st.report_error)
            else:
                if status == "complete":
                    rd.update_meta(status="complete")
    finally:
        st.lock.release()


def _num(v, fmt: str) -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, fmt)


def _fmt(v, se) -> str:
    return f"{_num(v, '.3e')} ± {_num(se, '.1e')}"


def summary_lines(measured: list[dict]) -> list[tuple[str, bool]]:
    """The terminal summary as ``(line, flagged)`` pairs."""
    if not measured:
        return []
    width = max([len("estimator")] + [len(r["estimator"]) for m in measured for r in (m["rows"] or m.get("train") or [])])
    head = (f"  {'estimator':<{width}}  unb  {'|bias| ± se':<20}  {'variance ± se':<20}  {'MSE ± se':<20}  "
            f"{'p-value':>9}  test")
    out: list[tuple[str, bool]] = []
    for m in measured:
        out.append((f"{m['cell']}  (K={m['K']}, seed={m['seed']}, {m['seconds']:.2f} s)", False))
        if m.get("train"):  # a learning cell: runs of training, one line per estimator
            for r in m["train"]:
                stuck = (f"  P(stuck) {_num(r.get('p_stuck'), '.3f')} [{_num(r.get('p_stuck_lo'), '.3f')}, "
                         f"{_num(r.get('p_stuck_hi'), '.3f')}]" if r.get("stuck_below") is not None else "")
                out.append((f"  {r['estimator']:<{width}}  final J {_num(r.get('J_final_mean'), '.4g')} (J* "
                            f"{_num(r.get('J_star'), '.4g')}), regret {_num(r.get('regret_mean'), '.4g')}" + stuck, False))
            continue
        out.append((head, False))
        for r in m["rows"]:
            flag = _flagged(r)
            ptxt = _num(r.get("p_robust", r.get("p_value")), ".2e")
            out.append((f"  {r['estimator']:<{width}}  {'yes' if r.get('unbiased') else 'no ':<3}  "
                        f"{_fmt(r.get('bias_norm'), r.get('bias_norm_se')):<20}  "
                        f"{_fmt(r.get('variance'), r.get('variance_se')):<20}  "
                        f"{_fmt(r.get('mse'), r.get('mse_se')):<20}  {ptxt:>9}  {r.get('p_test') or r.get('test') or ''}"
                        + ("  !" if flag else ""), flag))
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    st = config.stash.get(_STATE, None)
    if st is None or not st.used:
        return
    tr = terminalreporter
    if st.measured:
        tr.write_sep("=", "pgbench: statistical metrics")
        for line, flag in summary_lines(st.measured):
            tr.write_line(line, red=flag, bold=flag)
        n_flag = sum(_flagged(r) for m in st.measured for r in m["rows"])
        tail = (f"{n_flag} estimator(s) claimed unbiased with p < {P_FLAG:g} (marked !)" if n_flag
                else f"no estimator claimed unbiased has p < {P_FLAG:g}")
        tr.write_line(f"{len(st.measured)} cell(s); {tail}", red=bool(n_flag))
    if st.out and st.rundir is not None:
        tr.write_line(f"pgbench: run directory {st.rundir.path}")
        if st.report_error:
            tr.write_line(f"pgbench: the report could not be written ({st.report_error}); "
                          f"`pgbench report {st.rundir.path}` retries", red=True)
        elif st.suites:
            tr.write_line(f"pgbench: report {os.path.join(st.rundir.path, 'report.md')} and report.html")

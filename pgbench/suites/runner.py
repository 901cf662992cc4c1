"""Running suites: cells in order, each written as soon as it finishes; ``resume`` skips
finished cells. The same engine serves ``pgbench run`` and the pytest plugin.

Each cell record carries its provenance (:func:`pgbench.suites.cell.cell_provenance`); a run holds the lock of its
directory while it writes; ``meta.json`` says ``complete`` only once the report is written."""
from __future__ import annotations

import os
import sys
import time

from pgbench import inputs
from pgbench.threads import keeps_thread_settings
from pgbench.errors import PGBenchError, ProvenanceError, RunInterrupted
# cell_id, exact_decomposition, run_cell_record, run_provenance: re-exported (the plug-in and tests use them here)
from pgbench.suites.cell import (cell_id, exact_decomposition, run_cell_record, run_provenance,  # noqa: F401
                                 suite_definition)
from pgbench.suites.registry import Suite, get_suite, select
from pgbench.suites.store import RunDir, RunLock, check_new_run_dir


def kernels_cached() -> bool:
    """Whether numba's on-disk cache already holds the MDP sampling kernels (else the first cell
    compiles them, a minute or two). A heuristic: the cache index files exist."""
    try:
        from pgbench.kernels import mdp
        return all(os.path.exists(getattr(mdp, name)._cache._cache_file._index_path)
                   for name in ("_batch_stats", "_score_weights"))
    except Exception:  # a numba without these internals: say nothing rather than guess
        return True


def _is_mdp_suite(suite_id: str) -> bool:
    from pgbench.problems import make
    suite = get_suite(suite_id)  # learning cells use their own kernel, not the sampler the warm-up compiles
    return suite.train is None and make(suite.problem).kind == "mdp"


def _say(msg: str) -> None:
    print(f"pgbench: {msg}", file=sys.stderr, flush=True)


def plan(suites: list[Suite], quick: bool, group=None) -> list[tuple[str, int]]:
    """``(suite id, cell)`` pairs; ``group=G`` keeps only the cells of group size G of grouped suites."""
    return [(s.id, N) for s in suites for N in s.cells(quick) if group is None or not s.groups or N == group]


@keeps_thread_settings
def run(suite_ids=None, quick: bool | None = None, out: str | None = None, seed: int | None = None,
        resume: str | None = None, progress: bool | None = None, executor=None, report: bool = True,
        backend: str = "cpu", group: int | None = None) -> str:
    """Run suites into a run directory (a new one, or the one ``resume`` names); returns its path.
    A new run defaults to the full cells (``quick=False``) and seed 0.

    With ``resume``, ``suite_ids``, ``quick`` and ``seed`` are left out or must agree with the
    run's (a conflict is refused, not silently overridden).

    ``progress``: ``None`` (default) shows a progress bar on a terminal and otherwise (CI, a
    redirect) one line per finished cell on stderr; ``True`` forces the bar, ``False`` is silent.
    Either way (unless ``False``) stderr says when the kernels are being compiled and while the
    report is written.

    ``group=G``: grouped suites (``llm/``) run only their cells of group size G."""
    from pgbench.measure.backend import resolve_backend
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise PGBenchError(f"group size G must be an integer >= 1; got {group!r}")
    backend = resolve_backend(backend)
    if resume:
        path = resume
        if not os.path.isdir(path):
            raise PGBenchError(f"no run directory at {path}")
    else:
        seed = inputs.seed(0 if seed is None else seed)
        quick = bool(quick)
        suites = select(suite_ids)
        suite_ids = [s.id for s in suites]
        if out is None:
            out = os.path.join("results", time.strftime("run-%Y%m%d-%H%M%S") + ("-quick" if quick else ""))
        path = out
        check_new_run_dir(path)  # before making anything
    lock = RunLock(path).acquire()
    try:
        if lock.took_over:
            print(f"pgbench: taking over {path} from a run that is gone ({lock.took_over})", file=sys.stderr)
        if resume:
            rd = RunDir.open(path)
            meta = rd.meta()
            _check_resume(rd, meta, suite_ids, quick, seed)
            suite_ids, quick, seed = meta["suites"], meta["quick"], meta["seed"]
            rd.update_meta(status="running")
        else:
            rd = RunDir.create(path, suite_ids, quick, seed, provenance=run_provenance())
            rd.update_meta(backend=backend)
        return _run_cells(rd, suite_ids, quick, seed, progress, executor, report, backend, group)
    finally:
        lock.release()


def _check_resume(rd: RunDir, meta: dict, suite_ids, quick: bool, seed: int) -> None:
    """Options that disagree with the run being continued, and cells that do not belong to it
    (another seed, suite, sampler or suite definition), are refused before anything runs."""
    given = {"suites": [s.id for s in select(suite_ids)] if suite_ids else None, "quick": quick, "seed": seed}
    for key, val in given.items():
        if val is not None and val != meta.get(key):
            raise ProvenanceError(f"--resume {rd.path}: the run has {key}={meta.get(key)!r}, but {key}={val!r} was "
                                  f"given; resume takes its settings from the run (drop the option, or start a new run)")
    if "provenance" not in meta:
        raise ProvenanceError(f"{rd.path} was written by a pgbench without run provenance: it cannot be continued "
                              "safely; start a new run")
    now = run_provenance()
    for key, label in (("sampler", "sampler fingerprint"), ("pgbench", "pgbench version")):
        if meta["provenance"].get(key) != now[key]:
            raise ProvenanceError(f"{rd.path} was made with {label} {meta['provenance'].get(key)!r}, this pgbench "
                                  f"has {now[key]!r}: its cells would not mix with new ones; start a new run")
    for rec in rd.cells():  # check_cell against meta on the way
        suite = get_suite(rec["suite"])
        if rec["provenance"].get("definition") != suite_definition(suite, meta["quick"]):
            raise ProvenanceError(f"cell {rec['cell']!r} was made by another definition of suite {suite.id} "
                                  "(problem, estimators or trials changed since); start a new run")


class _Signals:
    """SIGINT and SIGTERM during a run, in the main thread: the first one stops the run (as
    ``KeyboardInterrupt``) and is remembered, because numba turns an interrupt that arrives
    while a kernel runs into ``SystemError: ... returned a result with an exception set``; the
    handlers then go back to what they were, so a second signal acts at once."""

    def __init__(self):
        self.received = None  # the signal number that stopped the run
        self._saved = {}

    def __enter__(self):
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers belong to the main thread; there, Python's defaults stay
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if sig is None:
                continue
            try:
                self._saved[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # pragma: no cover - an embedding that forbids it
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            self._restore()
            raise KeyboardInterrupt
        self._restore()

    def _restore(self):
        import signal
        for sig, handler in self._saved.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass
        self._saved = {}

    def __exit__(self, *exc):
        self._restore()
        return False

    def stopped(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the interrupt: a KeyboardInterrupt, or numba's SystemError around one."""
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen = exc
        while seen is not None:
            if isinstance(seen, KeyboardInterrupt):
                return True
            seen = seen.__cause__ or seen.__context__
        return isinstance(exc, SystemError) and self.received is not None

    def exit_status(self) -> int:
        import signal
        return 128 + (self.received if self.received is not None else signal.SIGINT)


def _run_cells(rd: RunDir, suite_ids, quick, seed, progress, executor, report, backend, group=None) -> str:
    from pgbench.kernels import mdp
    per_branch, mdp.PER_BRANCH = mdp.PER_BRANCH, False  # many cells, many branch sets: one full pass 2 compiles faster
    try:
        with _Signals() as signals:
            try:
                return _run_planned(rd, suite_ids, quick, seed, progress, executor, report, backend, group)
            except (KeyboardInterrupt, SystemError) as exc:
                if not signals.stopped(exc):
                    raise
                _interrupted(rd)
                message = f"interrupted; finished cells are kept in {rd.path} (continue with --resume {rd.path})"
                raise RunInterrupted(message, signals.exit_status()) from None
    finally:
        mdp.PER_BRANCH = per_branch


def _interrupted(rd: RunDir) -> None:
    """Save the tables of the finished cells and mark the run ``interrupted`` (the cells are on
    disk already; a cell being measured is lost, and ``--resume`` measures it again)."""
    try:
        rd.finalize(status="interrupted")
    except KeyboardInterrupt:  # a second signal while saving: at least the status
        rd.update_meta(status="interrupted")


def _run_planned(rd: RunDir, suite_ids, quick, seed, progress, executor, report, backend, group=None) -> str:
    cells = [c for c in plan([get_suite(s) for s in suite_ids], quick, group) if not rd.has_cell(cell_id(get_suite(c[0]), c[1]))]
    quiet = progress is False
    lines = progress is None and not sys.stderr.isatty()  # no terminal: a line per cell instead of a bar
    if progress is None:
        progress = sys.stderr.isatty()
    cold = None
    if cells and not kernels_cached():
        from pgbench import compile_notice
        msg = "compiling kernels (first run only: a minute or two; cached afterwards)"
        compile_notice.announce(None if quiet else msg)
        if executor is None:
            from pgbench.suites.warmup import ColdStart
            cold = ColdStart(cells, _is_mdp_suite)
            cells = cold.cells
    from tqdm import tqdm
    bar = tqdm(total=len(cells), desc="pgbench run", unit="cell", disable=not progress, file=sys.stderr)
    if lines:
        bar = _LineProgress(len(cells))
    try:
        if executor is None:
            for sid, N in cells:
                bar.set_postfix_str(f"{sid} N={N}")
                if cold is not None:
                    cold.before(sid)
                rd.write_cell(run_cell_record(sid, N, quick, seed, backend))
                bar.update()
        else:
            from pgbench.suites.distributed import run_on_executor
            run_on_executor(executor, rd, cells, quick, seed, bar, backend)
    finally:
        bar.close()
        if cold is not None:
            cold.close()
    if not report:
        rd.finalize()
        return rd.path
    # "complete" only once the report exists: until then the run is finishing
    rd.finalize(status="finishing")
    from pgbench.reports.report import write_report
    if not quiet:
        _say("writing the report (figures and tables)")
    write_report(rd.path, progress=None if quiet else _say)
    rd.update_meta(status="complete")
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

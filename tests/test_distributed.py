"""Suites on a Dask LocalCluster (loopback only): the same numbers as a local run, and a worker
killed mid-run costs no finished cell."""
import os

import pytest

pytest.importorskip("dask.distributed", reason="dask is not installed (the 'dask' extra)")

from pgbench.suites.runner import run, plan, cell_id  # noqa: E402
from pgbench.suites.registry import get_suite  # noqa: E402
from pgbench.suites.store import RunDir  # noqa: E402

SUITES = ["ladder/three-step-bandit", "objectives/gaussian-toy", "discount/chain-6"]
TIMING = {"seconds", "episodes_per_second", "mse_x_seconds", "own_seconds", "own_mse_x_seconds"}


def _rows(path):
    out = {}
    for c in RunDir.open(path).cells():
        for r in c["rows"]:
            out[(c["cell"], r["estimator"])] = {k: v for k, v in r.items() if k not in TIMING}
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return run(SUITES, quick=True, out=str(tmp_path_factory.mktemp("local") / "run"), seed=5, report=False,
               progress=False)


def test_dask_local_equals_local(tmp_path, local_run):
    from pgbench.suites.distributed import make_executor
    ex = make_executor("dask-local", workers=2)
    try:
        path = run(SUITES, quick=True, out=str(tmp_path / "run"), seed=5, report=False, progress=False, executor=ex)
    finally:
        ex.close()
    assert _rows(path) == _rows(local_run)
    assert RunDir.open(path).meta()["status"] == "complete"


class _KillOnce:
    """Progress callback that kills one worker process after the first finished cell."""

    def __init__(self, client):
        self.client, self.n, self.killed = client, 0, None

    def update(self, k=1):
        self.n += k
        if self.killed is None:
            workers = sorted(self.client.scheduler_info()["workers"])
            self.killed = workers[0]
            try:
                self.client.run(os._exit, 1, workers=[self.killed])
            except Exception:  # the worker dies while answering: that is the point
                pass


def test_worker_killed_mid_run_loses_nothing(tmp_path, local_run):
    from pgbench.suites.distributed import make_executor, run_on_executor
    ex = make_executor("dask-local", workers=2)
    rd = RunDir.create(str(tmp_path / "run"), SUITES, True, 5)
    cells = plan([get_suite(s) for s in SUITES], True)
    bar = _KillOnce(ex.client)
    try:
        run_on_executor(ex, rd, cells, True, 5, bar)
    finally:
        ex.close()
    rd.finalize()
    assert bar.killed is not None
    assert bar.n == len(cells)
    assert {c["cell"] for c in rd.cells()} == {cell_id(get_suite(s), N) for s, N in cells}
    assert _rows(rd.path) == _rows(local_run)


def test_dask_executor_needs_scheduler():
    from pgbench.errors import PGBenchError
    from pgbench.suites.distributed import make_executor
    with pytest.raises(PGBenchError, match="--scheduler"):
        make_executor("dask", None)

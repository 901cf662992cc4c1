"""Spreading suite cells over a Dask cluster through its concurrent.futures interface.

Each cell is a pure function of (suite, N, quick, seed), so where it runs changes no number.
Cells are written to the run directory as they finish; a cell whose worker dies is
resubmitted (Dask's ``retries``), and an interrupted run resumes like a local one.
"""
from __future__ import annotations

from concurrent.futures import as_completed

from pgbench.errors import PGBenchError

RETRIES = 3


def _cell_task(suite_id: str, N: int, quick: bool, seed: int, backend: str, threads: int) -> dict:
    import numba
    from pgbench.kernels import mdp
    from pgbench.suites.cell import run_cell_record
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    mdp.PER_BRANCH = False  # as a local run: one all-branch pass 2 per worker, not one per branch set
    return run_cell_record(suite_id, N, quick, seed, backend)


class DaskExecutor:
    """A ``concurrent.futures`` executor on a Dask client (and the LocalCluster it owns, if any)."""

    def __init__(self, client, cluster=None, threads_per_cell: int = 1):
        self.client = client
        self.cluster = cluster
        self.threads = threads_per_cell
        self.executor = client.get_executor(retries=RETRIES, pure=False)

    def submit(self, *args):
        return self.executor.submit(_cell_task, *args, self.threads)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(kind: str, scheduler: str | None = None, workers: int = 2, threads_per_cell: int = 1):
    """An executor for :func:`run_on_executor`: ``dask`` (a running scheduler) or ``dask-local``."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise PGBenchError("the dask executors need Dask: pip install 'pgbench[dask]'") from None
    if kind == "dask":
        if not scheduler:
            raise PGBenchError("--executor dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise PGBenchError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        return DaskExecutor(client, None, threads_per_cell)
    if kind == "dask-local":
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise PGBenchError(f"--workers must be an integer >= 1 (a cluster with no worker never finishes); "
                               f"got {workers!r}")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        return DaskExecutor(Client(cluster), cluster, threads_per_cell)
    raise PGBenchError(f"unknown executor {kind!r}; choose local, dask or dask-local")


def run_on_executor(executor, rd, cells, quick: bool, seed: int, bar, backend: str = "cpu") -> None:
    """Submit every cell, write each record as it completes (in completion order: the records
    themselves do not depend on it)."""
    futures = {executor.submit(sid, N, quick, seed, backend): (sid, N) for sid, N in cells}
    for fut in as_completed(futures):
        rec = fut.result()
        rd.write_cell(rec)
        if hasattr(bar, "set_postfix_str"):  # name the finished cell in the progress line
            bar.set_postfix_str(rec.get("cell", ""))
        bar.update()

"""The results store: one directory per run under ``results/``.

Layout of a run directory::

    meta.json            package versions, machine, seed, suites, git commit, start/end, status
    cells/<cell>.json    one file per finished cell (written atomically: a kill loses no finished cell)
    results.csv          tidy metrics, one row per (cell, estimator)   } written from cells/
    results.parquet      the same, when pyarrow is installed           } at the end of a run
    paired.csv           paired comparisons within each cell
    benchmark.json       pytest-benchmark's JSON, when the run came from pytest
    report.md, report.html, figures/   written by ``pgbench report``

Every file is written to a temporary name in the same directory and renamed into place.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
import time
from typing import Iterable

import numpy as np
import pandas as pd

from pgbench.errors import PGBenchError

FORMAT_VERSION = 1


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it into place:
    readers see the old file or the new one, never a part."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(v):
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return to_jsonable(v.tolist())
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=1, sort_keys=False) + "\n")


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise PGBenchError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PGBenchError(f"malformed JSON in {path}: {exc}") from None


def cell_filename(cell_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", cell_id) + ".json"


def git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    import numba
    import scipy
    import pgbench
    return {"pgbench": pgbench.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(), "system": platform.system(),
            "cpu_count": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS}


def _sampler_fingerprint() -> str:
    """The sampler's fingerprint (:func:`pgbench.measure.fingerprint.sampler_fingerprint`): runs
    whose fingerprints differ were drawn by different samplers and must not be mixed."""
    from pgbench.measure.fingerprint import sampler_fingerprint
    return sampler_fingerprint()


class RunDir:
    """A run directory: create, list finished cells, add cells, finalise."""

    def __init__(self, path: str):
        self.path = path

    @property
    def meta_path(self) -> str:
        return os.path.join(self.path, "meta.json")

    @property
    def cells_dir(self) -> str:
        return os.path.join(self.path, "cells")

    @classmethod
    def create(cls, path: str, suites: Iterable[str], quick: bool, seed: int, source: str = "pgbench run") -> "RunDir":
        if os.path.exists(os.path.join(path, "meta.json")):
            raise PGBenchError(f"{path} already holds a run; use --resume to continue it or choose another --out")
        os.makedirs(os.path.join(path, "cells"), exist_ok=True)
        rd = cls(path)
        write_json(rd.meta_path, {"format": FORMAT_VERSION, "suites": list(suites), "quick": bool(quick),
                                  "seed": int(seed), "git_commit": git_commit(), "environment": environment(),
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None,
                                  "status": "running", "source": source,
                                  "sampler_fingerprint": _sampler_fingerprint()})
        return rd

    @classmethod
    def open(cls, path: str) -> "RunDir":
        rd = cls(path)
        if not os.path.isdir(path):
            raise PGBenchError(f"no run directory at {path}")
        meta = rd.meta()
        if meta.get("format") != FORMAT_VERSION:
            raise PGBenchError(f"{path}/meta.json has format {meta.get('format')!r}; this pgbench reads {FORMAT_VERSION}")
        return rd

    def meta(self) -> dict:
        return read_json(self.meta_path)

    def update_meta(self, **kw) -> None:
        m = self.meta()
        m.update(kw)
        write_json(self.meta_path, m)

    def done(self) -> set:
        if not os.path.isdir(self.cells_dir):
            return set()
        return {f for f in os.listdir(self.cells_dir) if f.endswith(".json") and not f.startswith(".tmp-")}

    def has_cell(self, cell_id: str) -> bool:
        return cell_filename(cell_id) in self.done()

    def write_cell(self, record: dict) -> None:
        write_json(os.path.join(self.cells_dir, cell_filename(record["cell"])), record)

    def cells(self) -> list[dict]:
        return [read_json(os.path.join(self.cells_dir, f)) for f in sorted(self.done())]

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(results, paired) over all finished cells."""
        rows, pairs = [], []
        for c in self.cells():
            for r in c["rows"]:
                rows.append({"suite": c["suite"], "cell": c["cell"], "tags": ",".join(c.get("tags", [])), **r})
            for p in c.get("paired", []):
                pairs.append({"suite": c["suite"], "cell": c["cell"], "N": c["N"], **p})
        return pd.DataFrame(rows), pd.DataFrame(pairs)

    def finalize(self, status: str = "complete") -> None:
        df, pairs = self.tables()
        flat = df.copy()
        if "mean" in flat:
            flat["mean"] = flat["mean"].map(json.dumps)
        atomic_write_text(os.path.join(self.path, "results.csv"), flat.to_csv(index=False))
        atomic_write_text(os.path.join(self.path, "paired.csv"), pairs.to_csv(index=False))
        try:
            import pyarrow  # noqa: F401
            import io
            buf = io.BytesIO()
            flat.to_parquet(buf, index=False)
            atomic_write_bytes(os.path.join(self.path, "results.parquet"), buf.getvalue())
        except ImportError:
            pass
        self.update_meta(ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), status=status)


def load_results(path: str) -> pd.DataFrame:
    """The tidy results of a run directory (from its cells, so a partial run reads too)."""
    return RunDir.open(path).tables()[0]

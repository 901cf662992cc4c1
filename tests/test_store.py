"""The results store (``pgbench.suites.store``): atomic writes, run directories, and resuming a
run that was killed (SIGKILL: no handler runs) part-way."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from pgbench.errors import PGBenchError
from pgbench.suites import store
from pgbench.suites.registry import get_suite
from pgbench.suites.runner import cell_id, plan, run
from pgbench.suites.store import RunDir, atomic_write_bytes, atomic_write_text, cell_filename, load_results, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHEAP_SUITES = ["ladder/three-step-bandit", "objectives/gaussian-toy"]  # 4 quick cells, < 1 s in all
TIMING_COLUMNS = ["seconds", "episodes_per_second", "mse_x_seconds", "wall_seconds", "own_seconds",
                  "own_mse_x_seconds", "own_cost_seconds"]


def _listdir(path):
    return sorted(os.listdir(path))


def _json(path):
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_replaces_the_whole_file(tmp_path):
    p = tmp_path / "a.json"
    write_json(str(p), {"x": np.float64(1.5), "y": np.arange(3), "z": float("nan")})
    write_json(str(p), {"x": 2})
    assert _json(p) == {"x": 2}
    assert _listdir(tmp_path) == ["a.json"]


def test_failed_serialisation_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.json"
    write_json(str(p), {"v": 1})
    with pytest.raises(TypeError):
        write_json(str(p), {"ok": 1, "bad": object()})  # json.dumps fails part-way through the dict
    assert _json(p) == {"v": 1}
    assert _listdir(tmp_path) == ["a.json"]


class _HalfWriter:
    """A file whose write stores half the text, then fails (a full disk, say)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_a_write_failing_midway_leaves_no_partial_file(tmp_path, monkeypatch, where):
    p = tmp_path / "cells" / "c.json"
    write_json(str(p), {"old": list(range(100))})
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(store.os, "fdopen", lambda *a, **k: _HalfWriter(real_fdopen(*a, **k)))
    elif where == "fsync":  # the whole text is in the temporary file; it never gets its name
        monkeypatch.setattr(store.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    else:
        monkeypatch.setattr(store.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_json(str(p), {"new": list(range(1000))})
    monkeypatch.undo()
    assert _json(p) == {"old": list(range(100))}
    assert _listdir(p.parent) == ["c.json"]


def test_atomic_write_bytes_failure(tmp_path, monkeypatch):
    p = tmp_path / "r.parquet"
    atomic_write_bytes(str(p), b"old")
    monkeypatch.setattr(store.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        atomic_write_bytes(str(p), b"new" * 1000)
    monkeypatch.undo()
    assert p.read_bytes() == b"old" and _listdir(tmp_path) == ["r.parquet"]


def test_atomic_write_text_creates_the_directory(tmp_path):
    p = tmp_path / "a" / "b" / "t.txt"
    atomic_write_text(str(p), "hello")
    assert p.read_text() == "hello"


# ------------------------------------------------------------------------------------------ run directories


def _record(cell: str, value: float) -> dict:
    return {"suite": cell.rsplit("/", 1)[0], "cell": cell, "N": int(cell.rsplit("=", 1)[1]), "tags": ["t"],
            "rows": [{"estimator": "e", "mean": [value, 0.0], "bias_norm": value}], "paired": []}


def test_create_refuses_an_existing_run(tmp_path):
    RunDir.create(str(tmp_path / "run"), ["s/x"], quick=True, seed=0)
    with pytest.raises(PGBenchError, match="already holds a run"):
        RunDir.create(str(tmp_path / "run"), ["s/x"], quick=False, seed=1)
    assert _json(tmp_path / "run" / "meta.json")["seed"] == 0  # untouched


def test_open_missing_or_malformed(tmp_path):
    with pytest.raises(PGBenchError, match="no run directory"):
        RunDir.open(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PGBenchError, match="missing file"):
        RunDir.open(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text('{"format": 1, "suites": [')
    with pytest.raises(PGBenchError, match="malformed JSON"):
        RunDir.open(str(tmp_path / "bad"))
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "meta.json").write_text(json.dumps({"format": store.FORMAT_VERSION + 1}))
    with pytest.raises(PGBenchError, match="format"):
        RunDir.open(str(tmp_path / "future"))
    with pytest.raises(PGBenchError, match="no run directory"):
        load_results(str(tmp_path / "nowhere"))


def test_cells_temporaries_and_finalize(tmp_path):
    rd = RunDir.create(str(tmp_path / "run"), ["s/x"], quick=False, seed=3)
    assert rd.meta()["status"] == "running" and rd.done() == set()
    rd.write_cell(_record("s/x/N=4", 0.5))
    # a temporary left by a kill mid-write is not a finished cell
    (tmp_path / "run" / "cells" / (".tmp-abc" + cell_filename("s/x/N=8"))).write_text('{"cell": "s/x/N')
    assert rd.has_cell("s/x/N=4") and not rd.has_cell("s/x/N=8")
    assert [c["cell"] for c in rd.cells()] == ["s/x/N=4"]
    assert list(load_results(rd.path)["cell"]) == ["s/x/N=4"]  # a partial run reads too
    rd.write_cell(_record("s/x/N=8", 0.25))
    rd.finalize()
    meta = RunDir.open(rd.path).meta()
    assert meta["status"] == "complete" and meta["ended"] is not None
    df = pd.read_csv(os.path.join(rd.path, "results.csv"))
    assert list(df["cell"]) == ["s/x/N=4", "s/x/N=8"] and [json.loads(m) for m in df["mean"]] == [[0.5, 0], [0.25, 0]]


def test_a_failed_cell_write_leaves_no_cell(tmp_path, monkeypatch):
    rd = RunDir.create(str(tmp_path / "run"), ["s/x"], quick=False, seed=0)
    monkeypatch.setattr(store.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        rd.write_cell(_record("s/x/N=4", 0.5))
    monkeypatch.undo()
    assert not rd.has_cell("s/x/N=4") and _listdir(rd.cells_dir) == []


# ------------------------------------------------------------------------------------------ kill and resume

# Runs the cheap suites in a subprocess that hangs (forever, until killed) on the second cell:
# "measure": while measuring it; "write": inside the atomic write of its file, after the whole
# text is in the temporary file and before it is renamed (found through /proc/self/fd).
_KILLABLE = r"""
import os, sys, time
import pgbench.suites.runner as R
mode, out = sys.argv[1], sys.argv[2]
cells = os.path.join(out, "cells")

def n_cells():
    return len([f for f in os.listdir(cells) if not f.startswith(".tmp-")]) if os.path.isdir(cells) else 0

if mode == "measure":
    real = R.run_cell_record
    def run_cell_record(*a, **k):
        if n_cells() >= 1:
            time.sleep(600)
        return real(*a, **k)
    R.run_cell_record = run_cell_record
else:
    real_fsync = os.fsync
    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.dirname(name) == os.path.abspath(cells) and n_cells() >= 1:
            time.sleep(600)
        return real_fsync(fd)
    os.fsync = fsync
R.run(sys.argv[3:], quick=True, out=out, seed=0, progress=False, report=False)
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run(CHEAP_SUITES, quick=True, out=str(tmp_path_factory.mktemp("ref") / "run"), seed=0, progress=False,
               report=False)


def _start_and_kill(out: str, mode: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, mode, out, *CHEAP_SUITES], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cells = os.path.join(out, "cells")

    def ready():
        names = os.listdir(cells) if os.path.isdir(cells) else []
        done = [f for f in names if not f.startswith(".tmp-")]
        return len(done) >= 1 and (mode == "measure" or any(f.startswith(".tmp-") for f in names))

    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert proc.poll() is None, f"the run ended before it was killed:\n{proc.stdout.read().decode()}"
            assert time.monotonic() < deadline, "no cell finished within 180 s"
            time.sleep(0.02)
        time.sleep(0.2)  # well inside the hang now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _comparable(path: str) -> pd.DataFrame:
    df = pd.read_csv(os.path.join(path, "results.csv"))
    return df.drop(columns=[c for c in TIMING_COLUMNS if c in df]).sort_values(["cell", "estimator"]).reset_index(
        drop=True)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the file being written through /proc")
@pytest.mark.parametrize("mode", ["measure", "write"])
def test_resume_after_kill(tmp_path, uninterrupted, mode):
    out = str(tmp_path / "run")
    _start_and_kill(out, mode)

    rd = RunDir.open(out)
    assert rd.meta()["status"] == "running"  # a SIGKILL finalises nothing
    assert not os.path.exists(os.path.join(out, "results.csv"))
    expected = [cell_filename(cell_id(get_suite(s), N)) for s, N in plan([get_suite(s) for s in CHEAP_SUITES], True)]
    finished = sorted(rd.done())
    assert len(finished) == 1 and finished[0] == expected[0]
    for f in finished:  # what was finished is whole
        rec = _json(os.path.join(rd.cells_dir, f))
        assert rec["cell"] and rec["rows"]
    temporaries = [f for f in os.listdir(rd.cells_dir) if f.startswith(".tmp-")]
    assert len(temporaries) == (1 if mode == "write" else 0)

    assert run(resume=out, progress=False, report=False) == out
    meta = RunDir.open(out).meta()
    assert meta["status"] == "complete" and meta["suites"] == CHEAP_SUITES and meta["quick"] is True
    assert sorted(rd.done()) == sorted(expected)
    df = pd.read_csv(os.path.join(out, "results.csv"))
    assert not df.duplicated(["cell", "estimator"]).any()
    cells = [c["cell"] for c in rd.cells()]
    assert sorted(cells) == sorted(set(cells)) and set(df["cell"]) == set(cells) and len(cells) == len(expected)
    assert len(df) == sum(len(c["rows"]) for c in rd.cells())

    # the same numbers as a run that was never interrupted (timings aside)
    pd.testing.assert_frame_equal(_comparable(out), _comparable(uninterrupted), check_exact=True)
    ref = RunDir.open(uninterrupted)
    for c in rd.cells():
        r = _json(os.path.join(ref.cells_dir, cell_filename(c["cell"])))
        strip = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in c["rows"]]
        assert strip == [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in r["rows"]]
        assert c["paired"] == r["paired"]

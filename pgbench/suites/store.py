"""The results store: one directory per run under ``results/``.

Layout of a run directory::

    meta.json            package versions, machine, seed, suites, git commit, start/end, status
    cells/<cell>.json    one file per finished cell (written atomically: a kill loses no finished cell)
    results.csv          tidy metrics, one row per (cell, estimator)   } written from cells/
    results.parquet      the same, when pyarrow is installed           } at the end of a run
    paired.csv           paired comparisons within each cell
    benchmark.json       pytest-benchmark's JSON, when the run came from pytest
    report.md, report.html, figures/   written by ``pgbench report``

Every file is written to a temporary name in the same directory and renamed into place, with
the permissions the process's umask gives a new file.

Provenance: ``meta.json`` records what makes the run's numbers (seed, quick, trials, suites, the
pgbench version and the sampler's fingerprint) and every cell record carries the same facts
about itself (``provenance``); :func:`check_cell` refuses a cell that does not belong (another
seed, a suite the run does not include, another sampler, a renamed file). While a run writes
its directory it holds ``.lock`` (an advisory ``flock``, released by the kernel if the process
dies, so a lock left by a killed run is taken over).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import platform
import re
import stat
import subprocess
import tempfile
import time
from typing import Iterable

import numpy as np
import pandas as pd

from pgbench.errors import PGBenchError, PGBenchWarning, ProvenanceError, RunLockedError

FORMAT_VERSION = 1


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it into place:
    readers see the old file or the new one, never a part."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    if os.path.islink(d) or os.path.islink(path):
        # a planted link (figures -> elsewhere) would send the file into its target
        raise PGBenchError(f"refusing to write {path}: {d if os.path.islink(d) else path} is a symbolic link "
                           "(pgbench never writes through links in a run directory)")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open would not
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (read without changing it where /proc says it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


# ------------------------------------------------------------------------------------------ provenance

LEFTOVERS = ("cells", "results.csv", "report.md")


def check_new_run_dir(path: str) -> None:
    """Refuse a directory that already holds a run, or the remains of one without its meta.json
    (its cells would otherwise be taken as the new run's)."""
    if os.path.exists(os.path.join(path, "meta.json")):
        raise PGBenchError(f"{path} already holds a run; use --resume to continue it or choose another --out")
    if os.path.exists(path) and not os.path.isdir(path):
        raise PGBenchError(f"--out {path} is a file, not a directory")
    if os.path.islink(path):
        raise PGBenchError(f"--out {path} is a symbolic link; give the directory itself (pgbench never writes "
                           "through links)")
    cells = os.path.join(path, "cells")
    left = [f for f in LEFTOVERS if os.path.exists(os.path.join(path, f))
            and not (f == "cells" and os.path.isdir(cells) and not os.listdir(cells))]
    if left:
        raise ProvenanceError(f"{path} holds {', '.join(left)} but no meta.json: the remains of another run, not "
                              "one to continue; choose an empty --out")
    others = sorted(f for f in (os.listdir(path) if os.path.isdir(path) else [])
                    if f not in (RunLock.NAME, "cells"))
    if others:  # the user's own files (paired.csv, report.html, figures/) would be overwritten
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise PGBenchError(f"--out {path} is a non-empty directory that is not a pgbench run (it holds {shown}); "
                           "choose a new or empty directory")


def current_provenance() -> dict:
    """What a run's cells must share: the pgbench version and the sampler's fingerprint."""
    import pgbench
    from pgbench.measure.fingerprint import sampler_fingerprint
    return {"pgbench": pgbench.__version__, "sampler": sampler_fingerprint()}


def cell_checksum(rec: dict) -> str:
    """SHA-256 (first 32 hex digits) of a cell record as JSON with sorted keys, leaving out the
    checksum itself (``provenance.checksum``): any number edited after the run wrote the cell
    changes it."""
    body = to_jsonable(rec)
    prov = body.get("provenance")
    if isinstance(prov, dict):
        body = {**body, "provenance": {k: v for k, v in prov.items() if k != "checksum"}}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def check_meta(meta, where: str) -> dict:
    """Refuse a malformed ``meta.json`` (one line naming it): not an object, another format,
    ``suites`` not a list of ids, ``provenance`` missing or not an object. Returns meta."""
    if not isinstance(meta, dict):
        raise PGBenchError(f"malformed {where}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_VERSION:
        raise PGBenchError(f"{where} has format {meta.get('format')!r}; this pgbench reads {FORMAT_VERSION}")
    suites = meta.get("suites", [])
    if not isinstance(suites, list) or not all(isinstance(x, str) for x in suites):
        raise PGBenchError(f"malformed {where}: 'suites' must be a list of suite ids")
    prov = meta.get("provenance")
    if prov is None:
        raise ProvenanceError(f"{where} has no provenance (pgbench version and sampler fingerprint): its cells "
                              "cannot be told from another run's; regenerate the run with this pgbench")
    if not isinstance(prov, dict) or not all(isinstance(prov.get(k), str) for k in ("pgbench", "sampler")):
        raise PGBenchError(f"malformed {where}: 'provenance' must be an object with the pgbench version and the "
                           f"sampler fingerprint; got {prov!r}"[:300])
    return meta


def _non_finite(x, path: str = ""):
    """The path of the first NaN or infinite number in a JSON value (pgbench writes null for a
    missing number), or None."""
    if isinstance(x, float) and not math.isfinite(x):
        return path or "."
    if isinstance(x, dict):
        for k, v in x.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(x, list):
        for i, v in enumerate(x):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def check_cell_content(meta: dict, rec: dict, where: str) -> None:
    """Refuse a cell whose numbers were not written by pgbench: ``rows`` not a list of objects,
    a NaN or infinity (written as null by pgbench), or a checksum that does not match. Cells of
    runs written before checksums existed (no ``checksums`` in meta.json) are read with a warning."""
    cell = rec.get("cell")
    rows = rec.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PGBenchError(f"malformed cell record {where}: 'rows' must be a list of objects, got "
                           f"{type(rows).__name__}")
    if "paired" in rec and not (isinstance(rec["paired"], list) and all(isinstance(p, dict) for p in rec["paired"])):
        raise PGBenchError(f"malformed cell record {where}: 'paired' must be a list of objects")
    bad = _non_finite(rec)
    if bad:
        raise PGBenchError(f"cell {cell!r} ({where}) has a NaN or infinite number at {bad}; pgbench writes a "
                           "missing number as null, so the file was edited or damaged")
    prov = rec.get("provenance")
    want = prov.get("checksum") if isinstance(prov, dict) else None
    if want is None:
        if meta.get("checksums"):
            raise ProvenanceError(f"cell {cell!r} ({where}) has no checksum, but its run checksums every cell: "
                                  "edited or copied from elsewhere")
        return
    if want != cell_checksum(rec):
        raise ProvenanceError(f"cell {cell!r} ({where}) does not match its checksum: its numbers were edited after "
                              "the run wrote it; rerun the cell (delete the file and --resume)")


def check_cell(meta: dict, rec: dict, where: str) -> None:
    """Refuse (:class:`ProvenanceError`, one line naming the cell) a cell record that the run
    described by ``meta`` did not make. Runs written before provenance existed are checked on
    what their records hold (seed, quick, suite, file name)."""
    cell = rec.get("cell")
    name = os.path.basename(where)
    if name.endswith(".json") and isinstance(cell, str) and cell_filename(cell) != name:
        raise ProvenanceError(f"{where} holds cell {cell!r}, not the cell its name says: a copied or renamed file")
    suites = meta.get("suites")
    if suites and rec.get("suite") not in suites:
        raise ProvenanceError(f"cell {cell!r} ({where}) belongs to suite {rec.get('suite')!r}, which this run does "
                              f"not include")
    run_prov = meta.get("provenance")
    if run_prov is not None and not isinstance(run_prov, dict):
        raise PGBenchError(f"malformed meta.json of the run of {where}: 'provenance' must be an object")
    prov = rec.get("provenance")
    if run_prov is not None and not isinstance(prov, dict):
        raise ProvenanceError(f"cell {cell!r} ({where}) carries no provenance: this run did not make it")
    expected = {"seed": meta.get("seed"), "quick": meta.get("quick")}
    if meta.get("trials") is not None:
        expected["K"] = meta["trials"]
    for key, want in expected.items():
        have = rec.get(key)
        if want is not None and (have is not None or run_prov is not None) and have != want:
            label = "trials K" if key == "K" else key
            raise ProvenanceError(f"cell {cell!r} ({where}) was made with {label}={have!r}, but this run has "
                                  f"{label}={want!r}")
    if run_prov is None:
        return
    own = {"suite": rec.get("suite"), "cell": cell, "seed": rec.get("seed"), "quick": rec.get("quick"),
           "trials": rec.get("K")}
    for key, have in own.items():
        if prov.get(key) != have:
            raise ProvenanceError(f"cell {cell!r} ({where}): its provenance says {key}={prov.get(key)!r} but the "
                                  f"record says {have!r} (edited by hand?)")
    for key, label in (("sampler", "sampler fingerprint"), ("pgbench", "pgbench version")):
        if prov.get(key) != run_prov.get(key):
            raise ProvenanceError(f"cell {cell!r} ({where}) was made with {label} {prov.get(key)!r}, but this run "
                                  f"with {run_prov.get(key)!r}: another sampler's numbers must not mix")


def warn_unchecksummed(path: str) -> None:
    warnings.warn(f"{path} was written by a pgbench without per-cell checksums: hand edits to its cells cannot "
                  "be detected (regenerate the run to add them)", PGBenchWarning, stacklevel=3)


class RunLock:
    """``DIR/.lock``: held (``flock``) while a process writes a run directory.

    The file names the holder (pid, host, time) for the refusal message; the kernel drops the
    ``flock`` when the holder dies, so a lock file left by a killed run is found unlocked and
    taken over. Where ``fcntl`` is missing, a lock file whose pid is not alive counts as stale."""

    NAME = ".lock"

    def __init__(self, path: str):
        self.dir = path
        self.path = os.path.join(path, self.NAME)
        self.fd = None
        self.took_over = None  # the stale holder's description, if one was taken over

    def acquire(self) -> "RunLock":
        os.makedirs(self.dir, exist_ok=True)
        for _ in range(20):
            fd = self._open()
            try:
                if not self._lock(fd):
                    raise RunLockedError(f"{self.dir} is being written by another run ({self._holder(fd)}); wait "
                                         f"for it to finish, or choose another directory")
                try:
                    same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the holder released and removed it between our open and lock: retry
                    os.close(fd)
                    continue
                previous = self._holder(fd)
                if previous:
                    self.took_over = previous
                os.ftruncate(fd, 0)
                # at offset 0: after reading the old holder the offset is past the new end, and a
                # write there would pad the file with NULs (and hide this holder from later refusals)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": platform.node(),
                                          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
                os.fsync(fd)
                self.fd = fd
                return self
            except BaseException:
                if self.fd is None:
                    os.close(fd)
                raise
        raise RunLockedError(f"cannot lock {self.dir}: its lock file keeps changing")

    def _open(self) -> int:
        """The lock file, opened without following a link: a ``.lock`` planted as a symbolic link
        (or a FIFO, a directory) must not make this run truncate and write whatever it names."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        why = None
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            fd, why = None, f"unusable as a lock file ({exc.strerror or exc})"
        if fd is not None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        if os.path.islink(self.path):
            why = f"a symbolic link to {os.readlink(self.path)!r}"
        elif os.path.lexists(self.path) and not os.path.isfile(self.path):
            why = "not a regular file"
        raise RunLockedError(f"cannot lock {self.dir}: {self.path} is {why or 'not a regular file'}, not a lock "
                             f"file pgbench wrote; remove it, or choose another directory")

    def _lock(self, fd: int) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: trust a live pid
            info = self._read(fd)
            pid = info.get("pid") if info else None
            return not (isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 4096).decode() or "null")
            return info if isinstance(info, dict) else None
        except (OSError, ValueError):
            return None

    def _holder(self, fd: int) -> str:
        info = self._read(fd)
        if not info:
            return ""
        return f"pid {info.get('pid')} on {info.get('host') or '?'} since {info.get('since') or '?'}"

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still held: a waiting process then retries on a fresh file
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _pid_alive(pid: int) -> bool:  # pragma: no cover - used where fcntl is missing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    def create(cls, path: str, suites: Iterable[str], quick: bool, seed: int, source: str = "pgbench run",
               provenance: dict | None = None, trials: int | None = None) -> "RunDir":
        """A new run directory. ``provenance`` (pgbench version and sampler fingerprint) makes
        every cell written later be checked against the run (:func:`check_cell`)."""
        check_new_run_dir(path)
        os.makedirs(os.path.join(path, "cells"), exist_ok=True)
        rd = cls(path)
        meta = {"format": FORMAT_VERSION, "suites": list(suites), "quick": bool(quick), "seed": int(seed),
                "trials": trials, "git_commit": git_commit(), "environment": environment(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None, "status": "running",
                "source": source}
        meta["provenance"] = dict(current_provenance() if provenance is None else provenance)
        meta["checksums"] = True  # every cell carries provenance.checksum (check_cell_content)
        write_json(rd.meta_path, meta)
        return rd

    @classmethod
    def open(cls, path: str) -> "RunDir":
        rd = cls(path)
        if not os.path.isdir(path):
            raise PGBenchError(f"no run directory at {path}")
        check_meta(rd.meta(), rd.meta_path)
        return rd

    def meta(self) -> dict:
        meta = read_json(self.meta_path)
        if not isinstance(meta, dict):
            raise PGBenchError(f"malformed {self.meta_path}: expected a JSON object, got {type(meta).__name__}")
        return meta

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
        """Write a finished cell, after checking that it belongs to this run (a worker with
        another sampler, say, is refused before its numbers land)."""
        path = os.path.join(self.cells_dir, cell_filename(record["cell"]))
        meta = self.meta()
        rec = to_jsonable(record)
        if not isinstance(rec.get("provenance"), dict) and isinstance(meta.get("provenance"), dict):
            # a record this process made without provenance (tests, plug-ins): it is this run's
            for key, mkey in (("seed", "seed"), ("quick", "quick"), ("K", "trials")):
                if rec.get(key) is None and meta.get(mkey) is not None:
                    rec[key] = meta[mkey]
            rec["provenance"] = {"suite": rec.get("suite"), "cell": rec.get("cell"), "seed": rec.get("seed"),
                                 "trials": rec.get("K"), "quick": rec.get("quick"), **meta["provenance"]}
        check_cell(meta, rec, path)
        if meta.get("checksums"):
            rec["provenance"] = {**rec["provenance"], "checksum": cell_checksum(rec)}
        write_json(path, rec)

    def cells(self) -> list[dict]:
        """The finished cells, each checked against the run's provenance (:func:`check_cell`)."""
        meta = check_meta(self.meta(), self.meta_path)
        out = []
        for f in sorted(self.done()):
            path = os.path.join(self.cells_dir, f)
            rec = read_json(path)
            if not isinstance(rec, dict):
                raise PGBenchError(f"malformed cell record {path}: expected a JSON object")
            check_cell(meta, rec, path)  # provenance first: the more specific message
            check_cell_content(meta, rec, path)
            out.append(rec)
        if out and not meta.get("checksums"):
            warn_unchecksummed(self.path)
        return out

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

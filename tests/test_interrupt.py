"""Ctrl-C (SIGINT) and SIGTERM during `pgbench run`: the finished cells stay, meta.json says
`interrupted`, stderr says how to continue, and the exit status is 130 (SIGINT) or 143
(SIGTERM, 128 + 15). numba turns an interrupt that arrives while a kernel runs into a
SystemError; that case is simulated in-process, the real signals in a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pgbench.errors import RunInterrupted
from pgbench.suites import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = "ladder/three-step-bandit"
# full cells of several suites: the signal must arrive while the run is still going, also on an
# idle machine with every kernel cached (the ladder's cells alone take 0.1 s each there)
LONG_RUN = [SUITE, "baselines/gridworld-4", "oracles/frozen-lake", "practice/gridworld-4", "calibration/garnet-4"]


def _meta(out):
    with open(os.path.join(out, "meta.json")) as f:
        return json.load(f)


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals")
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_run(tmp_path, sig, status):
    out = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "pgbench", "run", *LONG_RUN, "--out", out, "--no-report"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cells = os.path.join(out, "cells")
    try:
        deadline = time.monotonic() + 300
        while not (os.path.isdir(cells) and [f for f in os.listdir(cells) if not f.startswith(".tmp-")]):
            assert proc.poll() is None, f"the run ended before the signal:\n{proc.communicate()[1]}"
            assert time.monotonic() < deadline, "no cell finished within 300 s"
            time.sleep(0.05)
        time.sleep(0.3)  # inside the next cell's kernels
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, err
    lines = err.strip().splitlines()
    assert lines[-1] == f"pgbench: interrupted; finished cells are kept in {out} (continue with --resume {out})", err
    assert "internal error" not in err and "Traceback" not in err
    meta = _meta(out)
    assert meta["status"] == "interrupted" and meta["ended"] is not None
    assert os.path.isfile(os.path.join(out, "results.csv"))
    done = [f for f in os.listdir(cells) if not f.startswith(".tmp-")]
    from pgbench.suites.registry import get_suite
    assert 1 <= len(done) < sum(len(get_suite(s).cells(False)) for s in LONG_RUN)


def test_numba_wrapped_interrupt_is_an_interrupt(tmp_path, monkeypatch):
    """A SIGINT that numba reports as SystemError (the KeyboardInterrupt as its context) ends the
    run as an interrupt, not an internal error."""
    real = runner.run_cell_record
    calls = []

    def cell(suite_id, N, quick, seed, backend="cpu"):
        calls.append(N)
        if len(calls) == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                raise SystemError("CPUDispatcher(<function _score_weights>) returned a result with an exception set")
        return real(suite_id, N, quick, seed, backend)

    monkeypatch.setattr(runner, "run_cell_record", cell)
    out = str(tmp_path / "run")
    with pytest.raises(RunInterrupted) as info:
        runner.run([SUITE], quick=True, out=out, progress=False, report=False)
    assert info.value.exit_status == 130
    assert str(info.value) == f"interrupted; finished cells are kept in {out} (continue with --resume {out})"
    assert _meta(out)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    # a SystemError that is no interrupt stays an error
    calls.clear()

    def broken(suite_id, N, quick, seed, backend="cpu"):
        raise SystemError("something else")

    monkeypatch.setattr(runner, "run_cell_record", broken)
    with pytest.raises(SystemError, match="something else"):
        runner.run([SUITE], quick=True, out=str(tmp_path / "run2"), progress=False, report=False)


def test_cli_prints_the_message_and_status(tmp_path, monkeypatch, capsys):
    from pgbench import cli

    def stopped(*a, **k):
        raise RunInterrupted("interrupted; finished cells are kept in X (continue with --resume X)", 143)

    monkeypatch.setattr(runner, "run", stopped)
    assert cli.main(["run", SUITE, "--out", str(tmp_path / "r")]) == 143
    assert capsys.readouterr().err.strip() == (
        "pgbench: interrupted; finished cells are kept in X (continue with --resume X)")

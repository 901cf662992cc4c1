"""What a new set of estimators costs in compiling, cold and warm.

    python benchmarks/compile_new_sets.py [OUT.json] [--problem frozen_lake]

Runs ``pgbench measure`` in fresh processes against empty numba caches (a temporary
``NUMBA_CACHE_DIR`` per scenario) and records, per command, the wall seconds and the seconds
numba spent compiling (numba's ``numba:compile`` event, as the command line reports it) with the
kernels it compiled:

- ``fresh``: nothing cached. The first set (``reinforce_rtg``, ``all_action``), then a second,
  new set (``rloo``, ``all_action``), then both again (warm).
- ``after_full_kernel``: the cache holds what a ``pgbench run`` compiles (the sampler with every
  estimator branch: ``pgbench.measure.engine.precompile``), then the same four commands. The
  goal: no new set pays more than 3 s of compiling once the all-branch kernel is cached.

Writes JSON (default results/bench/compile_new_sets.json) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = {"first": ["reinforce_rtg", "all_action"], "second": ["rloo", "all_action"]}

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pgbench import compile_notice
compile_notice.watch()
from pgbench.cli import main
rc = main(sys.argv[1:])
print("@@" + json.dumps({"rc": rc, "compile_seconds": compile_notice.compile_seconds(),
                         "compile_cpu_seconds": compile_notice.compile_cpu_seconds(), "cpu_seconds": time.process_time(),
                         "compiled": compile_notice.compiled(), "seconds_in_process": time.perf_counter() - t0}))
"""


def _child(args, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    if out.returncode != 0 or not line:
        raise SystemExit(f"failed: {args}\n{out.stderr[-3000:]}")
    rec = json.loads(line[-1][2:])
    rec.update(wall_seconds=wall, stderr=[ln for ln in out.stderr.splitlines() if ln.startswith("pgbench:")])
    return rec


def _precompile(cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    code = ("import json, time; from pgbench import compile_notice; compile_notice.watch(); "
            "from pgbench.measure.engine import precompile; precompile(); "
            "print('@@' + json.dumps({'compile_seconds': compile_notice.compile_seconds(), "
            "'compile_cpu_seconds': compile_notice.compile_cpu_seconds(), 'compiled': compile_notice.compiled()}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    rec = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    rec["wall_seconds"] = time.perf_counter() - t0
    return rec


def scenario(name: str, problem: str, full_first: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="pgbench-compile-") as cache:
        steps = {}
        if full_first:
            steps["precompile: the all-branch sampler"] = _precompile(cache)
            # what any measure compiles once whatever its estimators (statistics, contraction), as
            # after a `pgbench run`: a measure of another set
            args = ["measure", problem, "-N", "16", "-K", "100", "-e", "reinforce"]
            steps["a measure of another set (reinforce)"] = dict(_child(args, cache), estimators=["reinforce"])
        for when in ("cold", "warm"):
            for which, ests in SETS.items():
                args = ["measure", problem, "-N", "16", "-K", "100"] + [a for e in ests for a in ("-e", e)]
                steps[f"{which} set, {when}"] = dict(_child(args, cache), estimators=ests)
        return {"scenario": name, "steps": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=os.path.join(ROOT, "results", "bench", "compile_new_sets.json"))
    ap.add_argument("--problem", default="frozen_lake")
    ap.add_argument("--only", choices=["fresh", "after_full_kernel"], default=None,
                    help="one scenario; its result replaces that scenario in an existing OUT")
    a = ap.parse_args(argv)
    t0 = time.time()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {"problem": a.problem, "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_average_before": load0,
              "scenarios": [scenario(name, a.problem, name != "fresh") for name in ("fresh", "after_full_kernel")
                            if a.only in (None, name)]}
    if a.only and os.path.isfile(a.out):  # keep the other scenario's figures from the earlier run
        with open(a.out) as f:
            old = json.load(f)
        keep = [sc for sc in old.get("scenarios", []) if sc["scenario"] != a.only]
        for sc in keep:
            sc.setdefault("from_run_with_load_average", old.get("load_average_before"))
        result["scenarios"] = sorted(keep + result["scenarios"], key=lambda sc: sc["scenario"] != "fresh")
    result["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["total_seconds"] = time.time() - t0
    import numba
    result["numba"] = numba.__version__
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, a.out)
    print(f"{'scenario':18s} {'step':44s} {'wall s':>7s} {'compile s':>9s} {'(CPU s)':>8s}  kernels compiled")
    for sc in result["scenarios"]:
        for step, r in sc["steps"].items():
            print(f"{sc['scenario']:18s} {step:44s} {r['wall_seconds']:7.1f} {r['compile_seconds']:9.1f} "
                  f"{r['compile_cpu_seconds']:8.1f}  {', '.join(r['compiled'])}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

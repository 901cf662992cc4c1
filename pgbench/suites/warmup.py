"""A cold start on two cores: compile the MDP sampler in a second process while this one runs
the cells that do not need it.

numba compiles one function at a time, on one core. On a fresh install the MDP sampler (pass 1,
the full pass 2 and the batch path's episode kernels) is about half of a quick run's compile
time; the stochastic-objective and linear-Gaussian kernels, the bootstrap and the moment DP are
the other half. :class:`ColdStart` starts ``python -m pgbench.suites.warmup`` (which calls
:func:`pgbench.measure.engine.precompile`, writing numba's on-disk cache), moves the run's
non-MDP cells to the front, compiles the moment DP here if the other process is still busy
when they are done, and waits for it before the first MDP cell, which then loads the sampler
from the cache. Results do not depend on the order of cells (each cell's random streams come
from its own id), and a second process that fails costs nothing but time: this one then
compiles the sampler itself.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

WARM_PROBLEM = "garnet:S=3,A=2,b=2,seed=0,horizon=3"


def compile_exact() -> None:
    """Compile (or load) the moment DP's passes: return, trace, importance sampling, variance split."""
    from pgbench.exact.moments import exact_moments, variance_decomposition
    exact_moments(WARM_PROBLEM, ["reinforce", "reinforce_rtg", "importance_sampling:mu=mix,eps=0.3"], batch=2,
                  method="dp")
    variance_decomposition(WARM_PROBLEM, ["reinforce_rtg"])


def _start() -> Optional[subprocess.Popen]:
    import pgbench
    root = os.path.dirname(os.path.dirname(os.path.abspath(pgbench.__file__)))
    from pgbench.children import child_env
    try:  # -P: the working directory is not put on the child's sys.path (a numpy.py there must not run)
        return subprocess.Popen([sys.executable, "-P", "-m", "pgbench.suites.warmup"], env=child_env(root),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


class ColdStart:
    """The second process of a cold run and the cell order that keeps both cores busy."""

    def __init__(self, cells: list, is_mdp):
        self.proc = None
        self.cells = list(cells)
        self._is_mdp = is_mdp
        mdp = [c for c in cells if is_mdp(c[0])]
        if mdp and (os.cpu_count() or 1) >= 2:
            self.proc = _start()
        if self.proc is not None:
            self.cells = [c for c in cells if not is_mdp(c[0])] + mdp

    def before(self, suite_id: str) -> None:
        """Call before each cell: the first MDP cell waits for the sampler's compilation."""
        if self.proc is None or not self._is_mdp(suite_id):
            return
        if self.proc.poll() is None:
            compile_exact()
        self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the second process if the run ends early (an error, an interrupt)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def main() -> int:
    from pgbench.measure.engine import precompile
    precompile()
    return 0


if __name__ == "__main__":
    sys.exit(main())

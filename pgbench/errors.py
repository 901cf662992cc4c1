"""Errors pgbench raises for bad input.

Every problem with user input surfaces as a :class:`PGBenchError`, a ``ValueError``
whose message names the offending object; the command line prints that message on
one line and exits with :attr:`PGBenchError.exit_status` (2: bad input; 1: the
environment, such as a run directory another process is writing).
"""


class PGBenchError(ValueError):
    """Bad input: the message says what is wrong and where."""

    exit_status = 2


class ResourceLimitError(PGBenchError):
    """The work asked for needs more memory (or steps) than the configured limit allows."""


class ProvenanceError(PGBenchError):
    """A run directory holds a cell that another run (seed, suite, sampler, ...) made, or the
    options given do not match the run being continued."""


class RunLockedError(PGBenchError):
    """Another live process is writing the run directory."""

    exit_status = 1


class PGBenchWarning(UserWarning):
    """Something will work but costs more than one would expect (memory, time)."""


def user_exit(where: str, exc: BaseException, when: str = "") -> PGBenchError:
    """The error for user code (an estimator, a policy, a plug-in) that called ``sys.exit``: it
    must return its output, not end pgbench (whose output would then be missing with status 0).
    ``os._exit`` ends the process at once and cannot be caught."""
    code = getattr(exc, "code", None)
    return PGBenchError(f"{where} called sys.exit({code!r}){when}; user code must return (or raise), "
                        f"not end the process")


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) or SIGTERM after saving what it had; the message says
    where its finished cells are, ``exit_status`` is 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, exit_status: int = 130):
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status

"""Errors pgbench raises for bad input.

Every problem with user input surfaces as a :class:`PGBenchError`, a ``ValueError``
whose message names the offending object; the command line prints that message on
one line and exits non-zero.
"""


class PGBenchError(ValueError):
    """Bad input: the message says what is wrong and where."""

"""The benchmark suites as tests: ``pytest suites/`` (all cells), ``pytest suites/ --pgbench-quick``
(the CI subset). Options and fixtures come from pgbench's pytest plugin (``pgbench.pytest_plugin``,
registered as a ``pytest11`` entry point); see its docstring. Useful extras::

    pytest suites/ --pgbench-quick --benchmark-json bench.json --pgbench-out results/run-ci
    pytest suites/ -k "baselines"          # one family
    pytest suites/test_throughput.py       # the kernel's ns/step only
"""

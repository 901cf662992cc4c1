"""Reports of run directories: figures (:mod:`.figures`), ``report.md`` / ``report.html``
(:func:`pgbench.reports.report.write_report`) and run comparison
(:func:`pgbench.reports.compare.compare`, :func:`pgbench.reports.compare.format_compare`).

Submodules are imported on demand so that ``import pgbench`` does not load matplotlib.
"""

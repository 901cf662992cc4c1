"""Sphinx configuration: the contract (contract.rst) and an API reference from the docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (warnings are errors)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "pgbench"
author = "pgbench developers"
copyright = "pgbench developers"  # noqa: A001 (Sphinx's name)
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "none"  # signatures stay short; the docstrings say what each argument is
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
default_role = "code"  # `x` in a docstring is code, as in the README

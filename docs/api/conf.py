"""Sphinx configuration of the optax_gsm API reference.

Build from the repository root:
  pip install -e ".[docs]" && sphinx-build -W -b html docs/api docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

import optax_gsm  # pylint: disable=g-import-not-at-top,wrong-import-position

project = "optax_gsm"
author = "optax_gsm authors"
copyright = "optax_gsm authors"  # pylint: disable=redefined-builtin
release = optax_gsm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
]

# Google-style docstrings, as optax's.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "none"  # signatures show them; no unresolvable targets
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
autosummary_generate = False
add_module_names = False

# The docstrings' examples, run by `sphinx-build -b doctest docs/api ...`
# (pytest runs them too, through --doctest-modules).
# pytest runs each example in its module's globals; here they share these.
doctest_global_setup = """
import jax, jax.numpy as jnp, optax, optax_gsm
from optax_gsm import *
from optax_gsm.checkpoint import (check_compatible, check_opt_state, describe,
                                  restore, save)
"""

intersphinx_mapping = {}  # offline builds: no inventories fetched

html_theme = "sphinx_book_theme"
html_title = f"optax_gsm {release}"
html_static_path = []
exclude_patterns = ["_build"]
nitpicky = False

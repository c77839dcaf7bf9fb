"""
Sphinx configuration of the API reference. Build it with (from the repository root):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build needs no network. ``ART_PRUNE_DOCS_INTERSPHINX=1`` adds links to ART's and Keras's documentation
(fetched from the web while building).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import art_pruning_defense  # noqa: E402

project = "art_pruning_defense"
author = "art_pruning_defense contributors"
copyright = "the art_pruning_defense contributors, MIT licence"
version = release = art_pruning_defense.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]
# The guide, the lab workflow, the benchmark and the other prose pages are Markdown (myst-parser); the API pages reST.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3  # [text](page.md#a-heading) links to headings down to ###
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The docstrings are reST with :param:/:return: fields (ART's convention); napoleon only tidies Google-style leftovers.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False

intersphinx_mapping: dict[str, tuple[str, None]] = {}
if os.environ.get("ART_PRUNE_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "art": ("https://adversarial-robustness-toolbox.readthedocs.io/en/latest", None),
        "keras": ("https://keras.io/api", None),
    }

html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build"]

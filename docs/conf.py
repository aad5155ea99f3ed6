"""Sphinx configuration: the API reference, built from the docstrings, and
the repository's Markdown pages (MyST).

Build: `pip install -e ".[docs]"`, then
`sphinx-build -W -b html docs docs/_build/html` (warnings are errors).
"""

import os
import re
import sys

# Document the checkout this file belongs to, not another installed copy.
sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

import pel_jax

project = "pel_jax"
author = "pel_jax authors"
copyright = "pel_jax authors"
release = pel_jax.__version__
version = release

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "mathml",
  "myst_parser",
  "repo_pages",
]
# The Markdown files: the guide, and the repository's own pages included by
# stubs (docs/readme.md includes ../README.md) whose links repo_pages rewrites.
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
repo_pages = {
  "README.md": "readme",
  "examples/unet/README.md": "example",
  "benchmarks/README.md": "benchmarks",
  "experiments/README.md": "experiments",
  "CHANGELOG.md": "changelog",
}
# Anchors for `guide.md#bad-input`-style links, as GitHub makes them.
myst_heading_anchors = 3
# Formulas as MathML (docs/_ext/mathml.py): drawn by the browser, offline.
html_math_renderer = "mathml"

# Google-style docstrings (Args/Returns/Examples), as the code writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# `x` in a docstring names a Python object or a shape: show it as code.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Show the alias, not the union it stands for.
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike"}
# Show `pel_jax.pel_loss`, the public name, not the private module's.
add_module_names = False

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"pel_jax {release}"


def _alias_names(app, what, name, obj, options, signature, return_annotation):
  """Writes `ArrayLike | None` for Sphinx's `TypeAliasForwardRef(...) | None`."""
  del app, what, name, obj, options
  if signature:
    signature = re.sub(r"TypeAliasForwardRef\('([^']*)'\)", r"\1", signature)
  return signature, return_annotation


def setup(app):
  app.connect("autodoc-process-signature", _alias_names)

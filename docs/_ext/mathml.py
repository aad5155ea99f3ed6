"""Renders the docstrings' LaTeX as MathML when Sphinx builds the HTML.

MathML is drawn by the browser itself: the pages need no JavaScript and no
network (MathJax came from a CDN, so formulas showed as raw LaTeX offline).
The conversion is docutils' own (`docutils.utils.math.latex2mathml`), so
this adds no dependency; LaTeX it cannot convert fails the build.
"""

import re

from docutils import nodes
from docutils.utils.math import latex2mathml
from sphinx.util import logging

_LOG = logging.getLogger(__name__)
# LaTeX that docutils' converter lacks, as the nearest form it has: a bare
# size (\big) as the left one (\bigl; MathML sizes both alike), \dots as
# \ldots.
_SUBSTITUTIONS = (
  (re.compile(r"\\(big|Big|bigg|Bigg)(?![A-Za-z])"), r"\\\1l"),
  (re.compile(r"\\dots(?![A-Za-z])"), r"\\ldots"),
)


def _mathml(self, node, as_block):
  tex = node.astext()
  for pattern, replacement in _SUBSTITUTIONS:
    tex = pattern.sub(replacement, tex)
  try:
    return latex2mathml.tex2mathml(tex, as_block=as_block)
  except (latex2mathml.MathError, SyntaxError) as error:
    _LOG.warning(
      "MathML cannot render %r: %s", node.astext(), error, location=node
    )
    return self.encode(node.astext())


def _visit_inline(self, node):
  self.body.append(_mathml(self, node, as_block=False))
  raise nodes.SkipNode


def _visit_block(self, node):
  self.body.append(self.starttag(node, "div", CLASS="math"))
  self.body.append(_mathml(self, node, as_block=True))
  self.body.append("</div>\n")
  raise nodes.SkipNode


def setup(app):
  app.add_html_math_renderer(
    "mathml", (_visit_inline, None), (_visit_block, None)
  )
  return {"parallel_read_safe": True, "parallel_write_safe": True}

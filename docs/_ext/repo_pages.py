"""Makes the repository's Markdown links work in the built site.

README.md and the other Markdown files link each other by their paths in the
repository (`docs/guide.md#bad-input`, `examples/unet/README.md`), as GitHub
shows them. In the site, the files outside docs/ are pages whose source is a
stub that includes them (docs/readme.md includes ../README.md), so each link
is rewritten, as the file is read, to the path that Sphinx resolves from the
page that shows it: a file listed in `repo_pages` becomes a link to its stub's
page, a file of docs/ a link to its page, any other file (LICENSE, a script,
an image) a `path:` link to it, which MyST makes a download (an image's path
is shown).
A link to a folder has nothing to open in the site, so it keeps its text only.
"""

import os
import re

# [text](target) and ![alt](target); a target holds no space or parenthesis.
_LINK = re.compile(r"(!?\[[^\]]*\])\(([^()\s]+)\)")
_EXTERNAL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:|#)")


def _rewrite(app, text, file_dir, page_dir):
  """Rewrites the links of a Markdown file in `file_dir` shown in `page_dir`."""
  root = os.path.normpath(os.path.join(app.srcdir, ".."))
  stubs = {
    os.path.join(root, path): os.path.join(app.srcdir, docname + ".md")
    for path, docname in app.config.repo_pages.items()
  }

  def link(match):
    label, target = match.groups()
    if _EXTERNAL.match(target):
      return match.group(0)
    path, hash_, anchor = target.partition("#")
    full = os.path.normpath(os.path.join(file_dir, path))
    if os.path.isdir(full):
      return label.lstrip("!")[1:-1]
    full = stubs.get(full, full)
    relative = os.path.relpath(full, page_dir)
    if not label.startswith("!") and not full.startswith(
      os.path.join(app.srcdir, "")
    ):
      # MyST would look for a .md file outside docs/ among the pages.
      relative = "path:" + relative
    return f"{label}({relative}{hash_}{anchor})"

  return _LINK.sub(link, text)


def _on_include(app, relative_path, parent_docname, content):
  """Rewrites an included file's links for the page that includes it."""
  included = os.path.normpath(os.path.join(app.srcdir, relative_path))
  page_dir = os.path.dirname(app.env.doc2path(parent_docname))
  content[0] = _rewrite(app, content[0], os.path.dirname(included), page_dir)


def _on_source(app, docname, source):
  """Rewrites the links of a Markdown page of docs/ (the guide)."""
  path = str(app.env.doc2path(docname))
  if path.endswith(".md"):
    page_dir = os.path.dirname(path)
    source[0] = _rewrite(app, source[0], page_dir, page_dir)


def setup(app):
  # Repository path (from the repository root) -> docname of its stub page.
  app.add_config_value("repo_pages", {}, "env", dict)
  app.connect("include-read", _on_include)
  app.connect("source-read", _on_source)
  return {"parallel_read_safe": True, "parallel_write_safe": True}

"""docs/_ext/repo_pages.py: the Markdown links, as written for GitHub, point
into the built site (the docs build with -W checks that they resolve)."""

import importlib.util
import pathlib
import types

import pytest

_EXT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "_ext"


def _module():
  spec = importlib.util.spec_from_file_location(
    "repo_pages", _EXT / "repo_pages.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(name="repo")
def _repo(tmp_path):
  """A repository with docs/, a README, an example folder and a results folder."""
  files = ("README.md", "LICENSE", "examples/unet/README.md", "docs/guide.md")
  for path in files + ("docs/index.rst", "examples/unet/sample.png"):
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text("x")
  (tmp_path / "experiments/results/real").mkdir(parents=True)
  config = types.SimpleNamespace(
    repo_pages={"README.md": "readme", "examples/unet/README.md": "example"}
  )
  return types.SimpleNamespace(srcdir=str(tmp_path / "docs"), config=config)


def test_readme_links_become_pages_downloads_or_text(repo):
  root = pathlib.Path(repo.srcdir).parent
  text = (
    "[guide](docs/guide.md#bad-input), [UNet](examples/unet/README.md), "
    "[LICENSE](LICENSE), [raw](experiments/results/real/), "
    "[web](https://example.org/a.md), [here](#install), [api](docs/index.rst)"
  )
  got = _module()._rewrite(repo, text, str(root), repo.srcdir)
  assert got == (
    "[guide](guide.md#bad-input), [UNet](example.md), "
    "[LICENSE](path:../LICENSE), raw, "
    "[web](https://example.org/a.md), [here](#install), [api](index.rst)"
  )


def test_links_of_a_nested_file_and_of_the_guide(repo):
  module = _module()
  root = pathlib.Path(repo.srcdir).parent
  example = "![sample](sample.png) [top](../../README.md)"
  got = module._rewrite(
    repo, example, str(root / "examples" / "unet"), repo.srcdir
  )
  assert got == "![sample](../examples/unet/sample.png) [top](readme.md)"
  guide = "[README](../README.md), [reference](index.rst)"
  got = module._rewrite(repo, guide, repo.srcdir, repo.srcdir)
  assert got == "[README](readme.md), [reference](index.rst)"

"""The example's module layout: no import cycle, no private cross-module use."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "unet"


def _modules() -> dict[str, ast.Module]:
  return {p.stem: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
  """Sibling modules imported with `from . import x` or `from .x import y`."""
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.level == 1:
      out |= (
        {a.name for a in node.names} if node.module is None else {node.module}
      )
  return out


def test_no_import_cycle():
  graph = {name: _imports(tree) for name, tree in _modules().items()}

  def reaches(start, goal, seen):
    for nxt in graph.get(start, ()):
      if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
        return True
    return False

  assert [m for m in graph if reaches(m, m, set())] == []


def test_no_private_names_across_modules():
  modules = _modules()
  bad = []
  for name, tree in modules.items():
    siblings = _imports(tree) & set(modules)
    for node in ast.walk(tree):
      if (
        isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and isinstance(node.value, ast.Name)
        and node.value.id in siblings
      ):
        bad.append(f"{name}.py: {node.value.id}.{node.attr}")
      if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
        bad += [
          f"{name}.py: from .{node.module} import {a.name}"
          for a in node.names
          if a.name.startswith("_")
        ]
  assert bad == []


def test_train_module_stays_small():
  assert len((PACKAGE / "train.py").read_text().splitlines()) <= 300

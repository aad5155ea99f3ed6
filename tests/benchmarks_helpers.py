"""Loading a benchmark script and reading its markdown table, for the smoke tests."""

import importlib.util
import pathlib
import sys

_DIR = pathlib.Path(__file__).parent.parent / "benchmarks"


def load_bench(name: str):
  """`benchmarks/<name>.py` as a module (registered: dataclasses need it)."""
  spec = importlib.util.spec_from_file_location(name, _DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def table_rows(out: str, start: str = "| [") -> list[list[str]]:
  """The stripped cells of each line of `out` that starts with `start`."""
  return [
    [cell.strip() for cell in line.split("|")[1:-1]]
    for line in out.splitlines()
    if line.startswith(start)
  ]

"""Smoke test of benchmarks/bench_head.py on tiny shapes (not a timing test)."""

import importlib.util
import pathlib

_PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_head.py"


def test_tiny_run_prints_every_row(capsys):
  spec = importlib.util.spec_from_file_location("bench_head", _PATH)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  bench.main(["--tiny", "--rounds", "1"])
  rows = [
    line.split("|")[1:-1]
    for line in capsys.readouterr().out.splitlines()
    if line.startswith("| [")
  ]
  assert [(r[0].strip(), r[1].strip()) for r in rows] == [
    ("[1, 8x8x8]", "3"),
  ]
  for row in rows:
    assert float(row[3]) >= 0 and float(row[4]) > 0  # temporaries, MiB
    assert float(row[8].strip(" x")) > 0  # speedup

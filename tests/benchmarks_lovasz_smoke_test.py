"""Smoke test of benchmarks/bench_lovasz.py on tiny shapes (not a timing test)."""

import importlib.util
import pathlib

_PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_lovasz.py"


def test_tiny_run_prints_every_row(capsys):
  spec = importlib.util.spec_from_file_location("bench_lovasz", _PATH)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  bench.main(["--tiny", "--rounds", "1"])
  rows = [
    line.split("|")[1:-1]
    for line in capsys.readouterr().out.splitlines()
    if line.startswith("| [")
  ]
  names = [name.strip() for _, name, _, _ in rows]
  assert len(rows) == 10, rows
  assert names.count("dice_loss") == 2
  assert names.count("sort only, int32 keys") == 2
  assert all(float(ms) > 0 for _, _, ms, _ in rows)
  assert [
    float(r.strip(" x")) for _, n, _, r in rows if n.strip() == "dice_loss"
  ] == [1.0, 1.0]

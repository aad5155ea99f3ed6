"""Smoke test of benchmarks/bench_head.py on tiny shapes (not a timing test)."""

from tests.benchmarks_helpers import load_bench
from tests.benchmarks_helpers import table_rows


def test_tiny_run_prints_every_row(capsys):
  load_bench("bench_head").main(["--tiny", "--rounds", "1"])
  rows = table_rows(capsys.readouterr().out)
  assert [(r[0], r[1]) for r in rows] == [
    ("[1, 8x8x8]", "3"),
  ]
  for row in rows:
    assert float(row[3]) >= 0 and float(row[4]) > 0  # temporaries, MiB
    assert float(row[8].strip(" x")) > 0  # speedup

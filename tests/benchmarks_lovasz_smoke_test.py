"""Smoke test of benchmarks/bench_lovasz.py on tiny shapes (not a timing test)."""

from tests.benchmarks_helpers import load_bench
from tests.benchmarks_helpers import table_rows


def test_tiny_run_prints_every_row(capsys):
  load_bench("bench_lovasz").main(["--tiny", "--rounds", "1"])
  rows = table_rows(capsys.readouterr().out)
  names = [name for _, name, _, _ in rows]
  assert len(rows) == 10, rows
  assert names.count("dice_loss") == 2
  assert names.count("sort only, int32 keys") == 2
  assert all(float(ms) > 0 for _, _, ms, _ in rows)
  assert [float(r.strip(" x")) for _, n, _, r in rows if n == "dice_loss"] == [
    1.0,
    1.0,
  ]

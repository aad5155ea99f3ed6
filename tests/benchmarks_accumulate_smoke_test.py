"""Smoke test of benchmarks/bench_accumulate.py on tiny shapes (not timing)."""

from tests.benchmarks_helpers import load_bench


def test_rows_and_exact_gradients():
  bench = load_bench("bench_accumulate")
  rows = bench.run((4, 4, 4, 3), 5, 3, (1, 2), rounds=1)
  assert set(rows) == {
    "plain value_and_grad",
    "accumulated K=1",
    "accumulated K=2",
  }
  assert all(r["ms"] > 0 and r["temp"] >= 0 for r in rows.values())
  assert all(r["err"] < 1e-5 for r in rows.values())  # float32 gradients.
  assert "| accumulated K=2 |" in bench.table(rows)

"""Smoke test of benchmarks/bench_accumulate_example.py (tiny; not timing)."""

from examples.unet import configs
from tests.benchmarks_helpers import load_bench


def test_rows_and_same_loss():
  bench = load_bench("bench_accumulate_example")
  cfg = configs.get_config(image_size=8, batch_size=4, width=2, depth=1)
  rows = bench.run(cfg, (2,), rounds=1)
  assert set(rows) == {"plain step (K=1)", "accumulate K=2"}
  assert all(r["ms"] > 0 and r["temp"] > 0 for r in rows.values())
  assert rows["accumulate K=2"]["err"] < 1e-5  # the same batch loss
  assert "| accumulate K=2 |" in bench.table(rows)

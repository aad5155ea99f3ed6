"""Smoke test of benchmarks/bench_distance.py on tiny shapes (not timing)."""

import numpy as np

from tests.benchmarks_helpers import load_bench


def _bench():
  return load_bench("bench_distance")


def test_masks_have_background_and_foreground():
  bench = _bench()
  for kind in bench.MASKS:
    for shape in ((2, 16, 16), (1, 8, 8, 8)):
      mask = bench.make_mask(kind, shape)
      assert mask.shape == shape, kind
      assert all(m.any() and not m.all() for m in mask), kind
  corner = bench.make_mask("corner", (1, 4, 4))
  np.testing.assert_array_equal(np.flatnonzero(~corner), [0])


def test_table_rows_agree_with_scipy(capsys):
  bench = _bench()
  bench.main(["--sizes", "2x12x10", "1x6x7x5", "--repeats", "1"])
  rows = [
    line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]
  ]
  assert len(rows) == 2 * len(bench.MASKS)
  for shape, mask, scipy_ms, ours_ms, _, diff in rows:
    assert float(scipy_ms) >= 0 and float(ours_ms) >= 0, (shape, mask)
    assert float(diff) < 1e-5, (shape, mask)  # float32 distances.

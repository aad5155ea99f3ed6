"""Smoke test of benchmarks/bench_surface.py on a tiny shape (not timing;
without MONAI, whose column needs the peers' virtual environment)."""

from tests.benchmarks_helpers import load_bench


def test_table_row_agrees_with_scipy(capsys):
  bench = load_bench("bench_surface")
  argv = ["--sizes", "2x24x20", "--pairs", "near", "--repeats", "1"]
  bench.main(argv + ["--peers-python", ""])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3
  shape, masks, scipy_ms, ours_ms, _, diff, monai = lines[2].split("|")[1:-1]
  assert (shape.strip(), masks.strip()) == ("2x24x20", "near")
  assert float(scipy_ms) >= 0 and float(ours_ms) >= 0
  assert float(diff) < 1e-5  # float32 distances
  assert monai.strip() == "-"

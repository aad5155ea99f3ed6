"""Smoke test of benchmarks/bench_losses.py on tiny shapes (not a timing test)."""

from tests.benchmarks_helpers import load_bench
from tests.benchmarks_helpers import table_rows

_NAMES = [
  "dice_loss",
  "mcc_loss",
  "generalized_wasserstein_dice_loss",
  "unified_focal_loss",
  "focal_cross_entropy",
  "dice_loss + CE",
  "dice_loss + CE, ce_class_weights",
]


def test_tiny_run_prints_every_row(capsys):
  load_bench("bench_losses").main(["--tiny", "--rounds", "1", "--classes", "3"])
  rows = table_rows(capsys.readouterr().out)
  assert [(shape, name) for shape, name, _, _ in rows] == [
    ("[2, 16, 16, 3]", name) for name in _NAMES
  ]
  assert all(float(ms) > 0 for _, _, ms, _ in rows)
  assert [r for _, n, _, r in rows if n == "dice_loss"] == ["1.00x"]

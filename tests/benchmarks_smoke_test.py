"""Smoke test of benchmarks/bench_loss.py on tiny shapes (not a timing test)."""

import importlib.util
import pathlib
import sys

_PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_loss.py"


def _bench():
  spec = importlib.util.spec_from_file_location("bench_loss", _PATH)
  mod = importlib.util.module_from_spec(spec)
  sys.modules["bench_loss"] = mod  # dataclasses need the module registered
  spec.loader.exec_module(mod)
  return mod


def test_suite_has_every_row():
  bench = _bench()
  rows = []
  for case in bench.tiny_cases()[1:2] + bench.tiny_cases()[4:5]:
    rows += bench.run_case(case, rounds=1, min_sample_s=0.0)
  names = {(r["case"], r["variant"]) for r in rows}
  for case in bench.tiny_cases()[1:2] + bench.tiny_cases()[4:5]:
    expected = {"a * b (roofline)", "pel_jax", "pel_jax batch=True",
                "plain jnp autodiff", "pel_jax dice (n=1)"}
    if case.logits:
      expected.add("optax dice (one-hot)")
    assert {v for c, v in names if c == case.name} == expected
  assert all(r["ms"] > 0 for r in rows)
  assert "| case |" in bench.table(rows)


def test_median_rows_takes_per_field_medians():
  bench = _bench()
  runs = [[dict(case="c", variant="v", ms=float(ms), vs_roofline=float(r),
                temp_bytes=7)] for ms, r in ((3, 1.5), (1, 4.0), (2, 2.0))]
  (row,) = bench.median_rows(runs)
  assert (row["ms"], row["vs_roofline"]) == (2.0, 2.0)
  assert (row["case"], row["variant"], row["temp_bytes"]) == ("c", "v", 7)
  assert row["repeats"] == 3

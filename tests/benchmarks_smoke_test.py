"""Smoke test of benchmarks/bench_loss.py on tiny shapes (not a timing test)."""

import hashlib
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from tests import reference
from tests.benchmarks_helpers import load_bench

_DIR = pathlib.Path(__file__).parent.parent / "benchmarks"
_ONE_CASE = [
  "--tiny",
  "--only",
  "binary logits f32",
  "--no-unet",
  "--rounds",
  "1",
]
_SMALLEST = ["--tiny", "--classes", "2", "--dims", "2", "--rounds", "1"]


def _bench(name: str = "bench_loss"):
  return load_bench(name)


def _snapshot(folder: pathlib.Path) -> dict:
  return {
    p.name: hashlib.sha256(p.read_bytes()).hexdigest()
    for p in folder.iterdir()
    if p.is_file()
  }


def test_suite_has_every_row():
  bench = _bench()
  rows = []
  for case in bench.tiny_cases()[1:2] + bench.tiny_cases()[4:5]:
    rows += bench.run_case(case, rounds=1, min_sample_s=0.0)
  names = {(r["case"], r["variant"]) for r in rows}
  for case in bench.tiny_cases()[1:2] + bench.tiny_cases()[4:5]:
    expected = {
      "a * b (roofline)",
      "pel_jax",
      "pel_jax batch=True",
      "plain jnp autodiff",
      "pel_jax dice (n=1)",
    }
    if case.logits:
      expected.add("optax dice (one-hot)")
    assert {v for c, v in names if c == case.name} == expected
  assert all(r["ms"] > 0 for r in rows)
  pel = [r for r in rows if r["variant"] == "pel_jax"]
  assert all(r["over_pel"] == 1.0 for r in pel)
  assert all(r["faults_per_call"] >= 0 for r in rows)
  assert "| case |" in bench.table(rows)
  assert "page faults/call" in bench.table(rows)


def test_page_faults_per_call_count_fresh_pages():
  bench = _bench()
  size = 64 * 2**20  # over glibc's 32 MiB mmap ceiling: mapped every call
  fns = {
    "touch": lambda: np.ones(size // 4, np.float32).sum(),
    "noop": lambda: np.float32(0),
  }
  faults = {}
  bench._time_round_robin(  # pylint: disable=protected-access
    fns, {"touch": (), "noop": ()}, 3, 0.0, faults_out=faults
  )
  # 16384 pages of 4 KiB; 32 with transparent 2 MiB huge pages.
  assert faults["touch"] >= 32
  assert faults["noop"] < faults["touch"]


def test_class_sweep_rows_and_table():
  bench = _bench()
  assert bench.parse_classes("all") == (1, 2, 4, 8, 16, 21, 32, 64, 128)
  assert bench.parse_classes("3,21") == (3, 21)
  for bad in ("0,2", "x", ""):
    with pytest.raises(Exception, match="--classes"):
      bench.parse_classes(bad)
  cases = bench.sweep_cases((1, 3), "tiny")
  assert [c.shape for c in cases] == [
    (2, 8, 8, 1),
    (2, 8, 8, 3),
    (2, 4, 4, 4, 1),
    (2, 4, 4, 4, 3),
  ]
  assert all(c.int_labels and c.logits for c in cases)
  rows = []
  for case in cases[1:3]:
    rows += bench.run_case(
      case, rounds=1, min_sample_s=0.0, variant_set=bench.sweep_variants
    )
  assert {r["variant"] for r in rows} == {
    "a * b (roofline)",
    "pel_jax",
    "plain jnp autodiff",
    "optax dice (one-hot)",
  }
  lines = bench.sweep_table(rows).splitlines()
  assert len(lines) == 2 + 2  # header, rule, one line per case
  assert lines[2].startswith("| 3-class 2D logits, int labels [2×8×8×3] |")
  assert lines[3].startswith("| 1-class 3D logits, int labels [2×4×4×4×1] |")


def test_default_run_writes_nothing(tmp_path, monkeypatch, capsys):
  bench = _bench()
  before = _snapshot(_DIR)
  monkeypatch.chdir(tmp_path)
  rows, _ = bench.main(_SMALLEST)
  assert {r["case"] for r in rows} == {"2-class 2D logits, int labels"}
  assert "| 2-class 2D logits, int labels [2×8×8×2] |" in (
    capsys.readouterr().out
  )
  assert _snapshot(_DIR) == before
  assert not list(tmp_path.iterdir())


def test_json_refuses_to_replace_a_file_unless_asked(tmp_path):
  bench = _bench()
  out = tmp_path / "mine.json"
  out.write_text("keep me")
  with pytest.raises(SystemExit):
    bench.main(_SMALLEST + ["--json", str(out)])
  assert out.read_text() == "keep me"
  with pytest.raises(SystemExit):  # The writer itself refuses too.
    bench.save(str(out), "new", overwrite=False)
  assert out.read_text() == "keep me"
  bench.main(_SMALLEST + ["--json", str(out), "--overwrite"])
  saved = json.loads(out.read_text())
  assert saved["size"] == "tiny"
  assert {r["variant"] for r in saved["rows"]} >= {
    "pel_jax",
    "a * b (roofline)",
  }
  fresh = tmp_path / "new.json"
  bench.main(_SMALLEST + ["--json", str(fresh)])
  assert json.loads(fresh.read_text())["rows"]


def test_write_results_refuses_small_or_partial_runs():
  bench = _bench()
  before = _snapshot(_DIR)
  for extra in (["--tiny"], ["--quick"], ["--only", "binary"]):
    with pytest.raises(SystemExit):
      bench.main(extra + ["--write-results", "--no-unet"])
  assert _snapshot(_DIR) == before


def test_write_results_replaces_both_result_files(tmp_path, monkeypatch):
  bench = _bench()
  # Full size is the only size it accepts: shrink the full cases instead.
  tiny = bench.tiny_cases()[1:2]
  monkeypatch.setattr(bench, "full_cases", lambda: tiny)
  binary = bench.option_cases("tiny")[2]
  monkeypatch.setattr(bench, "option_cases", lambda size: [binary])
  monkeypatch.setattr(bench, "_HERE", str(tmp_path))
  (tmp_path / "results_cpu.json").write_text("old")
  bench.main(
    [
      "--write-results",
      "--no-unet",
      "--no-monai",
      "--rounds",
      "1",
      "--repeat",
      "1",
    ]
  )
  saved = json.loads((tmp_path / "results_cpu.json").read_text())
  assert {r["case"] for r in saved["rows"]} == {"binary logits f32"}
  table = (tmp_path / "results_cpu.md").read_text()
  assert table.startswith("Machine: ")
  assert "| binary logits f32 [2×8×8×1] | pel_jax |" in table
  # The option table is part of the full run, in both files.
  assert "| binary logits, soft targets [2×8×8×1] | plain |" in table
  assert {r["variant"] for r in saved["options"]} >= {"plain", "squared=True"}


def test_monai_row_is_skipped_with_a_note_without_torch(monkeypatch, capsys):
  bench = _bench()
  monkeypatch.setitem(sys.modules, "monai", None)  # import now fails
  monkeypatch.setitem(sys.modules, "monai.losses", None)
  assert "not both importable" in bench.monai_missing()
  rows, _ = bench.main(_ONE_CASE)
  assert {r["case"] for r in rows} == {"binary logits f32"}
  assert bench.MONAI not in {r["variant"] for r in rows}
  assert "MONAI row: torch and monai are not both importable" in (
    capsys.readouterr().out
  )


def test_monai_row_computes_dice():
  """MONAI's DiceLoss on the row's inputs equals the float64 Dice oracle."""
  pytest.importorskip("torch")
  pytest.importorskip("monai")
  bench = _bench()
  for case in (bench.tiny_cases()[1], bench.tiny_cases()[5]):
    x, targets, _, _ = bench.make_inputs(case)
    loss = float(bench.monai_step(case, x, targets)())
    expected = reference.pel_numpy(
      np.asarray(x),
      np.asarray(targets),
      exponent=1.0,
      fp_weight=0.5,
      fn_weight=0.5,
      from_logits=True,
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_median_rows_takes_per_field_medians():
  bench = _bench()
  runs = [
    [
      dict(
        case="c", variant="v", ms=float(ms), vs_roofline=float(r), temp_bytes=7
      )
    ]
    for ms, r in ((3, 1.5), (1, 4.0), (2, 2.0))
  ]
  (row,) = bench.median_rows(runs)
  assert (row["ms"], row["vs_roofline"]) == (2.0, 2.0)
  assert (row["case"], row["variant"], row["temp_bytes"]) == ("c", "v", 7)
  assert row["repeats"] == 3


def _values(bench, case):
  """Each option row's loss value on the case's inputs."""
  x, targets, onehot, _ = bench.make_inputs(case)
  return {
    name: float(jax.jit(loss)(x, targets, onehot))
    for name, (loss, _) in bench.option_variants(case).items()
  }


def test_option_table_has_every_row():
  bench = _bench()
  ids, soft, binary, wide = bench.option_cases("tiny")
  assert ids.shape == (2, 8, 8, 8) and ids.int_labels
  assert soft.soft_targets and binary.shape[-1] == 1 and wide.shape[-1] == 21
  ce = {bench.CE_FUSED, bench.CE_APART}
  if bench.has_label_smoothing():
    ce |= {bench.CE_SMOOTHED, bench.CE_SMOOTHED_APART}
  ratio_only = {
    'generalized="square"',
    'generalized="simple"',
    'generalized="uniform"',
    "focal_gamma=2",
    "log_loss=True",
    'absent_classes="exclude"',
    'average="micro"',
  }
  pixel = {"plain", "squared=True", "batch=True", bench.CE_FUSED}
  assert set(bench.option_variants(ids)) == pixel | ratio_only | ce
  assert set(bench.option_variants(wide)) == pixel | ratio_only | ce
  assert set(bench.option_variants(soft)) == (
    pixel | {"soft_labels=True", bench.CE_APART}
  )
  rows = bench.run_option_case(binary, rounds=1, min_sample_s=0.0)
  assert {r["variant"] for r in rows} == (
    pixel | {"soft_labels=True", bench.CE_APART}
  )
  assert all(r["ms"] > 0 and r["temp_bytes"] is not None for r in rows)
  assert all(r["over_plain"] == 1.0 for r in rows if r["variant"] == "plain")
  assert all(r["full_size_arrays"] >= 1 for r in rows)  # the gradient
  fused = [r for r in rows if r["variant"] == bench.CE_FUSED]
  assert all(r["apart_over_this"] > 0 for r in fused)
  lines = bench.option_table(rows).splitlines()
  assert len(lines) == 2 + len(rows)
  assert "| binary logits, soft targets [2×8×8×1] | plain |" in lines[2]
  assert "– (CE)" in bench.option_table(fused)


def test_option_rows_compute_their_option():
  """Every row's loss differs from plain (its option is passed), and the
  fused CE equals pel + optax's CE computed apart."""
  bench = _bench()
  ids, soft, binary, _ = bench.option_cases("tiny")
  every = {case: _values(bench, case) for case in (ids, soft, binary)}
  for case, values in every.items():
    np.testing.assert_allclose(
      values[bench.CE_FUSED], values[bench.CE_APART], rtol=1e-5
    )
    if bench.CE_SMOOTHED in values:
      np.testing.assert_allclose(
        values[bench.CE_SMOOTHED], values[bench.CE_SMOOTHED_APART], rtol=1e-5
      )
    # Every class is present in these inputs: "exclude" keeps all of them.
    same = {'absent_classes="exclude"'}
    for name, value in values.items():
      if name != "plain" and name not in same:
        assert value != values["plain"], (case.name, name)
  # A hand-made row: soft labels against plain on soft targets, float64.
  x, t, _, _ = bench.make_inputs(soft)
  p = np.asarray(jax.nn.softmax(np.asarray(x, np.float64)), np.float64)
  g = np.asarray(t, np.float64)
  tp = np.minimum(p, g).sum((1, 2))
  numer = (g * np.minimum(p / g, 1) ** 3).sum((1, 2))
  denom = p.sum((1, 2)) + g.sum((1, 2)) - tp
  expected = np.mean(1 - (numer + 1e-5) / (denom + 1e-5))
  np.testing.assert_allclose(
    every[soft]["soft_labels=True"], expected, rtol=1e-5
  )


def test_label_smoothing_rows_follow_the_library(monkeypatch):
  bench = _bench()
  ids = bench.option_cases("tiny")[0]
  names = set(bench.option_variants(ids))
  has = bench.has_label_smoothing()
  assert (bench.CE_SMOOTHED in names) == has
  assert (bench.CE_SMOOTHED_APART in names) == has
  monkeypatch.setattr(bench, "has_label_smoothing", lambda: True)
  names = set(bench.option_variants(ids))
  assert {bench.CE_SMOOTHED, bench.CE_SMOOTHED_APART} <= names
  binary = bench.option_cases("tiny")[2]
  assert bench.CE_SMOOTHED not in set(bench.option_variants(binary))


def test_default_run_has_the_option_table(tmp_path, monkeypatch, capsys):
  bench = _bench()
  before = _snapshot(_DIR)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(bench, "tiny_cases", lambda: [])
  binary = bench.option_cases("tiny")[2]
  monkeypatch.setattr(bench, "option_cases", lambda size: [binary])
  rows, unet = bench.main(["--tiny", "--no-unet", "--rounds", "1"])
  assert unet is None
  assert {r["case"] for r in rows} == {binary.name}
  out = capsys.readouterr().out
  assert "| binary logits, soft targets [2×8×8×1] | soft_labels=True |" in out
  assert _snapshot(_DIR) == before
  assert not list(tmp_path.iterdir())
  # --options alone: the same table; --only filters its cases.
  rows, _ = bench.main(["--tiny", "--options", "--rounds", "1"])
  assert {r["case"] for r in rows} == {binary.name}
  with pytest.raises(SystemExit):
    bench.main(["--tiny", "--options", "--only", "no such case"])
  with pytest.raises(SystemExit):
    bench.main(["--tiny", "--options", "--classes", "2"])


def test_full_size_arrays_counts_what_xla_writes():
  bench = _bench()
  shape = (2, 8, 8, 3)
  a = np.ones(shape, np.float32)
  # One output; a and b are parameters (not written).
  assert bench.full_size_arrays(lambda a, b: a * b, a, a, shape=shape) == 1
  # Two distinct full-size outputs, one [2, 8, 8, 1] that does not count.
  two = lambda a, b: (a * b, a + b, (a - b)[..., :1])
  assert bench.full_size_arrays(two, a, a, shape=shape) == 2
  assert bench.full_size_arrays(two, a, a, shape=(2, 8, 8, 1)) == 1


@pytest.mark.parametrize("logits", [True, False])
def test_floor_two_pass_is_the_plain_loss_and_gradient(logits):
  bench = _bench()
  floor = _bench("bench_floor")
  case = bench.Case("binary", (2, 8, 8, 1), logits=logits)
  x, targets, onehot, _ = bench.make_inputs(case)
  activation = jax.nn.sigmoid if logits else floor._identity  # pylint: disable=protected-access
  value, grad = floor.two_pass(activation)(x, targets)
  plain = jax.value_and_grad(
    lambda x: bench.plain_pel(x, onehot, logits=logits)
  )
  want_value, want_grad = plain(x)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-9)
  if not logits:
    return
  rows = floor.run((2, 8, 8, 1), rounds=1)
  assert [name for name, _, _, _ in rows] == [
    "a * b (roofline)",
    "pel_jax value+grad",
    "two passes, no activation (p = x)",
    "two passes, jax.nn.sigmoid",
  ]

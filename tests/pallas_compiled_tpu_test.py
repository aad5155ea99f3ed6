"""Compile-only checks of the Pallas TPU kernels (benchmarks/bench_pallas.py).

No device: the kernels are compiled for TPU v5e through Mosaic and their
HBM bytes read from the compiled HLO. Needs libtpu (`pip install
"jax[tpu]==<jax's version>"`, which .ci/run does in its own venv); skipped
without it.
"""

import functools
import importlib.util
import os
import pathlib
import sys

import pytest

_DIR = pathlib.Path(__file__).parent.parent / "benchmarks"
pytestmark = pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None,
  reason="libtpu is not installed: no TPU compiler",
)
# The logits' TPU layouts: classes in front of the pixels (21, f32) and on
# the sublanes (2, bf16, where the ids weigh as much as the logits).
_CASES = [(21, "float32"), (2, "bfloat16")]


@functools.cache
def _bench():
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  sys.path.insert(0, str(_DIR))
  spec = importlib.util.spec_from_file_location(
    "bench_pallas", _DIR / "bench_pallas.py"
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("classes,dtype", _CASES)
def test_kernels_read_the_logits_in_their_tpu_layout(classes, dtype):
  bench = _bench()
  case = bench.bc.Case(classes, 2, dtype, "ids")
  rows = {r["program"]: r for r in bench.measure(case)}
  floor = rows["a * a"]["bytes"]  # read x twice, write once
  # The target: no kernel program above 1.1x a * a. A relayout copy
  # of the logits alone would add 2/3 of it (4.7x at 21 classes before).
  for name in ("Pallas forward kernel", "Pallas pullback kernel"):
    assert rows[name]["bytes"] <= 1.1 * floor, rows[name]
  # value+grad: the logits read twice, the ids twice, the gradient written.
  ids = floor / 3 * 4 / (classes * (2 if dtype == "bfloat16" else 4))
  assert rows["Pallas value+grad"]["bytes"] <= 1.05 * (floor + 2 * ids)
  assert rows["Pallas value+grad"]["bytes"] < rows["pel_jax (XLA)"]["bytes"]
  kernels = rows["Pallas value+grad"]["kernels"]
  assert [op for op, _ in kernels].count("custom-call") == 2
  # No full-size relayout of the logits or of their gradient.
  assert not [k for k in kernels if k[0] != "custom-call" and "512,512" in k[1]]

"""Compile-only checks of the Pallas kernels (benchmarks/bench_pallas.py).

No device: the TPU form is compiled for TPU v5e through Mosaic, the Triton
form for an H100, and their HBM bytes read from the compiled HLO. The TPU
test needs libtpu (`pip install "jax[tpu]==<jax's version>"`, which .ci/run
does in its own venv), the GPU one the CUDA plugin (`jax[cuda12]`, about
5 GB: not in CI; run it with JAX_PLATFORMS=cpu); each skips without its own.
"""

import functools
import importlib.util
import os
import pathlib
import sys

import pytest

_DIR = pathlib.Path(__file__).parent.parent / "benchmarks"
needs_libtpu = pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None,
  reason="libtpu is not installed: no TPU compiler",
)
needs_cuda = pytest.mark.skipif(
  importlib.util.find_spec("jax_cuda12_plugin") is None,
  reason="the CUDA plugin is not installed: no GPU compiler",
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


@needs_libtpu
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


@needs_cuda
def test_triton_form_compiles_for_h100_without_padding_copies():
  bench = _bench()
  case = bench.bc.Case(21, 2, "float32", "ids")
  rows = {r["program"]: r for r in bench.measure(case, "h100")}
  floor = rows["a * a"]["bytes"]  # read x once, write once on GPU
  # The forward reads the logits (1/2) and the ids; the pullback also
  # writes the gradient. A padded copy of the logits would add 1/2 or more.
  assert rows["Pallas forward kernel"]["bytes"] <= 0.6 * floor
  assert rows["Pallas pullback kernel"]["bytes"] <= 1.1 * floor
  assert rows["Pallas value+grad"]["bytes"] < rows["pel_jax (XLA)"]["bytes"]

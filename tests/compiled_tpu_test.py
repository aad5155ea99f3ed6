"""Compile-only checks of benchmarks/bench_compiled.py for TPU (no device).

The TPU tests need libtpu (`pip install "jax[tpu]==<jax's version>"`,
which .ci/run does in its own venv) and skip without it; the formula and
results tests run everywhere.
"""

import functools
import importlib.util
import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pel_jax

_DIR = pathlib.Path(__file__).parent.parent / "benchmarks"
_RESULTS = _DIR / "results_compiled.json"
needs_libtpu = pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None,
  reason="libtpu is not installed: no TPU compiler",
)
# Two layouts of the TPU programs: many classes in f32 (the class axis
# tiled second-minor) and two classes in bf16 (converted to f32 on read).
_CASES = [("21", "float32", "ids"), ("2", "bfloat16", "ids")]


@functools.cache
def _bench():
  spec = importlib.util.spec_from_file_location(
    "bench_compiled", _DIR / "bench_compiled.py"
  )
  mod = importlib.util.module_from_spec(spec)
  sys.modules["bench_compiled"] = mod  # dataclasses need the module
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("targets", ["ids", "soft"])
def test_plain_baseline_is_the_same_loss(targets):
  bench = _bench()
  case = bench.Case(8, 2, "float32", targets)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8)) * 2
  if targets == "ids":
    t = jax.random.randint(jax.random.PRNGKey(1), (2, 8, 8), 0, 8)
  else:
    t = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), x.shape))
  fns = bench.variants(case)
  value, grad = fns[bench.PEL](x, t)
  plain_value, plain_grad = fns[bench.PLAIN](x, t)
  np.testing.assert_allclose(value, plain_value, rtol=1e-5)
  np.testing.assert_allclose(grad, plain_grad, rtol=1e-4, atol=1e-9)
  expected = pel_jax.pel_loss(x, t, from_logits=True, **bench.OPTIONS)
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_cases_are_past_tpu_vmem():
  bench = _bench()
  for case in bench.cases():
    size = math.prod(case.shape) * jnp.dtype(case.dtype).itemsize
    assert size >= 128 * 2**20, case


def test_committed_results_have_every_target_and_row():
  results = json.loads(_RESULTS.read_text())
  bench = _bench()
  expected = {c.name for c in bench.cases()}
  for key in bench.TARGETS:
    rows = results[key]["rows"]
    assert {r["case"] for r in rows} == expected, key
    for name in expected:
      variants = {r["variant"] for r in rows if r["case"] == name}
      assert variants == {bench.FLOOR, bench.PEL, bench.PLAIN, bench.OPTAX}
    assert all(math.isfinite(r["bytes"]) and r["bytes"] > 0 for r in rows)


def test_merge_keeps_other_targets(tmp_path):
  bench = _bench()
  path = tmp_path / "r.json"
  path.write_text(json.dumps({"h100": {"rows": [1]}, "tpu-v5e": {"rows": []}}))
  merged = bench.merge_results(str(path), {"tpu-v5e": {"rows": [2]}})
  assert merged == {"tpu-v5e": {"rows": [2]}, "h100": {"rows": [1]}}


@functools.cache  # each case compiles once per session
def _measure(classes, dtype, targets, breakdown=False):
  bench = _bench()
  case = bench.Case(int(classes), 2, dtype, targets)
  target = bench.TARGETS["tpu-v5e"]
  return bench, case, bench.measure("tpu-v5e", target, case, breakdown)


@needs_libtpu
@pytest.mark.parametrize("classes,dtype,targets", _CASES)
def test_value_and_grad_compiles_for_v5e(classes, dtype, targets):
  bench, case, rows = _measure(classes, dtype, targets)
  assert [r["variant"] for r in rows] == [
    bench.FLOOR,
    bench.PEL,
    bench.PLAIN,
    bench.OPTAX,
  ]
  for r in rows:
    assert math.isfinite(r["bytes"]) and r["bytes"] > 0
    assert r["kernels"] >= 1 and r["temp_bytes"] >= 0
  # Reading the logits and writing their gradient is at least a*a's
  # traffic less one read: no loss program may report less.
  floor = rows[0]["bytes"]
  assert all(r["bytes"] >= floor * 2 / 3 for r in rows[1:])


@needs_libtpu
def test_kernel_breakdown_adds_up_to_the_cost_analysis():
  bench = _bench()
  case = bench.Case(21, 2, "float32", "ids")
  sharding = bench.device_sharding(bench.TARGETS["tpu-v5e"])
  fn = bench.variants(case)[bench.PEL]
  nbytes, _, _, text = bench.compile_one(
    fn, bench.arguments(case, sharding), "tpu"
  )
  found = bench.kernels(text, case.shape)
  estimate = sum(k.hbm_bytes for k in found)
  assert 0.85 * nbytes <= estimate <= 1.15 * nbytes
  # Only the gradient is full-size: the softmax is not written out.
  assert sum(k.full_size for k in found) == 1


@needs_libtpu
@pytest.mark.parametrize("classes,dtype,targets", _CASES)
def test_pel_bytes_not_above_committed(classes, dtype, targets):
  """A layout change that moves more bytes on TPU fails here.

  Compared with the committed results of the same libtpu; refresh them
  (bench_compiled.py --target tpu --write-results) after a deliberate
  change and say why in benchmarks/README.md.
  """
  bench, case, rows = _measure(classes, dtype, targets)
  committed = json.loads(_RESULTS.read_text())["tpu-v5e"]
  if committed["meta"]["versions"].get("libtpu") != bench.versions().get(
    "libtpu"
  ):
    pytest.skip("committed results are from another libtpu")
  old = {
    r["variant"]: r["bytes"]
    for r in committed["rows"]
    if r["case"] == case.name
  }
  new = {r["variant"]: r["bytes"] for r in rows}
  assert new[bench.PEL] <= old[bench.PEL] * 1.01


@needs_libtpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pel_moves_no_more_bytes_than_autodiff_at_21_classes(dtype):
  # With p behind an optimization barrier (the CPU's form) XLA TPU wrote
  # the softmax out and every pass read it and the logits: 1.7-2.1x the
  # bytes of autodiff (benchmarks/README.md).
  bench, _, rows = _measure("21", dtype, "ids")
  found = {r["variant"]: r["bytes"] for r in rows}
  assert found[bench.PEL] <= found[bench.PLAIN]


@needs_libtpu
def test_batch_sums_all_reduce_one_row_per_field_on_a_sharded_batch():
  """Over a batch-sharded v5e:2x2, `batch=True` all-reduces `[C]` sums.

  A variadic reduce over the batch too all-reduced `[devices * C]` per
  field (`_layout_accel._tpu_sums`).
  """
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec  # pylint: disable=import-outside-toplevel

  _bench()  # sets the TPU environment variables
  topo = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu")
  mesh = Mesh(np.array(topo.devices), ("d",))
  shard = NamedSharding(mesh, PartitionSpec("d"))
  x = jax.ShapeDtypeStruct((8, 256, 256, 21), jnp.float32, sharding=shard)
  t = jax.ShapeDtypeStruct((8, 256, 256), jnp.int32, sharding=shard)
  step = jax.value_and_grad(
    lambda x, t: pel_jax.pel_loss(x, t, from_logits=True, batch=True)
  )
  text = jax.jit(step).trace(x, t).lower().compile().as_text()
  reduces = [line for line in text.splitlines() if " all-reduce(" in line]
  assert reduces, "no all-reduce: the sums are not global"
  for line in reduces:
    shapes = line.split(" all-reduce(")[0]
    assert "f32[84]" not in shapes, line
    assert "f32[21]" in shapes, line

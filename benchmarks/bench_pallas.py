"""Deviceless compiles of the Pallas region sums (pel_jax._pallas).

For each case of bench_compiled (its main loss: exponent 3, scale and both
weights 0.5, softmax; integer ids by default) it compiles, for a TPU target
(the Mosaic form) or a GPU one (the Triton form) and without a device: `a * a`, pel_jax's default (XLA) value+grad, the same
loss built on the Pallas sums (`_pallas.region_sums`: the forward kernel,
then the pullback kernel), and each Pallas kernel program alone. Bytes are the
compiled HLO's kernels' operands plus results outside VMEM
(`bench_compiled.kernels`): XLA's TPU cost analysis leaves Mosaic custom
calls out, and a Pallas kernel reads each input block once and writes each
output block once. Nothing runs: no timings.

  /work/venv-tpu/bin/python benchmarks/bench_pallas.py \
    [--classes 2 8 21 128] [--targets ids soft] [--dims 2 3] [--target tpu-v5e]
  JAX_PLATFORMS=cpu /work/venv-gpu/bin/python benchmarks/bench_pallas.py \
    --target h100
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_compiled as bc

import pel_jax
from pel_jax import _core
from pel_jax import _pallas

_CFG = _core.StatsConfig(
  exponent=bc.OPTIONS["exponent"],
  activation="softmax",
  batch=False,
  ignore_index=None,
)
_RATIO = {k: v for k, v in bc.OPTIONS.items() if k != "exponent"}


def pallas_loss(x, t):
  """`pel_loss(x, t, from_logits=True, **OPTIONS)` on the Pallas sums."""
  stats = _pallas.region_sums(_CFG, x, t, None)
  return pel_jax.loss_from_stats(
    stats, exponent=bc.OPTIONS["exponent"], **_RATIO
  )


def programs(case: bc.Case):
  """name -> (function, extra argument shapes) of the programs compiled."""
  ct = jax.ShapeDtypeStruct((case.shape[0], case.classes), jnp.float32)
  return {
    "a * a": (lambda x, t: x * x, ()),
    "pel_jax (XLA)": (
      jax.value_and_grad(
        lambda x, t: pel_jax.pel_loss(x, t, from_logits=True, **bc.OPTIONS)
      ),
      (),
    ),
    "Pallas value+grad": (jax.value_and_grad(pallas_loss), ()),
    "Pallas forward kernel": (
      lambda x, t: _pallas.region_stats(_CFG, x, t, None),
      (),
    ),
    "Pallas pullback kernel": (
      lambda x, t, c: _pallas.region_stats_bwd(
        _CFG, x, t, None, None, (c, c, c, c), target_grad=False
      )[0],
      (ct,),
    ),
  }


def measure(case: bc.Case, target: str = "tpu-v5e") -> list[dict]:
  sharding = bc.device_sharding(bc.TARGETS[target])
  x, t = bc.arguments(case, sharding)
  rows = []
  for name, (fn, extra) in programs(case).items():
    args = (x, t) + tuple(
      jax.ShapeDtypeStruct(e.shape, e.dtype, sharding=sharding) for e in extra
    )
    compiled = jax.jit(fn).trace(*args).lower().compile()
    if bc.TARGETS[target].family == "tpu":
      text = compiled.as_text()
    else:
      text = compiled.runtime_executable().hlo_modules()[0].to_string()
    found = bc.kernels(text, case.shape)
    rows.append(
      dict(
        case=case.name,
        program=name,
        bytes=sum(k.hbm_bytes for k in found),
        kernels=[(k.opcode, k.result) for k in found],
        temp=compiled.memory_analysis().temp_size_in_bytes,
      )
    )
  floor = rows[0]["bytes"]
  for r in rows:
    r["over_floor"] = r["bytes"] / floor
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classes", type=int, nargs="+", default=[2, 8, 21, 128])
  parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--targets", nargs="+", default=["ids"])
  parser.add_argument("--dims", type=int, nargs="+", default=[2])
  parser.add_argument("--target", default="tpu-v5e")
  parser.add_argument("--verbose", action="store_true")
  args = parser.parse_args(argv)
  if why := bc.missing(bc.TARGETS[args.target].family):
    sys.exit(why)
  names = [n for n in programs(bc.Case(2)) if n != "a * a"]
  print(f"{args.target}: bytes over a * a's\n")
  print("| case | shape | a*a MiB | " + " | ".join(names) + " |")
  print("|---|---|---|" + "---|" * len(names))
  for c in args.classes:
    for dims, d, kind in itertools.product(
      args.dims, args.dtypes, args.targets
    ):
      case = bc.Case(c, dims, d, kind)
      rows = measure(case, args.target)
      cells = [f"{r['over_floor']:.2f}" for r in rows[1:]]
      print(
        f"| {case.name} | {list(case.shape)} | {rows[0]['bytes'] / 2**20:.0f}"
        f" | {' | '.join(cells)} |",
        flush=True,
      )
      if args.verbose:
        for r in rows:
          print("   ", r["program"], r["bytes"], r["temp"], r["kernels"])


if __name__ == "__main__":
  main()

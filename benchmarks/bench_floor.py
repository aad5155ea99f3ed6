"""What binary value+grad could cost on this machine: two-pass floors.

Run from the repository root:

    python benchmarks/bench_floor.py            # [16, 512, 512, 1], ~1 min
    python benchmarks/bench_floor.py --runs 3   # three processes' tables

Any value+grad of a region-sum loss reads the logits and targets twice (the
sums, then the gradient, which needs the sums) and writes the gradient
once: a `* b` reads two arrays and writes one, so the traffic alone puts
the ideal near 1.67x `a * b`. This script times, in the same interleaved
rounds as `a * b` and `pel_jax.pel_loss` (binary logits, n = 3), a bare
two-pass custom VJP with the same four staged sums and the same gradient
formula, once with no activation at all (p = x: the traffic and the sums'
arithmetic only) and once with `jax.nn.sigmoid`: what XLA CPU makes of
the passes themselves, against what pel_jax adds. Prints one table per
process (`--runs`): the allocator's state differs between processes and
moves `a * b` itself (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax import _layout_cpu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_loss  # pylint: disable=g-import-not-at-top,wrong-import-position

import pel_jax  # pylint: disable=g-import-not-at-top,wrong-import-position


def two_pass(activation, exponent: int = 3, smooth: float = 1e-5):
  """value+grad of the Jaccard-form PEL, sums and gradient by hand.

  `activation` is `_identity` (probabilities) or `jax.nn.sigmoid`.

  The forward pass is one fused set of staged sums (pel_jax's own
  `_sum_together`), the backward one elementwise pass that recomputes the
  activation: the two passes every region-sum loss needs, nothing more.
  As in pel_jax, the backward reads the logits behind an optimization
  barrier and multiplies p in one factor at a time: an expression equal to
  one of the forward's would make XLA write it out between the passes.
  """

  def pixel_sums(x, t):
    p = activation(x)
    return _layout_cpu._sum_together(  # pylint: disable=protected-access
      tuple(range(1, x.ndim - 1)), p * t, p, t, t * lax.integer_pow(p, exponent)
    )

  @jax.custom_vjp
  def sums(x, t):
    return pixel_sums(x, t)

  def forward(x, t):
    return pixel_sums(x, t), (x, t)

  def backward(residuals, cotangents):
    x, t = residuals
    p = activation(lax.optimization_barrier(x))
    ct_tp, ct_p, _, ct_numer = (
      c.reshape(c.shape[:1] + (1,) * (x.ndim - 2) + c.shape[1:])
      for c in cotangents
    )
    # dL/dp = n ct_numer t p^(n-1) + ct_tp t + ct_p; through the sigmoid,
    # dL/dx = dL/dp p (1 - p), written as p dL/dp (one more factor p).
    sigmoid = activation is not _identity
    pull = exponent * ct_numer * t
    for _ in range(exponent if sigmoid else exponent - 1):
      pull = pull * p
    linear = ct_tp * t + ct_p
    if not sigmoid:
      return pull + linear, None
    return (pull + linear * p) * (1 - p), None

  sums.defvjp(forward, backward)

  def loss(x, t):
    tp, sum_p, sum_g, numer = sums(x, t)
    return jnp.mean(1 - (numer + smooth) / (sum_p + sum_g - tp + smooth))

  return jax.value_and_grad(loss)


def _identity(x):
  return x


def run(shape, rounds: int) -> list[tuple[str, float, float, float]]:
  """`(name, ms, × a*b, page faults per call)` rows, in the same rounds."""
  case = bench_loss.Case("binary logits f32", shape)
  x, targets, _, other = bench_loss.make_inputs(case)
  fns = {
    bench_loss.ROOFLINE: (jax.jit(lambda a, b: a * b), (x, other)),
    "pel_jax value+grad": (
      jax.jit(
        jax.value_and_grad(
          lambda x, t: pel_jax.pel_loss(x, t, from_logits=True)
        )
      ),
      (x, targets),
    ),
    "two passes, no activation (p = x)": (
      jax.jit(two_pass(_identity)),
      (x, targets),
    ),
    "two passes, jax.nn.sigmoid": (
      jax.jit(two_pass(jax.nn.sigmoid)),
      (x, targets),
    ),
  }
  faults = {}
  ms = bench_loss._time_round_robin(  # pylint: disable=protected-access
    {k: f for k, (f, _) in fns.items()},
    {k: a for k, (_, a) in fns.items()},
    rounds,
    0.02,
    faults_out=faults,
  )
  roof = ms[bench_loss.ROOFLINE]
  return [(name, t, t / roof, faults[name]) for name, t in ms.items()]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--shape", default="16,512,512,1")
  ap.add_argument("--rounds", type=int, default=30)
  ap.add_argument("--runs", type=int, default=1, help="separate processes")
  args = ap.parse_args(argv)
  if args.runs > 1:
    for _ in range(args.runs):
      subprocess.run(
        [
          sys.executable,
          __file__,
          "--shape",
          args.shape,
          "--rounds",
          str(args.rounds),
        ],
        check=True,
      )
    return
  shape = tuple(int(s) for s in args.shape.split(","))
  print(
    f"| {list(shape)} | ms | × a*b | page faults/call |\n|---|---:|---:|---:|"
  )
  for name, t, ratio, faults in run(shape, args.rounds):
    print(f"| {name} | {t:.2f} | {ratio:.2f} | {faults:.0f} |", flush=True)


if __name__ == "__main__":
  main()

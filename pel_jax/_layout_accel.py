"""Layouts of the core for the accelerators (XLA GPU and TPU).

`_core` lowers its CPU-tuned layouts only for the CPU; what GPU and TPU get
instead is chosen here, from programs compiled for those targets without
the device (benchmarks/bench_compiled.py: bytes accessed of XLA's cost
analysis, and the fusions behind them; numbers in benchmarks/README.md).
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp


def region_sums(operands, axes: tuple[int, ...], variadic):
  """Sums of `operands` over `axes` (the pixels): one reduce each on GPU.

  XLA GPU fuses an elementwise producer into a reduction, and sibling
  reductions of the same input into one kernel, but not the producers of
  a variadic (several-operand) reduce, `variadic(operands, axes)`: there
  every summand was written out as a full-size array and read back. XLA
  TPU fuses both forms; the variadic one moved fewer bytes at one class.
  There the batch axis, when summed, is summed apart, one reduce per
  operand: partitioned over a batch-sharded mesh, a variadic reduce over it
  all-reduces every device's partial sums, `[devices * C]` per operand
  (`[256 * C]` on a v5e:16x16 pod), where these reduces all-reduce `[C]`.
  """
  return lax.platform_dependent(
    *operands,
    tpu=functools.partial(_tpu_sums, axes, variadic),
    default=lambda *xs: tuple(jnp.sum(x, axis=axes) for x in xs),
  )


def _tpu_sums(axes, variadic, *operands):
  if axes[0] != 0:
    return tuple(variadic(operands, axes))
  spatial = tuple(variadic(operands, axes[1:])) if axes[1:] else operands
  return tuple(jnp.sum(x, axis=0) for x in spatial)


def unshared(p: jax.Array) -> jax.Array:
  """`p` behind an optimization barrier, except when lowered for TPU.

  The barrier keeps XLA from rewriting `p * p * p` of `p = exp(a)` as
  `exp(3 a)`, a second exponential per entry (see `_activation._activate`). It
  also makes XLA write `p` out: on the CPU and GPU that costs less than
  what it prevents, but XLA TPU otherwise recomputes the softmax in each
  of its consumers, and a written `p` there is one more full-size write
  and a read of it in every pass over the logits.
  """
  return lax.platform_dependent(
    p, tpu=lambda p: p, default=lax.optimization_barrier
  )

"""Layouts of the core for the accelerators (XLA GPU and TPU).

`_core` lowers its CPU-tuned layouts only for the CPU; what GPU and TPU get
instead is chosen here, from programs compiled for those targets without
the device (benchmarks/bench_compiled.py: bytes accessed of XLA's cost
analysis, and the fusions behind them; numbers in benchmarks/README.md).
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp


def region_sums(operands, axes: tuple[int, ...]) -> tuple[jax.Array, ...]:
  """One `jnp.sum` per operand over `axes` (the pixels), not one reduce.

  XLA GPU fuses an elementwise producer into a reduction, and sibling
  reductions of the same input into one kernel, but not the producers of
  a variadic (several-operand) reduce: that one had every summand written
  out as a full-size array and read back (on TPU both forms compile to the
  same traffic).
  """
  return tuple(jnp.sum(x, axis=axes) for x in operands)


def unshared(p: jax.Array) -> jax.Array:
  """`p` behind an optimization barrier, except when lowered for TPU.

  The barrier keeps XLA from rewriting `p * p * p` of `p = exp(a)` as
  `exp(3 a)`, a second exponential per entry (see `_core._activate`). It
  also makes XLA write `p` out: on the CPU and GPU that costs less than
  what it prevents, but XLA TPU otherwise recomputes the softmax in each
  of its consumers, and a written `p` there is one more full-size write
  and a read of it in every pass over the logits.
  """
  return lax.platform_dependent(
    p, tpu=lambda p: p, default=lax.optimization_barrier
  )

"""Sums across devices with the gradient convention of `pel_loss`."""

from __future__ import annotations

from collections.abc import Hashable
import functools

import jax
from jax import lax
import jax.numpy as jnp
from jax.typing import ArrayLike


def global_sum(x: ArrayLike, axis_name: Hashable) -> jax.Array:
  """Sum of `x` across a named axis, with `pel_loss`'s gradient convention.

  The value is `lax.psum(x, axis_name)`, the same on every device, but the
  gradient each device gets for its `x` is that of the global value alone
  (1 per summand), not the N-fold `psum` of replicated cotangents that
  autodiff of `lax.psum` gives. Use it for losses added beside a global
  `pel_loss` in a data-parallel step whose parameter gradients are summed,
  e.g. a global cross-entropy mean:
  `global_sum(ce.sum(), "d") / (ce.size * lax.axis_size("d"))`.

  The convention holds for gradients taken inside the mapped function in
  every mode, and from outside under `shard_map(check_vma=True)`; from
  outside a `shard_map(check_vma=False)` (or `pmap(out_axes=None)`) it is
  1/N, since JAX divides a replicated output's cotangent by N there and
  nothing at trace time tells the two apart (see the README).

  Args:
    x: the local summand, any shape.
    axis_name: a named axis of `pmap`, `shard_map` or `vmap`.

  Returns:
    The global sum, with the shape and dtype of `x`.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pel_jax import global_sum
    >>> f = jax.vmap(lambda x: global_sum(x, "i"), axis_name="i")
    >>> f(jnp.arange(3.0))
    Array([3., 3., 3.], dtype=float32)
    >>> jax.grad(lambda x: f(x)[0])(jnp.arange(3.0))  # Not 3 per summand.
    Array([1., 1., 1.], dtype=float32)
  """
  return _global_sum(jnp.asarray(x), axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _global_sum(x: jax.Array, axis_name) -> jax.Array:
  """`psum` whose cotangent is not summed back across devices.

  Every device holds the same global value; the derivative of that value
  with respect to the local summand is 1, so the cotangent passes through.
  (Autodiff of `psum` would psum the replicated cotangents: an N-fold factor.)
  """
  return lax.psum(x, axis_name)


def _global_sum_fwd(x, axis_name):
  return lax.psum(x, axis_name), x


def _global_sum_bwd(axis_name, x, cotangent):
  del axis_name
  # Under shard_map the summand `x` varies over the axis but the psum-ed value,
  # and so its cotangent, does not; the cotangent must have the type of `x`.
  # Adding zeros shaped like `x` makes it vary like `x` (any JAX version).
  return (cotangent + jnp.zeros_like(x),)


_global_sum.defvjp(_global_sum_fwd, _global_sum_bwd)


def sum_or_mean(total, count, reduction: str, axis_name) -> jax.Array:
  """`total` ("sum") or `total / count` ("mean"), both first summed over
  `axis_name` when given (`global_sum`'s gradient convention for `total`).
  A zero count gives 0 with a zero gradient, not NaN."""
  if axis_name is not None:
    total = global_sum(total, axis_name)
    count = lax.psum(count, axis_name)
  if reduction == "sum":
    return total
  some = count > 0
  return jnp.where(some, total / jnp.where(some, count, 1), 0)

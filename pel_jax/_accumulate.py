"""Exact gradient accumulation for losses that are functions of sums."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

PyTree = Any


def accumulated_value_and_grad(
  stats_fn: Callable[[PyTree, PyTree], PyTree],
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  microbatches: PyTree,
  *,
  stack: bool = False,
) -> tuple[jax.Array, PyTree]:
  r"""Loss and parameter gradient of a ratio loss over K micro-batches, exactly.

  A region loss (Dice, PEL, Tversky, generalized Dice, ...) is a function of
  a few sums over pixels, :math:`L = \ell(S)` with
  :math:`S = \sum_k s_k(\theta)`, :math:`s_k` the statistics of micro-batch
  :math:`k`. It is not the mean of the micro-batch losses, but its gradient
  is still a sum over micro-batches:

  .. math::
    \frac{\partial L}{\partial \theta} = \sum_k
        \Big(\frac{\partial \ell}{\partial S}\Big)^{\!\top}
        \frac{\partial s_k}{\partial \theta}.

  So: pass 1 sums the statistics over the micro-batches (forward only);
  :math:`\bar S = \partial \ell / \partial S` is computed once
  (`jax.vjp` of ``loss_fn``); pass 2 runs one `jax.vjp` of ``stats_fn`` per
  micro-batch with the cotangent :math:`\bar S` and sums the parameter
  gradients. Both passes are `lax.scan` loops, so memory is that of one
  micro-batch; the cost is two forwards and one backward per micro-batch.
  The result equals `jax.value_and_grad` of ``loss_fn(stats_fn(params,
  whole_batch))`` up to rounding.

  Terms that are plain sums over pixels (a cross-entropy sum and its pixel
  count, a regulariser) are just more statistics: return them from
  ``stats_fn`` and combine them in ``loss_fn`` (e.g. ``ce_sum / count``).

  Data parallel: with statistics summed across devices inside ``stats_fn``
  (``region_stats(..., axis_name=...)``), every device gets the global loss
  and the gradient of its own shard. Under `jax.shard_map` with replicated
  ``params``, JAX's autodiff already sums that over the axis; under
  `jax.pmap`, `lax.psum` the returned gradients, as for `pel_loss`.

  Args:
    stats_fn: ``stats_fn(params, microbatch) -> stats``, a differentiable
      function returning a pytree of arrays that add up over micro-batches
      (e.g. `pel_jax.region_stats` of a model's output with ``batch=True``).
    loss_fn: ``loss_fn(stats) -> scalar`` on the summed statistics (e.g.
      `pel_jax.loss_from_stats`).
    params: the pytree to differentiate with respect to.
    microbatches: a pytree whose leaves have a leading axis of length K, one
      slice per micro-batch (what `lax.scan` takes as ``xs``).
    stack: if True, ``loss_fn`` gets the statistics stacked along a new
      leading axis K instead of summed: for per-sample statistics
      (``batch=False``), where samples are concatenated, not added
      (``loss_fn`` can reshape `[K, B/K, C]` to `[B, C]`).

  Returns:
    ``(loss, grads)``, as `jax.value_and_grad` returns them; ``grads`` has
    the structure of ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from pel_jax import accumulated_value_and_grad
    >>> def stats_fn(w, batch):   # per-class sums of a linear model
    ...   p = jax.nn.softmax(batch["x"] @ w)
    ...   g = jax.nn.one_hot(batch["y"], w.shape[1])
    ...   return dict(tp=(p * g).sum((0, 1)), p=p.sum((0, 1)), g=g.sum((0, 1)))
    >>> def loss_fn(s):           # batch Dice of the summed statistics
    ...   return jnp.mean(1 - 2 * s["tp"] / (s["p"] + s["g"]))
    >>> w = jnp.ones((3, 2))
    >>> batch = dict(x=jnp.ones((8, 5, 3)), y=jnp.zeros((8, 5), jnp.int32))
    >>> micro = jax.tree.map(lambda a: a.reshape(4, 2, *a.shape[1:]), batch)
    >>> loss, grads = accumulated_value_and_grad(stats_fn, loss_fn, w, micro)
    >>> grads.shape
    (3, 2)
  """
  leaves = jax.tree.leaves(microbatches)
  if not leaves:
    raise ValueError("`microbatches` has no arrays to scan over.")
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
      "every leaf of `microbatches` needs the same leading (micro-batch)"
      f" axis; got leading sizes {sorted(map(str, sizes))} for shapes"
      f" {[jnp.shape(x) for x in leaves]}."
    )

  _check_params(params)

  def stats_of(mb):
    return stats_fn(params, mb)

  if stack:
    _, stats = lax.scan(lambda c, mb: (c, stats_of(mb)), None, microbatches)
  else:
    first = jax.tree.map(lambda x: x[0], microbatches)
    zeros = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype),
      jax.eval_shape(stats_of, first),
    )
    stats, _ = lax.scan(
      lambda acc, mb: (jax.tree.map(jnp.add, acc, stats_of(mb)), None),
      zeros,
      microbatches,
    )

  loss, loss_vjp = jax.vjp(loss_fn, stats)
  (cotangent,) = loss_vjp(jnp.ones_like(loss))

  def grad_step(acc, xs):
    mb, ct = xs if stack else (xs, cotangent)
    _, stats_vjp = jax.vjp(lambda p: stats_fn(p, mb), params)
    (grad,) = stats_vjp(ct)
    return jax.tree.map(jnp.add, acc, grad), None

  zero_grads = jax.tree.map(jnp.zeros_like, params)
  xs = (microbatches, cotangent) if stack else microbatches
  grads, _ = lax.scan(grad_step, zero_grads, xs)
  return loss, grads


def _check_params(params: PyTree) -> None:
  """Every leaf of `params` is differentiated: it must be inexact.

  An integer leaf (a step counter) would otherwise fail inside the scan
  with JAX's float0 message, which names neither the argument nor the leaf.
  """
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
        "`accumulated_value_and_grad` differentiates every leaf of"
        f" `params`, so they must be float (or complex); `params"
        f"{jax.tree_util.keystr(path)}` has dtype {dtype.name} and shape"
        f" {jnp.shape(leaf)}. Keep integer state (a step counter) out of"
        " `params`: close over it in `stats_fn` or pass it in"
        " `microbatches`."
      )

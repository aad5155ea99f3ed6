"""Public PEL loss and its helpers (Dice, Jaccard, Tversky: `_variants.py`)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from pel_jax import _checks
from pel_jax import _core

ArrayLike = jax.typing.ArrayLike


def pel_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    exponent: float = 3.0,
    scale: float = 1.0,
    fp_weight: float = 1.0,
    fn_weight: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    from_logits: bool = False,
    activation: str | None = None,
    class_weights: ArrayLike | None = None,
    include_background: bool = True,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    batch: bool = False,
    reduction: str = "mean",
    axis_name: Hashable | None = None,
) -> jax.Array:
  r"""PointWise Exponential Loss (PEL), a Dice-family loss with p^n on top.

  For each class :math:`c`, with :math:`p` the predicted probability,
  :math:`g` the target and :math:`w` the pixel mask, summed over the spatial
  axes (and over the batch too when ``batch=True``):

  .. math::
    TP = \sum w p g, \quad FP = \sum w p (1 - g), \quad
    FN = \sum w (1 - p) g, \quad N = \sum w p^n g

    L_c = 1 - s \frac{N + \epsilon_{nr}}
        {TP + \alpha FP + \beta FN + \epsilon_{dr}}

  with :math:`n` = ``exponent``, :math:`s` = ``scale``, :math:`\alpha` =
  ``fp_weight`` and :math:`\beta` = ``fn_weight``. With n = 1 and s = 1 this
  is Dice (weights 0.5), Jaccard (weights 1) or Tversky. Soft (float) targets
  use :math:`p^n g`, linear in g; for hard labels it equals the authors'
  :math:`(p g)^n`.

  The gradient is a hand-written, fused `jax.custom_vjp` (with the activation
  when ``from_logits``). Reverse mode, reverse-over-reverse and
  forward-over-reverse (`jax.hessian`) work; forward mode on the loss itself
  (`jax.jvp`, `jax.jacfwd`) does not: JAX raises its own TypeError for
  custom_vjp functions.

  Args:
    predictions: float `[B, *spatial, C]`, channels last; probabilities, or
      logits with ``from_logits=True``. Any float dtype; bfloat16/float16 are
      accumulated in float32.
    targets: float `[B, *spatial, C]` (one-hot, multi-hot or soft labels), or
      integer class ids `[B, *spatial]` (never one-hot encoded internally).
      Ids outside `[0, C)` other than ``ignore_index`` belong to no class
      (as with `jax.nn.one_hot`): they count as background for every class.
      With one channel (C = 1) the ids are a binary mask: 1 is the
      foreground (the channel's class) and every other id background.
      Use `pel_jax.check_labels` to catch unexpected ids (`num_classes=1`:
      only 0 and 1 pass).
    exponent: n > 0 in :math:`p^n` (static).
    scale: s > 0, the numerator's factor (static).
    fp_weight: :math:`\alpha \ge 0`, the weight of false positives (static).
    fn_weight: :math:`\beta \ge 0`, the weight of false negatives (static).
    smooth_nr: :math:`\epsilon_{nr} \ge 0` added to the numerator (static).
    smooth_dr: :math:`\epsilon_{dr} \ge 0` added to the denominator (static).
    from_logits: whether ``predictions`` are logits.
    activation: with logits, "sigmoid" (independent channels) or "softmax"
      (over the class axis); None picks sigmoid for C = 1, else softmax.
    class_weights: `[C]` weights (all classes, background included) that
      multiply the per-class losses.
    include_background: False drops class 0 (after ``class_weights``).
    where: bool `[B, *spatial]`; False pixels are left out of every sum (after
      the activation: masked logits do not become p = 0.5; NaN or inf there
      reaches neither the loss nor the gradient).
    ignore_index: with integer targets, pixels with this id are left out.
    batch: sum over the batch too (one loss per class, "batch Dice").
    reduction: "mean" over classes and samples, "sum", or "none".
    axis_name: a named axis (`pmap`, `shard_map`, `vmap`) the batch is split
      over. With ``batch=True`` the sums are summed across it before the
      ratio; with ``batch=False`` the "mean"/"sum" reductions run over the
      global batch. Every device returns the global loss and the gradient
      for its own shard (the slice of the one-device gradient): in a
      data-parallel step, *sum* the parameter gradients across devices.

  Returns:
    A scalar for "mean" and "sum". For "none": `[B, C']` per sample and class,
    or `[C']` with ``batch=True`` (C' = C - 1 without background). The loss is
    float32 for float32/bfloat16/float16 predictions and float64 for float64;
    its gradient has the dtype of ``predictions``.

  With the default smoothing (equal in numerator and denominator), an empty
  prediction of an empty target has ratio 1, so it costs 1 - s (0 at s = 1).
  If both smoothings are 0 and a class is empty (denominator 0), that class
  counts as a perfect match with zero gradient rather than 0/0.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import pel_loss
    >>> logits = jnp.zeros((2, 4, 4, 3))
    >>> labels = jnp.zeros((2, 4, 4), jnp.int32)
    >>> loss = pel_loss(logits, labels, from_logits=True)
    >>> loss.shape, loss.dtype
    ((), dtype('float32'))

  References:
    Bhat et al., PointWise Exponential Loss (PEL),
    https://github.com/bluesky314/PointWise-Exponential-Loss
  """
  # Python sequences are array-likes too (and have no dtype to check).
  predictions, targets, where, class_weights = (
      np.asarray(x) if isinstance(x, (list, tuple)) else x
      for x in (predictions, targets, where, class_weights)
  )
  _checks.check_predictions(predictions)
  from_logits = _checks.check_flag("from_logits", from_logits)
  batch = _checks.check_flag("batch", batch)
  include_background = _checks.check_flag(
      "include_background", include_background
  )
  _checks.check_targets(predictions, targets, ignore_index)
  _checks.check_mask(predictions, where)
  _checks.check_class_weights(predictions, class_weights)
  _checks.check_options(predictions, reduction, include_background)
  cfg = _core.LossConfig(
      exponent=_checks.check_number("exponent", exponent, positive=True),
      scale=_checks.check_number("scale", scale, positive=True),
      fp_weight=_checks.check_number("fp_weight", fp_weight),
      fn_weight=_checks.check_number("fn_weight", fn_weight),
      smooth_nr=_checks.check_number("smooth_nr", smooth_nr),
      smooth_dr=_checks.check_number("smooth_dr", smooth_dr),
      activation=_checks.resolve_activation(
          predictions, from_logits, activation
      ),
      batch=bool(batch),
      ignore_index=ignore_index,
      axis_name=axis_name,
  )

  _checks.check_representable(
      predictions,
      _core.compute_dtype(jnp.result_type(predictions)),
      exponent=cfg.exponent,
      scale=cfg.scale,
      fp_weight=cfg.fp_weight,
      fn_weight=cfg.fn_weight,
      smooth_nr=cfg.smooth_nr,
      smooth_dr=cfg.smooth_dr,
  )

  predictions = jnp.asarray(predictions)
  targets = jnp.asarray(targets)
  if targets.dtype == jnp.bool_:
    targets = targets.astype(predictions.dtype)
  mask = None if where is None else jnp.asarray(where)

  losses = _core.class_losses(cfg, predictions, targets, mask)
  if class_weights is not None:
    losses = losses * jnp.asarray(class_weights, losses.dtype)
  if not include_background:
    losses = losses[:, 1:]
  return _reduce(losses, reduction, cfg)


def _reduce(losses: jax.Array, reduction: str, cfg: _core.LossConfig):
  """Reduces `[G, C']` per-class losses; global over `axis_name` if per-sample."""
  if cfg.batch:
    losses = losses[0]
  if reduction == "none":
    return losses
  total = jnp.sum(losses)
  count = losses.size
  if cfg.axis_name is not None and not cfg.batch:
    total = _global_sum(total, cfg.axis_name)
    count = count * lax.axis_size(cfg.axis_name)
  return total / count if reduction == "mean" else total


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


def weight_map(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    loss_fn: Callable[..., jax.Array] | None = None,
    **loss_kwargs: Any,
) -> jax.Array:
  r"""Per-pixel gradient weight of a PEL-family loss, `[B, *spatial]`.

  The absolute gradient of the (reduced, summed) loss with respect to
  ``predictions`` (probabilities, or logits with ``from_logits=True``),
  summed over the class axis: :math:`\sum_c |\partial L / \partial x_c|`.
  It shows which pixels pull on the model, the diagnostic the PEL authors
  plot next to the deviation map :math:`|p - g|`.

  Args:
    predictions: as in `pel_loss`.
    targets: as in `pel_loss`.
    loss_fn: the loss to differentiate, `pel_loss` by default (e.g.
      `pel_jax.dice_loss` for the Dice map to compare with).
    **loss_kwargs: any keyword of `pel_loss` (``exponent``, ``scale``, ...).

  Returns:
    Float array of shape `[B, *spatial]` in the dtype of ``predictions``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import dice_loss, weight_map
    >>> logits = jnp.zeros((2, 8, 8, 3))
    >>> ids = jnp.zeros((2, 8, 8), jnp.int32)
    >>> weight_map(logits, ids, from_logits=True, exponent=2.0).shape
    (2, 8, 8)
    >>> weight_map(logits, ids, loss_fn=dice_loss, from_logits=True).shape
    (2, 8, 8)
  """
  loss_fn = pel_loss if loss_fn is None else loss_fn
  grad = jax.grad(
      lambda x: jnp.sum(loss_fn(x, targets, **loss_kwargs))
  )(jnp.asarray(predictions))
  return jnp.sum(jnp.abs(grad), axis=-1)


def check_labels(
    targets: ArrayLike, num_classes: int, *, ignore_index: int | None = None
) -> None:
  """Checks that integer class ids are valid for `num_classes` classes.

  Valid ids are `[0, num_classes)` and ``ignore_index``; for
  ``num_classes=1`` (one channel, the binary mode of `pel_loss`) they are 0
  (background) and 1 (foreground). Out-of-range ids never corrupt `pel_loss`
  (they match no class: background for every class), but they usually mean
  a data bug. Eagerly this raises `checkify.JaxRuntimeError`; inside
  `jax.jit`, wrap the caller with `jax.experimental.checkify.checkify` and
  call `err.throw()` (see the README). The comparisons never overflow the
  ids' dtype (uint8 ids are checked against 300 classes exactly).

  Args:
    targets: integer class ids, any shape (e.g. `[B, *spatial]`).
    num_classes: C, the number of classes (1: binary ids 0 and 1).
    ignore_index: an id allowed besides the valid ones.

  Returns:
    None: the outcome is the error, raised eagerly or carried by checkify.

  Raises:
    TypeError: for non-integer ``targets``.
    ValueError: for ``num_classes`` < 1, or an ``ignore_index`` the dtype
      of ``targets`` cannot hold (as `pel_loss` does).

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> from pel_jax import check_labels
    >>> check_labels(jnp.array([[0, 2, 255]]), 3, ignore_index=255)
    >>> check = jax.jit(lambda t: check_labels(t, 3))
    >>> err, _ = checkify.checkify(check)(jnp.array([[0, 3]]))
    >>> print(err.get())
    targets hold a class id outside [0, 3): 3 at flat index 1 (`check` failed)
  """
  targets = jnp.asarray(targets)
  count = _checks.check_label_args(targets, num_classes, ignore_index)
  if targets.size == 0:
    return  # Nothing to check (and argmin of an empty array raises).
  # Bounds the dtype cannot exceed are left out rather than written in it:
  # 300 as uint8 would wrap to 44.
  info = jnp.iinfo(targets.dtype)
  valid = jnp.ones(targets.shape, bool) if info.min >= 0 else targets >= 0
  if count <= info.max:
    valid = valid & (targets < count)
  if ignore_index is not None:
    valid = valid | (targets == ignore_index)
  bad = jnp.argmin(valid.reshape(-1))
  # Format arguments must be arrays: the static class count goes in the text
  # (with its braces doubled, as checkify formats the message).
  allowed = f"[0, {count})"
  if num_classes == 1:
    allowed = "{{0, 1}} (one class: binary, 1 = foreground)"
  checkify.check(
      jnp.all(valid),
      f"targets hold a class id outside {allowed}: {{value}} at flat index"
      " {i}",
      value=targets.reshape(-1)[bad],
      i=bad,
  )


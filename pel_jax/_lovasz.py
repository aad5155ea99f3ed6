"""Lovász-softmax and Lovász-hinge (Berman et al. 2018).

Both are the Lovász extension of the Jaccard loss evaluated at per-pixel
errors: sort the errors in decreasing order, and weight each by the increase
of the Jaccard loss when its pixel joins the set of mispredicted pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import numbers

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _numerics
from pel_jax._loss import _as_array_likes

ArrayLike = jax.typing.ArrayLike

CLASSES = ("present", "all")


def sort_keys(x: jax.Array) -> jax.Array:
  """Integer keys whose signed order is the float order of `x`.

  IEEE floats of one sign are ordered as their bit patterns read as
  integers; negative floats are stored as sign and magnitude, so their
  order is reversed. Flipping every bit but the sign of a negative float
  restores it: the keys of -0.0 and +0.0 are -1 and 0, and the keys of -inf
  and +inf lie between those of the negative and the positive NaNs. float32
  (and narrower, after the cast) gives int32 keys, float64 int64 keys.
  """
  itype = jnp.int64 if x.dtype == jnp.float64 else jnp.int32
  bits = lax.bitcast_convert_type(x, itype)
  sign = lax.shift_right_arithmetic(bits, itype(jnp.iinfo(itype).bits - 1))
  return bits ^ (sign & jnp.iinfo(itype).max)


def _lovasz(errors, foreground, valid, *, hinge: bool):
  """The Lovász extension of the Jaccard loss along the last axis.

  Args:
    errors: float `[..., N]`, the pixels' errors.
    foreground: bool `[..., N]`, the ground truth of the class.
    valid: bool `[..., N]`; False pixels are left out.
    hinge: take relu of the sorted errors (Lovász-hinge).

  Returns:
    `[...]` losses, and `[...]` whether the class has a valid pixel.
  """
  keys = sort_keys(errors)
  # Descending: `~key` reverses the order without the overflow of `-key`.
  # Left-out pixels sort last, after every valid one, and add nothing: their
  # error is 0 and they come after every valid pixel's prefix.
  top = jnp.iinfo(keys.dtype).max
  keys = jnp.where(valid, ~keys, top)
  # Only the keys and their positions are sorted; the errors and the truth
  # follow by a gather. Sorting them along as payloads (with the positions
  # autodiff adds for the sort's gradient) was 1.3-2x slower on CPU.
  index = lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
  _, perm = lax.sort((keys, index), dimension=-1, num_keys=1)
  errors = jnp.take_along_axis(jnp.where(valid, errors, 0), perm, -1)
  fg = jnp.take_along_axis((foreground & valid).astype(jnp.int32), perm, -1)
  if hinge:
    errors = jax.nn.relu(errors)
  loss = jnp.sum(errors * lovasz_grad(fg, errors.dtype), -1)
  return loss, jnp.any(fg > 0, -1)


def lovasz_grad(fg_sorted: jax.Array, dtype) -> jax.Array:
  """Berman's `lovasz_grad`: the Jaccard loss of each prefix, differenced.

  With `G` the class's pixel count and `k` the prefix length, the prefix's
  Jaccard loss is `1 - (G - fg_k) / (G + k - fg_k)` (`fg_k` the foreground
  pixels in the prefix); the union is at least 1 for any `k >= 1`, so an
  absent class gives `[1, 0, ...]`, not NaN. Counts are integers (exact
  past 2**24 pixels); this is a function of the ground truth only, so it
  carries no gradient.
  """
  total = jnp.sum(fg_sorted, -1, keepdims=True)
  seen = jnp.cumsum(fg_sorted, -1)
  k = jnp.arange(1, fg_sorted.shape[-1] + 1, dtype=fg_sorted.dtype)
  jaccard = 1 - (total - seen).astype(dtype) / (total + k - seen).astype(dtype)
  return jnp.diff(jaccard, axis=-1, prepend=jnp.zeros_like(jaccard[..., :1]))


def _resolve_classes(classes, num_classes: int):
  """`classes` as a static tuple of indices (None for all), and the mode."""
  if isinstance(classes, str):
    if classes not in CLASSES:
      raise ValueError(
        f"`classes` must be 'present', 'all' or a sequence of class"
        f" indices, got {classes!r}."
      )
    return None, classes == "present"
  if not isinstance(classes, Sequence) and not isinstance(classes, np.ndarray):
    raise TypeError(
      "`classes` must be 'present', 'all' or a static sequence of Python"
      f" ints, got {type(classes).__name__} {classes!r}."
    )
  picked = list(classes)
  bad = [
    c
    for c in picked
    if not isinstance(c, numbers.Integral)
    or isinstance(c, bool)
    or not 0 <= c < num_classes
  ]
  if not picked or bad or len(set(picked)) != len(picked):
    raise ValueError(
      "`classes` must be a non-empty sequence of distinct class indices in"
      f" [0, {num_classes}) (the last axis of `predictions`), got"
      f" {picked!r}."
    )
  return tuple(int(c) for c in picked), False


def _reduce(per_image: jax.Array, reduction: str) -> jax.Array:
  if reduction == "none":
    return per_image
  total = jnp.sum(per_image)
  return total / per_image.size if reduction == "mean" else total


def _valid(shape, targets, where, ignore_index):
  valid = jnp.ones(shape, bool) if where is None else jnp.asarray(where)
  if ignore_index is not None:
    valid = valid & (targets != ignore_index)
  return valid


def _check_integer_targets(targets, loss: str, how: str) -> None:
  if not jnp.issubdtype(jnp.result_type(targets), jnp.integer):
    raise TypeError(
      f"`{loss}` takes integer `targets` [batch, *spatial] ({how}), got"
      f" {_checks._describe(targets)}. The Lovász extension is taken at a"
      " hard ground truth (the Jaccard loss is a set function of the"
      " mispredicted pixels), so soft targets have no meaning here: pass"
      " hard ids, e.g. `jnp.argmax(soft, -1)`."
    )


def lovasz_softmax_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  from_logits: bool = False,
  classes: str | Sequence[int] = "present",
  per_image: bool = False,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Lovász-softmax loss (Berman et al. 2018), a surrogate of mean IoU.

  For class :math:`c`, with :math:`p_i` the predicted probability and
  :math:`g_i \in \{0, 1\}` the ground truth of pixel :math:`i`, the errors
  are :math:`e_i = |g_i - p_i|`. Sort them, :math:`e_{\pi_1} \ge \dots \ge
  e_{\pi_N}`; with :math:`G = \sum_i g_i` and :math:`F_k` the number of
  foreground pixels among :math:`\pi_1 \dots \pi_k`, the Jaccard loss of
  the first :math:`k` pixels is

  .. math::
    J_k = 1 - \frac{G - F_k}{G + k - F_k}, \quad J_0 = 0,

  and the class's loss is the Lovász extension of the Jaccard loss at
  :math:`e`:

  .. math::
    L_c = \sum_{k=1}^{N} e_{\pi_k} (J_k - J_{k - 1}).

  The loss is the mean of :math:`L_c` over the chosen classes. It is
  piecewise linear in the errors; its gradient flows through the sort's
  permutation (:math:`J_k - J_{k-1}` depends on the ground truth only).

  The sort dominates the cost, and 32-bit integer keys are the ones XLA's
  GPU sort handles fastest, so the errors are sorted by integer keys with
  the float order (the float's bits, with every bit but the sign flipped for
  negative values) carrying the pixel positions, and the errors and the
  truth are gathered in that order: float32 errors give int32 keys, float64
  errors int64 keys (a float32 key would merge nearby float64 errors). Tied
  errors are sorted in any order; the loss is the same in every order, the
  gradient is then one of its subgradients.

  Args:
    predictions: float `[B, *spatial, C]`, channels last, C >= 2;
      probabilities, or logits with ``from_logits=True`` (softmax over the
      last axis).
    targets: integer class ids `[B, *spatial]`. Soft or one-hot float
      targets are refused: the Lovász extension is taken at a hard ground
      truth. Ids outside `[0, C)` (other than ``ignore_index``) belong to no
      class.
    from_logits: whether ``predictions`` are logits.
    classes: "present" averages over the classes with a pixel in the
      (kept) target, as smp and Berman's reference; "all" over every class
      (an absent class's loss is its largest probability, as kornia); a
      sequence of class indices over exactly those, present or not.
    per_image: one loss per image, each over its own pixels and classes
      (then reduced over images), instead of one over the whole batch.
    ignore_index: pixels with this id are left out.
    where: bool `[B, *spatial]`; False pixels are left out (NaN or inf in
      their predictions reaches neither the loss nor the gradient).
    reduction: over images with ``per_image=True``: "mean", "sum", or
      "none" (`[B]`). Without ``per_image`` the loss is one number for the
      batch, which every reduction returns (shape `()`).

  Returns:
    The loss, float32 for float32 and half-precision predictions, float64
    for float64. With "present", an image (or batch) with no kept pixel of
    any class has loss 0 and zero gradient, and with ``per_image`` it still
    counts in the mean over images (Berman's and smp's `mean`).

  Examples:
    Berman's reference values (kornia's test): per class 0.4, 0.32 and
    0.31.

    >>> import jax.numpy as jnp
    >>> from pel_jax import lovasz_softmax_loss
    >>> p = jnp.array([[[0.6, 0.29, 0.11], [0.21, 0.68, 0.11],
    ...                 [0.12, 0.19, 0.69]]])  # [B=1, 3 pixels, C=3]
    >>> print(f"{lovasz_softmax_loss(p, jnp.array([[0, 1, 2]])):.4f}")
    0.3433
  """
  predictions, targets = _as_array_likes(predictions, targets)
  _checks.check_predictions(predictions)
  shape = np.shape(predictions)
  if shape[-1] < 2:
    raise ValueError(
      f"`lovasz_softmax_loss` needs C >= 2 classes, got `predictions` of"
      f" shape {shape}: for one binary channel use `lovasz_hinge_loss`"
      " (logits), or pass two channels."
    )
  _check_integer_targets(targets, "lovasz_softmax_loss", "class ids")
  _checks.check_targets(predictions, targets, ignore_index)
  _checks.check_mask(predictions, where)
  _checks.check_options(predictions, reduction, True)
  from_logits = _checks.check_flag("from_logits", from_logits)
  per_image = _checks.check_flag("per_image", per_image)
  picked, present_only = _resolve_classes(classes, shape[-1])

  return _softmax_loss(
    predictions,
    targets,
    where,
    ignore_index=ignore_index,
    from_logits=from_logits,
    picked=picked,
    present_only=present_only,
    per_image=per_image,
    reduction=reduction,
  )


# Jitted once the static checks have passed: an eager call runs one program
# instead of dispatching each of its small operations.
@functools.partial(
  jax.jit,
  static_argnames=(
    "ignore_index",
    "from_logits",
    "picked",
    "present_only",
    "per_image",
    "reduction",
  ),
)
def _softmax_loss(
  x,
  targets,
  where,
  *,
  ignore_index,
  from_logits,
  picked,
  present_only,
  per_image,
  reduction,
):
  shape = x.shape
  x = x.astype(_numerics.compute_dtype(x.dtype))
  valid = _valid(shape[:-1], targets, where, ignore_index)
  # Left-out pixels may hold NaN or inf: replaced before the softmax, or
  # their zero cotangent times a NaN derivative would still be NaN.
  x = jnp.where(valid[..., None], x, 0)
  probs = jax.nn.softmax(x, -1) if from_logits else x
  ids = jnp.arange(shape[-1]) if picked is None else jnp.asarray(picked)
  if picked is not None:
    probs = probs[..., ids]
  num = ids.shape[0]
  # [B, C', P] per image or [C', B * P] for the batch: classes sort apart.
  probs = probs.reshape(shape[0], -1, num)
  fg = targets.reshape(shape[0], -1, 1) == ids
  valid = jnp.broadcast_to(valid.reshape(shape[0], -1, 1), fg.shape)
  if per_image:
    probs, fg, valid = (jnp.moveaxis(a, -1, 1) for a in (probs, fg, valid))
  else:
    probs, fg, valid = (a.reshape(-1, num).T for a in (probs, fg, valid))
  losses, present = _lovasz(
    jnp.abs(fg.astype(probs.dtype) - probs), fg, valid, hinge=False
  )
  chosen = present if present_only else jnp.ones_like(present)
  count = jnp.sum(chosen, -1)
  loss = jnp.sum(jnp.where(chosen, losses, 0), -1) / jnp.maximum(count, 1)
  return _reduce(loss, reduction)


def lovasz_hinge_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  per_image: bool = False,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Binary Lovász-hinge loss (Berman et al. 2018), a surrogate of IoU.

  With :math:`z_i` the logit and :math:`g_i \in \{0, 1\}` the ground truth
  of pixel :math:`i`, the hinge errors are :math:`e_i = 1 - z_i (2 g_i -
  1)`. Sorted, :math:`e_{\pi_1} \ge \dots \ge e_{\pi_N}`, with :math:`J_k`
  the Jaccard loss of the foreground class when the first :math:`k` pixels
  are mispredicted (see `lovasz_softmax_loss`):

  .. math::
    L = \sum_{k=1}^{N} \max(e_{\pi_k}, 0) (J_k - J_{k - 1}).

  The errors are sorted by integer keys, as in `lovasz_softmax_loss`. Unlike
  Lovász-softmax the foreground is always scored, present or not: an image
  without foreground has loss :math:`\max(0, \max_i e_i)`.

  Args:
    predictions: float logits `[B, *spatial, 1]`, one channel, channels
      last (`logits[..., None]` adds it). For multilabel (smp's
      "multilabel" mode, one loss over every channel's pixels), reshape to
      `[B, -1, 1]` and the targets to `[B, -1]`.
    targets: integer or bool `[B, *spatial]`; 1 (True) is the foreground,
      every other id background. Float (soft) targets are refused.
    per_image: one loss per image, then reduced over images, instead of one
      over the batch's pixels.
    ignore_index: pixels with this id are left out.
    where: bool `[B, *spatial]`; False pixels are left out.
    reduction: as in `lovasz_softmax_loss`: over images with ``per_image``,
      else the batch's one loss for every reduction.

  Returns:
    The loss, float32 for float32 and half-precision predictions, float64 for
    float64. An image (or batch) with no kept pixel has loss 0, zero
    gradient, and counts in the mean over images (smp's and Berman's).

  Examples:
    A background image and a foreground image (pytorch-optimizer's test):

    >>> import jax.numpy as jnp
    >>> from pel_jax import lovasz_hinge_loss
    >>> z = jnp.array([[2.0, -1.0], [0.5, 1.5]])[..., None]  # [B=2, 2, 1]
    >>> g = jnp.array([[0, 0], [1, 1]])
    >>> print(f"{lovasz_hinge_loss(z, g, per_image=True):.4f}")  # (3 + 1/4)/2
    1.6250
  """
  predictions, targets = _as_array_likes(predictions, targets)
  _checks.check_predictions(predictions)
  shape = np.shape(predictions)
  if shape[-1] != 1:
    raise ValueError(
      "`predictions` (logits) must be [batch, *spatial, 1] (one binary"
      f" channel), got"
      f" shape {shape}.{_checks.layout_hint(shape)} For C classes use"
      " `lovasz_softmax_loss`; for multilabel reshape to [B, -1, 1]."
    )
  if jnp.result_type(targets) == jnp.bool_:
    targets = jnp.asarray(targets, jnp.int32)
  _check_integer_targets(targets, "lovasz_hinge_loss", "1 the foreground")
  _checks.check_targets(predictions, targets, ignore_index)
  _checks.check_mask(predictions, where)
  _checks.check_options(predictions, reduction, True)
  per_image = _checks.check_flag("per_image", per_image)

  return _hinge_loss(
    predictions,
    targets,
    where,
    ignore_index=ignore_index,
    per_image=per_image,
    reduction=reduction,
  )


@functools.partial(
  jax.jit, static_argnames=("ignore_index", "per_image", "reduction")
)
def _hinge_loss(logits, targets, where, *, ignore_index, per_image, reduction):
  shape = logits.shape
  z = logits[..., 0].astype(_numerics.compute_dtype(logits.dtype))
  valid = _valid(shape[:-1], targets, where, ignore_index)
  z = jnp.where(valid, z, 0)
  fg = targets == 1
  rows = (shape[0], -1) if per_image else (1, -1)
  errors = 1 - z * jnp.where(fg, 1, -1).astype(z.dtype)
  loss, _ = _lovasz(
    errors.reshape(rows),
    fg.reshape(rows),
    valid.reshape(rows),
    hinge=True,
  )
  return _reduce(loss if per_image else loss[0], reduction)

"""Per-pixel sigmoid focal cross-entropy (Lin et al. 2017), smp's modes."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from pel_jax import _checks
from pel_jax import _dense

# smp's clamp of probabilities before their logit, and of the normaliser.
_PROB_EPS = 1e-7
_NORM_EPS = 1e-6


def focal_cross_entropy(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  gamma: float = 2.0,
  alpha: float | None = None,
  from_logits: bool = False,
  normalized: bool = False,
  reduced_threshold: float | None = None,
  class_weights: ArrayLike | None = None,
  batch: bool = True,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  axis_name: Hashable | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Sigmoid focal cross-entropy per pixel and class (Lin et al. 2017).

  Every class is a binary problem on its own channel: with :math:`z` the
  logit and :math:`t \in [0, 1]` the target of a pixel and class,
  :math:`\mathrm{CE} = -t \log \sigma(z) - (1 - t) \log(1 - \sigma(z))`,
  :math:`p_t = e^{-\mathrm{CE}}` and

  .. math::
    \ell = a_t (1 - p_t)^{\gamma} \, \mathrm{CE}, \quad
    a_t = \alpha t + (1 - \alpha)(1 - t)

  (:math:`a_t = 1` without ``alpha``). ``reduced_threshold`` :math:`r`
  (Sergievskiy and Ponamarev 2019) replaces the factor by
  :math:`((1 - p_t) / r)^{\gamma}`, and by 1 where :math:`p_t < r`.
  Per class, :math:`L_c = \sum \ell / N` over the :math:`N` kept pixels;
  ``normalized`` (Chen et al. 2019) divides it by
  :math:`\max(\sum (1 - p_t)^{\gamma}, 10^{-6})` too. The loss is the mean
  of :math:`L_c` over the classes, or :math:`\sum_c w_c L_c / \sum_c w_c`
  with ``class_weights``. Each :math:`L_c` is a ratio of sums over pixels,
  so with ``batch=True`` (one mean over the batch) it is global over the
  devices with ``axis_name``.

  Peer mapping: segmentation_models_pytorch 0.6.0 ``FocalLoss(mode,
  alpha, gamma, ignore_index, normalized, reduced_threshold,
  class_weights)`` on logits (its default ``from_logits=True``), channels
  last, with ``from_logits=True``:

  * "binary": `[B, *S, 1]` logits, targets 0/1 ids `[B, *S]` (or float
    `[B, *S, 1]`; ``ignore_index`` needs integer ids, ``where`` masks float
    targets);
  * "multiclass": `[B, *S, C]` logits and integer ids: a sigmoid focal
    loss of each channel against the one-hot (not a softmax focal loss);
  * "multilabel": float multi-hot targets `[B, *S, C]`.

  smp's ``from_logits=False`` turns clamped probabilities into logits
  (binary, multilabel: :math:`\log(p / (1 - p))`, as here) but in
  multiclass mode feeds :math:`\log p` to the sigmoid; here probabilities
  always take the first form. Where smp keeps no pixel it returns NaN;
  here the class's loss is 0.

  Args:
    predictions: float `[B, *spatial, C]` logits (``from_logits=True``) or
      probabilities (clamped to :math:`[10^{-7}, 1 - 10^{-7}]`).
    targets: integer class ids `[B, *spatial]` (with one channel, id 1 is
      the class), or float multi-hot or soft labels of the predictions'
      shape.
    gamma: the focusing exponent, >= 0.
    alpha: the weight of the positive targets, in [0, 1], or None.
    from_logits: whether ``predictions`` are logits.
    normalized: divide each class's loss by its sum of focal factors.
    reduced_threshold: the reduced focal loss's threshold, in (0, 1], or
      None.
    class_weights: `[C]` weights of a weighted mean over the classes
      (``reduction="mean"`` only).
    batch: one mean over the batch per class; False gives one per sample
      and class.
    ignore_index: integer target id whose pixels leave every sum.
    where: bool `[B, *spatial]`; False pixels leave every sum.
    axis_name: a named axis (`pmap`, `shard_map`) the batch is split over;
      needs ``batch=True``.
    reduction: "mean", "sum" or "none" (`[C]`, or `[B, C]` with
      ``batch=False``).

  Returns:
    The loss, float32 (float64 for float64 predictions).

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import focal_cross_entropy
    >>> logits = jnp.array([[[10.0], [-10.0], [0.0]]])  # [B=1, 3, C=1]
    >>> ids = jnp.array([[1, 0, 1]])
    >>> # Only the undecided pixel counts: (1/2)^2 log 2 / 3.
    >>> print(f"{focal_cross_entropy(logits, ids, from_logits=True):.4f}")
    0.0578
  """
  _dense.check_inputs(
    predictions,
    targets,
    from_logits=from_logits,
    activation=None,
    include_background=True,
    reduction=reduction,
    where=where,
    ignore_index=ignore_index,
  )
  gamma = _checks.check_number("gamma", gamma)
  for name, value, low_open in (
    ("alpha", alpha, False),
    ("reduced_threshold", reduced_threshold, True),
  ):
    if value is not None:
      value = _checks.check_number(name, value)
      if value > 1 or (low_open and value == 0):
        low = "(0" if low_open else "[0"
        raise ValueError(f"`{name}` must be in {low}, 1] or None, got {value}.")
  normalized = _checks.check_flag("normalized", normalized)
  batch = _checks.check_flag("batch", batch)
  _dense.check_axis_name(axis_name, batch)
  num_classes = np.shape(predictions)[-1]
  if isinstance(class_weights, (list, tuple)):
    class_weights = np.asarray(class_weights)
  if class_weights is not None:
    if reduction != "mean":
      raise ValueError(
        "`class_weights` weight the mean over the classes: they need"
        f" `reduction='mean'`, got {reduction!r}."
      )
    _checks.check_class_weights(predictions, class_weights, jnp.float32)
  z, t, w = _dense.probabilities_and_targets(
    predictions, targets, None, True, where, ignore_index
  )
  if not from_logits:
    p = jnp.clip(z, _PROB_EPS, 1 - _PROB_EPS)
    z = jnp.log(p) - jnp.log1p(-p)
  ce = jax.nn.softplus(z) - z * t
  miss = -jnp.expm1(-ce)  # 1 - p_t, without cancellation near p_t = 1.
  if reduced_threshold is not None:
    miss = miss / reduced_threshold
  if gamma == 0:
    factor = jnp.ones_like(miss)  # smp's 0 ** 0 = 1.
  else:
    positive = miss > 0
    factor = jnp.where(positive, jnp.where(positive, miss, 1) ** gamma, 0)
  if reduced_threshold is not None:
    factor = jnp.where(jnp.exp(-ce) < reduced_threshold, 1, factor)
  loss = factor * ce
  if alpha is not None:
    loss = loss * (alpha * t + (1 - alpha) * (1 - t))
  ones = jnp.ones(z.shape[:-1] + (1,), z.dtype)
  total, count = (
    _dense.pixel_sums(x, w, batch, axis_name) for x in (loss, ones)
  )
  per_class = total / jnp.maximum(count, 1)
  if normalized:
    norm = _dense.pixel_sums(factor, w, batch, axis_name)
    per_class = per_class / jnp.maximum(norm, _NORM_EPS)
  if class_weights is not None:
    weights = jnp.asarray(class_weights, per_class.dtype)
    return jnp.sum(per_class * weights) / (
      jnp.sum(weights) * (per_class.size // num_classes)
    )
  return _dense.reduce(per_class, reduction)

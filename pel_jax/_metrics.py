"""Segmentation metrics from additive per-class sums: Dice, IoU, precision,
recall (F1 is Dice).

`confusion_stats` reduces predictions and targets to per-class sums (the
`region_stats` core, a one-hot fed as probabilities for hard predictions);
`segmentation_metrics` computes every metric from them. The sums add over
batches and devices, so metrics of accumulated sums are those of the union.
"""

from __future__ import annotations

from collections.abc import Hashable
import math
import numbers
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from pel_jax import _checks
from pel_jax import _loss
from pel_jax import _numerics
from pel_jax import _region_stats

HARD_MODES = ("argmax", "threshold", None)
AVERAGES = ("macro", "micro", "none")
ABSENT_POLICIES = ("count", "exclude", "exclude_empty")


class ConfusionStats(NamedTuple):
  r"""Per-class confusion sums, each `[B, C]` (`[C]` with ``batch=True``).

  With :math:`w` the pixel mask, :math:`p` the (hard or soft) prediction
  and :math:`g` the target of class :math:`c`, summed over the spatial
  axes (and the batch with ``batch=True``):
  :math:`TP = \sum w p g`, :math:`FP = \sum w p (1 - g)`,
  :math:`FN = \sum w (1 - p) g`, :math:`TN = \sum w (1 - p)(1 - g)`
  (so :math:`TP + FP + FN + TN` is the number of kept pixels).

  Every field is a sum over pixels: the statistics of two batches added
  leaf by leaf (``jax.tree.map(jnp.add, s1, s2)``) are those of their union.
  """

  tp: jax.Array
  fp: jax.Array
  fn: jax.Array
  tn: jax.Array


class SegmentationMetrics(NamedTuple):
  """Dice (= F1), IoU (Jaccard), precision and recall, each of one shape."""

  dice: jax.Array
  iou: jax.Array
  precision: jax.Array
  recall: jax.Array


def confusion_stats(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  from_logits: bool = False,
  activation: str | None = None,
  hard: str | None = "argmax",
  threshold: float = 0.5,
  batch: bool = False,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  axis_name: Hashable | None = None,
) -> ConfusionStats:
  r"""Per-class TP, FP, FN and TN sums that every metric is computed from.

  Predictions become per-class :math:`p \in [0, 1]`:

  * ``hard="argmax"``: :math:`p_c = [c = \arg\max_k x_k]` (a one-hot; ties
    go to the lowest class, as `jnp.argmax`). Needs C >= 2.
  * ``hard="threshold"``: :math:`p_c = [\sigma_c > t]` with
    :math:`\sigma` the probabilities (after ``activation`` with
    ``from_logits``) and :math:`t` = ``threshold``; strict, as torchmetrics'
    ``preds > threshold`` (MONAI's ``AsDiscrete(threshold=t)`` is ``>=``).
    Classes are independent (multi-label); one channel is binary.
  * ``hard=None``: the soft probabilities themselves.

  then, with :math:`g` the targets and :math:`w` the pixel mask,
  :math:`TP = \sum w p g`, :math:`FP = \sum w p - TP`,
  :math:`FN = \sum w g - TP`, :math:`TN = \sum w - TP - FP - FN`. The sums
  are those of `region_stats` (``tp``, ``sum_p``, ``sum_g``) plus the kept
  pixel count, so they add over batches (accumulation) and, with
  ``axis_name`` and ``batch=True``, are `psum`-ed over the devices (every
  device gets the global sums).

  Args:
    predictions: float `[B, *spatial, C]` probabilities, or logits with
      ``from_logits=True``.
    targets: integer class ids `[B, *spatial]` (with one channel, id 1 is
      the class), or float/bool one-hot, multi-hot or soft labels of the
      predictions' shape.
    from_logits: predictions are logits; ``activation`` turns them into
      probabilities (only ``hard="threshold"`` and ``hard=None`` read them;
      the argmax of logits is that of their probabilities).
    activation: "softmax", "sigmoid" or None (softmax for C >= 2, sigmoid
      for one channel), with ``from_logits``.
    hard: "argmax", "threshold" or None (soft).
    threshold: the probability cut of ``hard="threshold"``, in (0, 1).
    batch: sum over the batch too: each field `[C]` instead of `[B, C]`.
    ignore_index: integer target id whose pixels leave every sum.
    where: bool `[B, *spatial]`; False pixels leave every sum.
    axis_name: a named axis (`pmap`, `shard_map`) the batch is split over;
      with ``batch=True`` the sums are global over it.

  Returns:
    A `ConfusionStats` (``tp``, ``fp``, ``fn``, ``tn``), float32 (float64
    for float64 predictions). Counts in float32 are exact up to 2**24
    (16.7 million pixels per class and field); beyond, they round at a
    relative 6e-8.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import confusion_stats
    >>> probs = jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]])
    >>> ids = jnp.array([[0, 1, 1]])
    >>> s = confusion_stats(probs, ids, batch=True)
    >>> s.tp.tolist(), s.fp.tolist(), s.fn.tolist(), s.tn.tolist()
    ([1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
  """
  return _confusion_stats(
    predictions,
    targets,
    from_logits,
    activation,
    hard,
    threshold,
    batch,
    ignore_index,
    where,
    axis_name,
  )


def _confusion_stats(
  predictions,
  targets,
  from_logits,
  activation,
  hard,
  threshold,
  batch,
  ignore_index,
  where,
  axis_name,
):
  predictions, targets, where = _loss._as_array_likes(
    predictions, targets, where
  )
  _checks.check_predictions(predictions)
  from_logits = _checks.check_flag("from_logits", from_logits)
  batch = _checks.check_flag("batch", batch)
  activation = _checks.resolve_activation(predictions, from_logits, activation)
  _check_hard(predictions, hard, threshold)
  region = dict(
    batch=batch, ignore_index=ignore_index, where=where, axis_name=axis_name
  )
  if hard is None:
    stats = _region_stats.region_stats(
      predictions,
      targets,
      from_logits=from_logits,
      activation=activation,
      **region,
    )
  else:
    # Checked as `region_stats` will see them, before the one-hot hides the
    # original predictions' dtype and any layout mistake.
    _checks.check_targets(predictions, targets, ignore_index)
    _checks.check_mask(predictions, where)
    stats = _region_stats.region_stats(
      _hard(jnp.asarray(predictions), activation, hard, threshold),
      targets,
      **region,
    )
  kept = _kept_pixels(predictions, targets, ignore_index, where, batch)
  if axis_name is not None and batch:
    kept = lax.psum(kept, axis_name)
  kept = kept.astype(stats.tp.dtype)[..., None]
  fp = stats.sum_p - stats.tp
  fn = stats.sum_g - stats.tp
  return ConfusionStats(stats.tp, fp, fn, kept - stats.tp - fp - fn)


def _check_hard(predictions, hard, threshold) -> None:
  if not (hard is None or (isinstance(hard, str) and hard in HARD_MODES)):
    raise ValueError(f"`hard` must be one of {HARD_MODES}, got {hard!r}.")
  if hard == "argmax" and np.shape(predictions)[-1] < 2:
    raise ValueError(
      f"`hard='argmax'` over one class is always class 0; predictions"
      f" {np.shape(predictions)} need `hard='threshold'` or >= 2 classes."
    )
  if hard == "threshold":
    t = _checks.check_number("threshold", threshold)
    if not 0 < t < 1:
      raise ValueError(f"`threshold` must be in (0, 1), got {threshold!r}.")


def _hard(predictions, activation, hard, threshold):
  """One-hot (argmax) or 0/1 (threshold) predictions in the compute dtype."""
  dtype = _numerics.compute_dtype(predictions.dtype)
  classes = predictions.shape[-1]
  if hard == "argmax":
    return jax.nn.one_hot(jnp.argmax(predictions, -1), classes, dtype=dtype)
  p = predictions.astype(dtype)
  if activation == "softmax":
    p = jax.nn.softmax(p, -1)
  elif activation == "sigmoid":
    p = jax.nn.sigmoid(p)
  return (p > threshold).astype(dtype)


def _kept_pixels(predictions, targets, ignore_index, where, batch):
  """The number of pixels left in the sums, `[B]` (`[]` with ``batch``)."""
  kept = jnp.ones(np.shape(predictions)[:-1], jnp.bool_)
  if where is not None:
    kept = kept & jnp.asarray(where)
  if ignore_index is not None:
    kept = kept & (jnp.asarray(targets) != ignore_index)
  kept = jnp.sum(kept, axis=tuple(range(1, kept.ndim)), dtype=jnp.int32)
  return jnp.sum(kept) if batch else kept


def segmentation_metrics(
  stats: ConfusionStats,
  *,
  average: str = "macro",
  zero_division: float = 0.0,
  absent_classes: str = "count",
  include_background: bool = True,
) -> SegmentationMetrics:
  r"""Dice (= F1), IoU, precision and recall from `ConfusionStats` sums.

  Per class (each row of the sums, a sample or the whole batch):

  .. math::
    \mathrm{Dice} = \frac{2 TP}{2 TP + FP + FN}, \quad
    \mathrm{IoU} = \frac{TP}{TP + FP + FN}, \quad
    \mathrm{P} = \frac{TP}{TP + FP}, \quad
    \mathrm{R} = \frac{TP}{TP + FN}

  F1 :math:`= 2 P R / (P + R)` is Dice (the same sums give the same
  ratio, hard or soft), so it has no field of its own. A ratio whose
  denominator is 0 takes ``zero_division``.

  Absent classes (``absent_classes``) and the peers each option equals:

  * "count": every class keeps its value in the mean. With
    ``zero_division=1``: MONAI's ``DiceMetric`` / ``MeanIoU`` with
    ``ignore_empty=False`` (a class in neither prediction nor target
    scores 1, one in the prediction only scores 0). With
    ``zero_division`` z: torchmetrics' ``MultilabelF1Score``,
    ``MultilabelJaccardIndex``, ``MultilabelPrecision``,
    ``MultilabelRecall`` (``hard="threshold"``; its macro keeps every
    label) with ``zero_division=z``.
  * "exclude": a class with no target pixel in the row
    (:math:`TP + FN = 0`) is NaN in every metric and leaves the mean:
    MONAI's ``ignore_empty=True`` (its default). MONAI's
    ``reduction="mean"`` is then `jnp.nanmean` over the rows of the
    ``"macro"`` values.
  * "exclude_empty": a class in neither prediction nor target
    (:math:`TP + FP + FN = 0`) is NaN and leaves the mean; other
    zero denominators (precision with nothing predicted) take
    ``zero_division``: torchmetrics' ``MulticlassF1Score``,
    ``MulticlassJaccardIndex``, ``MulticlassPrecision`` and
    ``MulticlassRecall`` with ``average="macro"`` and ``zero_division``
    (its macro weights drop such classes; its ``average="none"`` keeps
    them at ``zero_division``: "count"), and its segmentation
    ``dice_score`` / ``DiceScore`` and functional ``mean_iou`` (0/0 is
    NaN, left out of the mean). ``batch=True`` sums are torchmetrics'
    ``multidim_average="global"`` / ``aggregation_level="global"``;
    per-sample rows then `jnp.nanmean` are its ``"samplewise"``.

  Averaging over the classes (after dropping class 0 without
  ``include_background``): "none" keeps them (`[..., C]`), "macro" is the
  mean of the classes not left out (NaN for a row where every class is
  left out), "micro" is the ratio of the sums over all classes
  (``absent_classes`` does not apply; ``zero_division`` does). Rows are
  never averaged: reduce them as the peer does (see above).

  Args:
    stats: the `ConfusionStats` of `confusion_stats` (possibly summed over
      batches or devices), or any tuple (tp, fp, fn, tn) of float sums
      `[..., C]` (a confusion matrix's, say).
    average: "macro", "micro" or "none".
    zero_division: the value of a ratio with denominator 0: 0, 1 or NaN.
    absent_classes: "count", "exclude" or "exclude_empty" (above).
    include_background: keep class 0 (False drops it before averaging).

  Returns:
    A `SegmentationMetrics` (``dice``, ``iou``, ``precision``,
    ``recall``), each `[..., C]` ("none", one class fewer without
    ``include_background``) or `[...]`, in the dtype of the sums.

  Examples:
    Sums of two classes, the second in neither prediction nor target:

    >>> import jax.numpy as jnp
    >>> from pel_jax import segmentation_metrics
    >>> tp, fp, fn, tn = (jnp.array(v) for v in
    ...                   ([3.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 5.0]))
    >>> s = (tp, fp, fn, tn)
    >>> m = segmentation_metrics(s, average="none", zero_division=1.0)
    >>> m.dice.tolist(), m.iou.tolist()
    ([0.75, 1.0], [0.6000000238418579, 1.0])
    >>> m = segmentation_metrics(s, absent_classes="exclude_empty")
    >>> float(m.dice)
    0.75
  """
  return _segmentation_metrics(
    stats, average, zero_division, absent_classes, include_background
  )


def _segmentation_metrics(
  stats, average, zero_division, absent_classes, include_background
):
  _check_metric_options(stats, average, zero_division, absent_classes)
  include_background = _checks.check_flag(
    "include_background", include_background
  )
  tp, fp, fn = (jnp.asarray(x) for x in stats[:3])
  if not include_background:
    tp, fp, fn = tp[..., 1:], fp[..., 1:], fn[..., 1:]
  if average == "micro":
    tp, fp, fn = (jnp.sum(x, -1) for x in (tp, fp, fn))
  values = SegmentationMetrics(
    *(
      _ratio(n, d, zero_division)
      for n, d in (
        (2 * tp, 2 * tp + fp + fn),
        (tp, tp + fp + fn),
        (tp, tp + fp),
        (tp, tp + fn),
      )
    )
  )
  if average == "micro":
    return values
  if absent_classes != "count":
    out = tp + fn if absent_classes == "exclude" else tp + fp + fn
    values = jax.tree.map(lambda v: jnp.where(out > 0, v, jnp.nan), values)
  if average == "none":
    return values
  return jax.tree.map(_mean_of_defined, values)


def _ratio(numerator, denominator, zero_division):
  some = denominator > 0
  return jnp.where(
    some, numerator / jnp.where(some, denominator, 1), zero_division
  )


def _mean_of_defined(values):
  """Mean over the class axis of the non-NaN entries; NaN if none."""
  defined = ~jnp.isnan(values)
  count = jnp.sum(defined, -1)
  total = jnp.sum(jnp.where(defined, values, 0), -1)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def _check_metric_options(stats, average, zero_division, absent_classes):
  if not isinstance(stats, tuple) or len(stats) != 4:
    raise TypeError(
      "`stats` must be the `ConfusionStats` of `confusion_stats` or a tuple"
      f" (tp, fp, fn, tn), got {type(stats).__name__}"
      f" of length {len(stats) if isinstance(stats, tuple) else None}."
    )
  shapes = {np.shape(x) for x in stats}
  if len(shapes) != 1 or not next(iter(shapes)):
    raise ValueError(
      "`stats` fields must share one shape [..., num_classes] with a class"
      f" axis, got shapes {[np.shape(x) for x in stats]}."
    )
  for x in stats:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      raise TypeError(
        f"`stats` fields must be floating point, got {_checks._describe(x)}."
      )
  if average not in AVERAGES:
    raise ValueError(f"`average` must be one of {AVERAGES}, got {average!r}.")
  if absent_classes not in ABSENT_POLICIES:
    raise ValueError(
      f"`absent_classes` must be one of {ABSENT_POLICIES}, got"
      f" {absent_classes!r}."
    )
  is_number = isinstance(zero_division, numbers.Real) and not isinstance(
    zero_division, bool
  )
  if not is_number or not (
    math.isnan(zero_division) or zero_division in (0, 1)
  ):
    raise ValueError(
      "`zero_division` must be a Python number 0, 1 or NaN (static), got"
      f" {type(zero_division).__name__} {zero_division!r}."
    )

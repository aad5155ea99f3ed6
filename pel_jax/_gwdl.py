"""Generalized Wasserstein Dice loss (Fidon et al. 2017)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from pel_jax import _checks
from pel_jax import _dense

WEIGHTING_MODES = ("default", "GDL")


def generalized_wasserstein_dice_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  dist_matrix: ArrayLike,
  weighting_mode: str = "default",
  from_logits: bool = False,
  smooth_nr: float = 1e-5,
  smooth_dr: float = 1e-5,
  batch: bool = False,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  axis_name: Hashable | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Generalized Wasserstein Dice loss (Fidon et al. 2017).

  With :math:`M` the `[C, C]` distance matrix between classes (divided by
  its maximum), the distance of pixel :math:`i`'s prediction :math:`p_i`
  from class :math:`k` is :math:`d_{ik} = \sum_c M_{kc} p_{ic}`, the
  Wasserstein distance between :math:`p_i` and the one-hot of :math:`k`
  (Fidon et al., eq. 6). Per class, summed over the kept pixels,
  :math:`V_k = \sum_i w_i g_{ik}` and :math:`S_k = \sum_i w_i g_{ik}
  d_{ik}`. Then, with class weights :math:`\alpha`,

  .. math::
    TP = \sum_k \alpha_k (V_k - S_k), \quad
    L = 1 - \frac{2 TP + s_{nr}}{D + s_{dr}}

  where ``weighting_mode="default"`` (the paper) takes
  :math:`\alpha = (0, 1, \dots, 1)` (class 0 is the background) and
  :math:`D = 2 TP + \sum_k S_k` (every error), and ``"GDL"`` (Tilborghs et
  al. 2020) takes :math:`\alpha_k = 1 / (V_k + 1)` and
  :math:`D = \sum_k \alpha_k (2 V_k - S_k)`.

  For soft targets :math:`g_i`, :math:`\sum_k g_{ik} d_{ik}` is the cost of
  moving :math:`p_i` to :math:`g_i` under their independent coupling (for
  one-hot targets, the Wasserstein distance of eq. 6).

  Every statistic is a sum over pixels, so the loss of summed statistics is
  that of the union: one loss per sample (the paper; ``batch=False``), or
  one of the whole batch with ``batch=True``, global over the devices with
  ``axis_name``.

  Peer mapping: MONAI 1.6.1 ``GeneralizedWassersteinDiceLoss(dist_matrix,
  weighting_mode, reduction, smooth_nr, smooth_dr)`` on logits ``x``
  `[B, C, *spatial]` and ids is ``generalized_wasserstein_dice_loss(
  jnp.moveaxis(x, 1, -1), ids, dist_matrix=m, from_logits=True, ...)``.
  Like MONAI 1.6.1 (and the paper), the loss is per sample, then reduced.
  MONAI before its fix (issue 4650, PR 8744, 2026) mixed the samples of a
  batch > 1 (a broadcast paired each sample's weights with every sample's
  errors): no option reproduces that.

  Args:
    predictions: float `[B, *spatial, C]`, C >= 2, probabilities, or logits
      with ``from_logits=True`` (softmax over the last axis).
    targets: integer class ids `[B, *spatial]`, or float one-hot or soft
      labels of the predictions' shape.
    dist_matrix: `[C, C]` distances between classes: >= 0, zero diagonal
      (not checked: it may be traced). It is divided by its maximum, as
      MONAI does.
    weighting_mode: "default" or "GDL".
    from_logits: whether ``predictions`` are logits.
    smooth_nr: added to the numerator, >= 0.
    smooth_dr: added to the denominator, >= 0.
    batch: one loss over the whole batch (sums over it) instead of one per
      sample.
    ignore_index: integer target id whose pixels leave every sum.
    where: bool `[B, *spatial]`; False pixels leave every sum.
    axis_name: a named axis (`pmap`, `shard_map`) the batch is split over;
      needs ``batch=True``.
    reduction: "mean", "sum" or "none" (`[B]`, or `[]` with ``batch``).

  Returns:
    The loss, float32 (float64 for float64 predictions).

  References:
    Fidon et al., `Generalised Wasserstein Dice Score for Imbalanced
    Multi-class Segmentation using Holistic Convolutional Networks
    <https://arxiv.org/abs/1707.00478>`_, BrainLes 2017.

    Tilborghs et al., `Comparative study of deep learning methods for the
    automatic segmentation of lung, lesion and lesion type in CT scans of
    COVID-19 patients <https://arxiv.org/abs/2007.15546>`_, 2020.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import generalized_wasserstein_dice_loss
    >>> m = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]])
    >>> p = jnp.array([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # [B=1, 2, C=3]
    >>> ids = jnp.array([[2, 2]])
    >>> # TP = 1 + 0.5, errors 0 + 0.5: 1 - 3 / 3.5
    >>> loss = generalized_wasserstein_dice_loss(p, ids, dist_matrix=m)
    >>> print(f"{loss:.4f}")
    0.1429
  """
  stats = wasserstein_stats(
    predictions,
    targets,
    dist_matrix=dist_matrix,
    from_logits=from_logits,
    batch=batch,
    ignore_index=ignore_index,
    where=where,
    axis_name=axis_name,
    reduction=reduction,
  )
  return generalized_wasserstein_dice_loss_from_stats(
    stats,
    weighting_mode=weighting_mode,
    smooth_nr=smooth_nr,
    smooth_dr=smooth_dr,
    reduction=reduction,
  )


class WassersteinStats(NamedTuple):
  r"""The sums of `generalized_wasserstein_dice_loss`, each `[B, C]` (`[C]`
  with ``batch=True``): ``volumes`` :math:`V_k = \sum_i w_i g_{ik}` and
  ``errors`` :math:`S_k = \sum_i w_i g_{ik} d_{ik}`. Sums over pixels: the
  statistics of two batches added leaf by leaf are those of their union."""

  volumes: jax.Array
  errors: jax.Array


def wasserstein_stats(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  dist_matrix: ArrayLike,
  from_logits: bool = False,
  batch: bool = False,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  axis_name: Hashable | None = None,
  reduction: str = "mean",
) -> WassersteinStats:
  r"""The per-class sums `generalized_wasserstein_dice_loss` is a ratio of.

  ``generalized_wasserstein_dice_loss(x, t, **o)`` is
  ``generalized_wasserstein_dice_loss_from_stats(wasserstein_stats(x, t,
  ...), ...)``; the sums add over micro-batches, tiles and devices, so the
  loss of summed statistics (`accumulated_value_and_grad`) is exact.
  Differentiable by autodiff.

  Args:
    predictions: as in `generalized_wasserstein_dice_loss`.
    targets: as there.
    dist_matrix: as there.
    from_logits: as there.
    batch: sum over the batch too (`[C]` statistics).
    ignore_index: as there.
    where: as there.
    axis_name: as there (with ``batch=True``: the sums are global).
    reduction: checked only, so that one dict of options serves both calls.

  Returns:
    A `WassersteinStats`, float32 (float64 for float64 predictions).

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import wasserstein_stats
    >>> m = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]])
    >>> p = jnp.array([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # [B=1, 2, C=3]
    >>> s = wasserstein_stats(p, jnp.array([[2, 2]]), dist_matrix=m)
    >>> s.volumes.tolist(), s.errors.tolist()  # Class 2: 2 pixels, 0 + 0.5.
    ([[0.0, 0.0, 2.0]], [[0.0, 0.0, 0.5]])
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
  num_classes = np.shape(predictions)[-1]
  if num_classes < 2:
    raise ValueError(
      f"`predictions` {np.shape(predictions)} need C >= 2 classes (the last"
      " axis): the Wasserstein distance is between class distributions."
    )
  if np.shape(dist_matrix) != (num_classes, num_classes):
    raise ValueError(
      f"`dist_matrix` must be [C, C] = {(num_classes,) * 2}, one distance"
      " per pair of classes of `predictions`, got shape"
      f" {np.shape(dist_matrix)}."
    )
  if not jnp.issubdtype(jnp.result_type(dist_matrix), jnp.number):
    raise TypeError(
      f"`dist_matrix` must be numeric, got {_checks._describe(dist_matrix)}."
    )
  batch = _checks.check_flag("batch", batch)
  _dense.check_axis_name(axis_name, batch)
  p, g, w = _dense.probabilities_and_targets(
    predictions,
    targets,
    "softmax" if from_logits else None,
    True,
    where,
    ignore_index,
  )
  m = jnp.asarray(dist_matrix, p.dtype)
  m = m / jnp.max(m)
  # d[..., k] = sum_c M[k, c] p[..., c]: the distance of p from class k.
  d = jnp.einsum("...c,kc->...k", p, m)
  return WassersteinStats(
    *(_dense.pixel_sums(x, w, batch, axis_name) for x in (g, g * d))
  )


def generalized_wasserstein_dice_loss_from_stats(
  stats: WassersteinStats,
  *,
  weighting_mode: str = "default",
  smooth_nr: float = 1e-5,
  smooth_dr: float = 1e-5,
  reduction: str = "mean",
) -> jax.Array:
  """`generalized_wasserstein_dice_loss` from (summed) `wasserstein_stats`.

  Args:
    stats: a `WassersteinStats`, or a leaf-wise sum of several.
    weighting_mode: "default" or "GDL" (see
      `generalized_wasserstein_dice_loss`).
    smooth_nr: added to the numerator, >= 0.
    smooth_dr: added to the denominator, >= 0.
    reduction: "mean", "sum" or "none" (`[B]`, or `[]` for `[C]` stats).

  Returns:
    The loss, in the stats' dtype.

  Examples:
    Two halves of a batch add up to the loss of the whole:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import pel_jax
    >>> m = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]])
    >>> x = jnp.linspace(-2.0, 2.0, 4 * 2 * 3).reshape(4, 2, 3)
    >>> ids = jnp.array([[0, 1], [2, 2], [1, 0], [2, 1]])
    >>> o = dict(dist_matrix=m, from_logits=True, batch=True)
    >>> halves = [pel_jax.wasserstein_stats(x[i:i + 2], ids[i:i + 2], **o)
    ...           for i in (0, 2)]
    >>> total = jax.tree.map(jnp.add, *halves)
    >>> whole = pel_jax.generalized_wasserstein_dice_loss(x, ids, **o)
    >>> bool(jnp.allclose(
    ...     pel_jax.generalized_wasserstein_dice_loss_from_stats(total), whole))
    True
  """
  if not isinstance(stats, WassersteinStats):
    raise TypeError(
      "`stats` must be the WassersteinStats that `wasserstein_stats`"
      f" returns, got {type(stats).__name__}."
    )
  if weighting_mode not in WEIGHTING_MODES:
    raise ValueError(
      f"`weighting_mode` must be one of {WEIGHTING_MODES}, got"
      f" {weighting_mode!r}."
    )
  if reduction not in _checks.REDUCTIONS:
    raise ValueError(
      f"`reduction` must be one of {_checks.REDUCTIONS}, got {reduction!r}."
    )
  smooth_nr = _checks.check_number("smooth_nr", smooth_nr)
  smooth_dr = _checks.check_number("smooth_dr", smooth_dr)
  volumes, errors = stats
  if weighting_mode == "GDL":
    alpha = 1 / (volumes + 1)
    tp = jnp.sum(alpha * (volumes - errors), -1)
    denominator = jnp.sum(alpha * (2 * volumes - errors), -1)
  else:
    tp = jnp.sum(volumes[..., 1:] - errors[..., 1:], -1)
    denominator = 2 * tp + jnp.sum(errors, -1)
  loss = 1 - (2 * tp + smooth_nr) / (denominator + smooth_dr)
  return _dense.reduce(loss, reduction)

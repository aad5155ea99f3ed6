"""The Hausdorff distance-transform loss (Karimi and Salcudean 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax import _checks
from pel_jax import _dense
from pel_jax import _distance

ArrayLike = jax.typing.ArrayLike


def hausdorff_dt_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  alpha: float = 2.0,
  from_logits: bool = False,
  activation: str | None = None,
  include_background: bool = True,
  spacing: Sequence[float] | None = None,
  where: ArrayLike | None = None,
  ignore_index: int | None = None,
  batch: bool = False,
  reduction: str = "mean",
  log: bool = False,
) -> jax.Array:
  r"""Hausdorff distance-transform loss, and its log form.

  Karimi and Salcudean, "Reducing the Hausdorff Distance in Medical Image
  Segmentation with Convolutional Neural Networks" (IEEE TMI 2019), as
  MONAI 1.6.1's ``HausdorffDTLoss``: per sample and class :math:`c`, the
  mean over the :math:`P` pixels

  .. math::
    L_c = \frac{1}{P} \sum_x \big(p_c(x) - g_c(x)\big)^2
      \big(d_{p,c}(x)^\alpha + d_{g,c}(x)^\alpha\big),

  where :math:`d_{g,c}` is the distance field of the target mask
  :math:`g_c > 0.5` and :math:`d_{p,c}` that of the thresholded prediction
  :math:`p_c > 0.5`. A field is MONAI's ``distance_field``: each pixel's
  distance to the nearest pixel of the other side (``distance_transform``
  of the mask plus that of its complement; both sides' pixels next to the
  boundary are at 1), and 0 everywhere for a mask that is empty or full.
  So a class absent from both the target and the thresholded prediction
  adds 0, never NaN. The fields have no gradient (MONAI computes them under
  ``torch.no_grad``): the gradient is :math:`2 (p - g) (d_p^\alpha +
  d_g^\alpha) / P`, times the activation's Jacobian. The targets' fields
  and the predictions' are computed inside the call, on the device, in one
  batched transform.

  With ``log=True`` it is MONAI's ``LogHausdorffDTLoss``: :math:`\log(L +
  1)` of the *reduced* loss :math:`L` (of each entry with
  ``reduction="none"``).

  MONAI rounds its fields to float32 (``.float()``) even for float64
  inputs; here they are in the compute dtype (float64 under
  ``jax.enable_x64``), so float64 results agree with MONAI's to about 1e-7
  relative.

  Args:
    predictions: float ``[B, *spatial, C]``, probabilities, or logits with
      ``from_logits=True``.
    targets: integer class ids ``[B, *spatial]`` (with one channel, id 1
      is the foreground), or float or bool ``[B, *spatial, C]``, one-hot or
      soft: :math:`g` enters the squared error as it is, and its field is
      that of :math:`g > 0.5`.
    alpha: the exponent :math:`\alpha \ge 0` of the distances (static).
    from_logits: apply ``activation`` to ``predictions`` first.
    activation: ``"sigmoid"`` or ``"softmax"`` (logits only); default
      sigmoid for one class, else softmax.
    include_background: keep class 0 (MONAI's default is False, which
      here needs two or more classes).
    spacing: the pixel size along each spatial axis, as for
      :func:`distance_transform` (default 1; MONAI has none).
    where: bool ``[B, *spatial]``: False pixels leave the mean, which is
      over the kept pixels (0 for a sample with none). The fields are still
      those of the whole image (MONAI has no mask).
    ignore_index: an id of integer ``targets`` whose pixels leave the mean
      as with ``where``; they are in no class's target mask.
    batch: average over the batch and the pixels together, one loss per
      class (MONAI's ``batch``; every sample has :math:`P` pixels, so only
      ``"sum"`` and ``"none"`` differ).
    reduction: ``"mean"`` over samples and kept classes, ``"sum"``, or
      ``"none"``: ``[B, C']`` (``[C']`` with ``batch=True``).
    log: return :math:`\log(L + 1)` (MONAI's ``LogHausdorffDTLoss``).

  Returns:
    The loss, a scalar, or ``[B, C']`` / ``[C']`` with ``reduction="none"``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import hausdorff_dt_loss
    >>> ids = jnp.array([[0, 1, 1, 0]])  # [B=1, 4]; fields [1, 1, 1, 1]
    >>> p = jnp.array([[0.0, 0.6, 1.0, 0.0]])[..., None]
    >>> # Only pixel 1 errs: (0.6 - 1)^2 (1^2 + 1^2) / 4.
    >>> print(f"{hausdorff_dt_loss(p, ids):.2f}")
    0.08
  """
  activation, include_background, spacing = _dense.check_inputs(
    predictions,
    targets,
    from_logits=from_logits,
    activation=activation,
    include_background=include_background,
    reduction=reduction,
    spacing=spacing,
    where=where,
    ignore_index=ignore_index,
  )
  alpha = _checks.check_number("alpha", alpha)
  batch = _checks.check_flag("batch", batch)
  log = _checks.check_flag("log", log)
  p, g, w = _dense.probabilities_and_targets(
    predictions, targets, activation, include_background, where, ignore_index
  )
  masks = jnp.concatenate([lax.stop_gradient(p) > 0.5, g > 0.5], axis=-1)
  fields = _dense.per_class_maps(
    masks,
    lambda m: _distance._distance_field(m, spacing),  # pylint: disable=protected-access
  )
  fields = fields.astype(p.dtype) ** alpha
  kept = p.shape[-1]
  weight = fields[..., :kept] + fields[..., kept:]
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  err = (p - g) ** 2 * weight
  per_class = _dense.masked_mean(err, w, axes)
  loss = _dense.reduce(per_class, reduction)
  return jnp.log1p(loss) if log else loss

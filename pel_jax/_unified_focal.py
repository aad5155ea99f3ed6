"""Asymmetric unified focal loss (Yeung et al. 2022), multi-class."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from pel_jax import _checks
from pel_jax import _dense


def unified_focal_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  from_logits: bool = False,
  weight: float = 0.5,
  delta: float = 0.7,
  gamma: float = 0.5,
  epsilon: float = 1e-7,
  batch: bool = False,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  axis_name: Hashable | None = None,
) -> jax.Array:
  r"""Asymmetric unified focal loss (Yeung et al. 2022), any number of classes.

  Class 0 is the background (suppressed), classes :math:`r \ge 1` the rare
  foreground (enhanced). With :math:`p` the probabilities clipped to
  :math:`[\epsilon, 1 - \epsilon]`, :math:`g` the targets, :math:`w` the
  kept pixels, :math:`N = \sum_i w_i` and C classes, the asymmetric focal
  loss (a cross-entropy) is

  .. math::
    L_{aF} = -\frac{1}{C N} \sum_i w_i \Big[(1 - \delta)
      (1 - p_{i0})^{\gamma} g_{i0} \log p_{i0}
      + \delta \sum_{r \ge 1} g_{ir} \log p_{ir}\Big],

  the asymmetric focal Tversky loss, with the per-class sums
  :math:`TP_c = \sum w p g`, :math:`FN_c = \sum w (1 - p) g`,
  :math:`FP_c = \sum w p (1 - g)` and
  :math:`mTI_c = (TP_c + \epsilon) / (TP_c + \delta FN_c + (1 - \delta) FP_c
  + \epsilon)`, is

  .. math::
    L_{aFT} = \frac{1}{C} \Big[(1 - mTI_0)
      + \sum_{r \ge 1} (1 - mTI_r)^{1 - \gamma}\Big]

  (averaged over the samples with ``batch=False``), and the loss is

  .. math::
    L_{aUF} = \lambda L_{aF} + (1 - \lambda) L_{aFT}.

  The multi-class form is that of the paper (eqs. 17, 19 and 21: the
  background term of each loss is suppressed, every other class enhanced),
  with the class sums divided by C as MONAI's means over classes do. MONAI
  after 1.6.1 (commit 05142ed) generalises its loss the same way
  (``AsymmetricUnifiedFocalLoss(use_softmax=...)``, default ``delta=0.6``)
  and its published cases pass here; its ``include_background=False`` has
  no equivalent, and it clamps :math:`1 - mTI_r` at :math:`\epsilon`
  where this loss lets it reach 0.

  Peer mapping: MONAI 1.6.1 ``AsymmetricUnifiedFocalLoss(weight, gamma,
  delta)`` is binary only: on probabilities ``p`` `[B, 2, *spatial]` and
  one-hot targets it is ``unified_focal_loss(jnp.moveaxis(p, 1, -1),
  ids, weight=weight, gamma=gamma, delta=delta)`` (MONAI's ``epsilon`` is
  1e-7). A one-channel ``p`` is the foreground, ``[1 - p, p]``, as MONAI
  takes it. With ``ignore_index``, MONAI zeroes the ignored pixels but
  keeps them in the focal loss's mean; here they leave every sum and
  :math:`N`.

  Every term is a sum over pixels (:math:`N` too): with ``batch=True`` the
  loss is that of the whole batch's sums, exact under accumulation, and
  global over the devices with ``axis_name``.

  Args:
    predictions: float `[B, *spatial, C]`, probabilities, or logits with
      ``from_logits=True`` (softmax; sigmoid for one channel). One channel
      is the foreground of a binary problem.
    targets: integer class ids `[B, *spatial]` (with one channel, id 1 is
      the foreground), or float one-hot or soft labels of the predictions'
      shape.
    from_logits: whether ``predictions`` are logits.
    weight: :math:`\lambda \in [0, 1]`, the focal loss's share.
    delta: :math:`\delta \in [0, 1]`, the weight of the foreground (and of
      the false negatives in :math:`mTI`).
    gamma: :math:`\gamma \in [0, 1)`, the focal strength of both losses.
    epsilon: the clip of the probabilities and the smoothing of
      :math:`mTI`, in [0, 0.5).
    batch: one Tversky index per class over the whole batch instead of per
      sample.
    ignore_index: integer target id whose pixels leave every sum.
    where: bool `[B, *spatial]`; False pixels leave every sum.
    axis_name: a named axis (`pmap`, `shard_map`) the batch is split over;
      needs ``batch=True``.

  Returns:
    The scalar loss, float32 (float64 for float64 predictions).

  References:
    Yeung et al., `Unified Focal loss: Generalising Dice and cross entropy-
    based losses to handle class imbalanced medical image segmentation
    <https://doi.org/10.1016/j.compmedimag.2021.102026>`_, Computerized
    Medical Imaging and Graphics 95, 2022.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import unified_focal_loss
    >>> p = jnp.array([[[0.9, 0.1], [0.2, 0.8]]])  # [B=1, 2 pixels, C=2]
    >>> ids = jnp.array([[0, 1]])
    >>> print(f"{unified_focal_loss(p, ids):.4f}")
    0.1570
  """
  _dense.check_inputs(
    predictions,
    targets,
    from_logits=from_logits,
    activation=None,
    include_background=True,
    reduction="mean",
    where=where,
    ignore_index=ignore_index,
  )
  for name, value, high, closed in (
    ("weight", weight, 1.0, True),
    ("delta", delta, 1.0, True),
    ("gamma", gamma, 1.0, False),
    ("epsilon", epsilon, 0.5, False),
  ):
    value = _checks.check_number(name, value)
    if value > high or (value == high and not closed):
      bound = "]" if closed else ")"
      raise ValueError(f"`{name}` must be in [0, {high:g}{bound}, got {value}.")
  batch = _checks.check_flag("batch", batch)
  _dense.check_axis_name(axis_name, batch)
  p, g, w = _dense.probabilities_and_targets(
    predictions,
    targets,
    _checks.resolve_activation(predictions, from_logits, None),
    True,
    where,
    ignore_index,
  )
  if np.shape(predictions)[-1] == 1:
    p, g = (jnp.concatenate([1 - x, x], -1) for x in (p, g))
  p = jnp.clip(p, epsilon, 1 - epsilon)
  ce = -g * jnp.log(p)
  focal = jnp.concatenate(
    [
      (1 - delta) * (1 - p[..., :1]) ** gamma * ce[..., :1],
      delta * ce[..., 1:],
    ],
    -1,
  )
  num_classes = p.shape[-1]
  ones = jnp.ones(p.shape[:-1] + (1,), p.dtype)
  sums = (g, p, p * g, focal, ones)
  sum_g, sum_p, tp, focal, count = (
    _dense.pixel_sums(x, w, batch, axis_name) for x in sums
  )
  if not batch:
    focal, count = jnp.sum(focal, 0), jnp.sum(count, 0)
  focal_loss = jnp.sum(focal) / (num_classes * jnp.maximum(count[0], 1))
  fn, fp = sum_g - tp, sum_p - tp
  tversky = (tp + epsilon) / (tp + delta * fn + (1 - delta) * fp + epsilon)
  error = 1 - tversky
  positive = error > 0
  safe = jnp.where(positive, error, 1)
  enhanced = jnp.where(positive, safe ** (1 - gamma), 0)
  tversky_loss = jnp.mean(
    jnp.concatenate([error[..., :1], enhanced[..., 1:]], -1)
  )
  return weight * focal_loss + (1 - weight) * tversky_loss

"""Matthews correlation coefficient (MCC) loss from the confusion sums."""

from __future__ import annotations

from collections.abc import Hashable

import jax
from jax import lax
import jax.numpy as jnp
from jax.typing import ArrayLike

from pel_jax import _checks
from pel_jax import _dense
from pel_jax import _metrics


def mcc_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  from_logits: bool = False,
  activation: str | None = None,
  eps: float = 1e-5,
  batch: bool = True,
  include_background: bool = True,
  ignore_index: int | None = None,
  where: ArrayLike | None = None,
  axis_name: Hashable | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Matthews correlation coefficient loss (Abhishek and Hamarneh 2021).

  Per class :math:`c`, with the soft confusion sums of `confusion_stats`
  (``hard=None``: :math:`TP = \sum w p g`, :math:`FP = \sum w p (1 - g)`,
  :math:`FN = \sum w (1 - p) g`, :math:`TN = \sum w (1 - p)(1 - g)`), each
  plus :math:`\epsilon` (``eps``):

  .. math::
    \mathrm{MCC}_c = \frac{TP \cdot TN - FP \cdot FN}
      {\sqrt{(TP + FP)(TP + FN)(TN + FP)(TN + FN)}}, \quad
    L_c = 1 - \mathrm{MCC}_c \in [0, 2]

  (:math:`\mathrm{MCC}_c = 0` where the product is 0, possible only with
  ``eps=0``). The loss is the ``reduction`` of :math:`L_c` over the classes
  (and samples with ``batch=False``).

  Every input of the ratio is a sum over pixels, so the loss of summed
  statistics is that of the union: with ``batch=True`` the sums run over the
  whole batch, and with ``axis_name`` over every device's shard (each
  device gets the global loss, and the gradient of its own shard).

  Peer mapping: segmentation_models_pytorch 0.6.0 ``MCCLoss(eps)`` (binary
  only; its sums run over the whole batch) is ``mcc_loss(p[..., None],
  g[..., None], eps=eps)`` with probabilities ``p`` and float targets ``g``
  of shape `[B, *spatial]`. With C >= 2 classes this is the one-vs-rest MCC
  of each class, then their mean.

  Args:
    predictions: float `[B, *spatial, C]`, probabilities, or logits with
      ``from_logits=True``. One channel is binary (the foreground).
    targets: integer class ids `[B, *spatial]` (with one channel, id 1 is
      the class), or float/bool one-hot or soft labels of the predictions'
      shape.
    from_logits: whether ``predictions`` are logits.
    activation: "softmax", "sigmoid" or None (softmax for C >= 2, sigmoid
      for one channel), with ``from_logits``.
    eps: added to each of TP, FP, FN and TN (smp's ``eps``), >= 0.
    batch: sum over the batch (smp): one MCC per class; False gives one per
      sample and class.
    include_background: keep class 0 (False drops it; needs C >= 2).
    ignore_index: integer target id whose pixels leave every sum.
    where: bool `[B, *spatial]`; False pixels leave every sum.
    axis_name: a named axis (`pmap`, `shard_map`) the batch is split over;
      needs ``batch=True``: the sums are global over it.
    reduction: "mean", "sum" or "none" (`[C]`, or `[B, C]` with
      ``batch=False``).

  Returns:
    The loss, float32 (float64 for float64 predictions).

  References:
    Abhishek and Hamarneh, `Matthews Correlation Coefficient Loss for Deep
    Convolutional Networks: Application to Skin Lesion Segmentation
    <https://arxiv.org/abs/2010.13454>`_, ISBI 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import mcc_loss
    >>> p = jnp.array([[[1.0], [1.0], [0.0], [0.0]]])
    >>> print(f"{mcc_loss(p, 1.0 - p):.4f}")  # Every pixel wrong.
    2.0000
  """
  eps = _checks.check_number("eps", eps)
  _checks.check_options(predictions, reduction, include_background)
  batch = _checks.check_flag("batch", batch)
  _dense.check_axis_name(axis_name, batch)
  stats = _metrics.confusion_stats(
    predictions,
    targets,
    from_logits=from_logits,
    activation=activation,
    hard=None,
    batch=batch,
    ignore_index=ignore_index,
    where=where,
    axis_name=axis_name,
  )
  return _loss_of_stats(stats, eps, include_background, reduction)


def mcc_loss_from_stats(
  stats: _metrics.ConfusionStats,
  *,
  eps: float = 1e-5,
  include_background: bool = True,
  reduction: str = "mean",
) -> jax.Array:
  r"""`mcc_loss` from soft confusion sums (possibly accumulated).

  ``mcc_loss(x, t, **o) == mcc_loss_from_stats(confusion_stats(x, t,
  hard=None, **o'), eps=..., include_background=..., reduction=...)`` with
  ``o'`` the options that act on pixels (``from_logits``, ``activation``,
  ``batch``, ``ignore_index``, ``where``, ``axis_name``). The sums add over
  micro-batches, tiles and devices, so this gives the exact MCC loss (and,
  through `confusion_stats`' autodiff, its gradient) of a batch too large
  for one step: the ``loss_fn`` of `accumulated_value_and_grad`.

  Args:
    stats: a `ConfusionStats` of soft sums (``hard=None``), `[B, C]` or
      `[C]`, or a leaf-wise sum of several.
    eps: added to each of TP, FP, FN and TN, >= 0.
    include_background: keep class 0 (False drops it; needs C >= 2).
    reduction: "mean", "sum" or "none" (the stats' shape, less class 0
      without background).

  Returns:
    The loss, in the stats' dtype.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pel_jax import confusion_stats, mcc_loss, mcc_loss_from_stats
    >>> p = jnp.array([[[0.9], [0.2], [0.7], [0.1]]] * 2)  # [B=2, 4, C=1]
    >>> g = jnp.array([[1, 0, 0, 0], [1, 1, 0, 0]])
    >>> halves = [confusion_stats(p[i:i + 1], g[i:i + 1], hard=None,
    ...                           batch=True) for i in (0, 1)]
    >>> total = jax.tree.map(jnp.add, *halves)
    >>> bool(jnp.allclose(mcc_loss_from_stats(total), mcc_loss(p, g)))
    True
  """
  if not isinstance(stats, _metrics.ConfusionStats):
    raise TypeError(
      "`stats` must be the ConfusionStats that `confusion_stats` returns,"
      f" got {type(stats).__name__}."
    )
  eps = _checks.check_number("eps", eps)
  include_background = _checks.check_flag(
    "include_background", include_background
  )
  fake = jax.ShapeDtypeStruct(
    (1, 1) + jnp.shape(stats.tp)[-1:], jnp.result_type(stats.tp)
  )
  _checks.check_options(fake, reduction, include_background)
  return _loss_of_stats(stats, eps, include_background, reduction)


def _loss_of_stats(stats, eps, include_background, reduction):
  if not include_background:
    stats = jax.tree.map(lambda s: s[..., 1:], stats)
  return _dense.reduce(1 - mcc(*stats, eps), reduction)


def mcc(tp, fp, fn, tn, eps):
  """The MCC of confusion sums, each plus `eps`; 0 where undefined."""
  tp, fp, fn, tn = (s + eps for s in (tp, fp, fn, tn))
  # Two square roots of pairs: the product of all four overflows float32
  # past ~1e9.5 pixels per class.
  a, b = (tp + fp) * (tp + fn), (tn + fp) * (tn + fn)
  defined = (a > 0) & (b > 0)
  a, b = (jnp.where(defined, x, 1) for x in (a, b))
  return jnp.where(
    defined, (tp * tn - fp * fn) * lax.rsqrt(a) * lax.rsqrt(b), 0
  )

"""The additive statistics of `pel_loss` and the loss of their sums.

`region_stats` returns the `[B, C]` (or `[C]`) sums that `pel_loss`
reduces, and `loss_from_stats` the loss of those sums, possibly added over
micro-batches, tiles or devices first (`accumulated_value_and_grad`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pel_jax import _core
from pel_jax._loss import ArrayLike
from pel_jax._loss import _as_array_likes
from pel_jax._loss import _configs
from pel_jax._loss import _loss_of_sums
from pel_jax._loss import _options
from pel_jax._loss import _region_sums
from pel_jax._loss import _stats_inputs


def region_stats(
  predictions: ArrayLike, targets: ArrayLike, **options: Any
) -> _core.RegionStats:
  r"""The per-class region sums `pel_loss` computes its ratio from.

  A `RegionStats` (a NamedTuple pytree) of sums over the spatial axes (and
  the batch with ``batch=True``), each `[B, C]`, or `[C]` with
  ``batch=True``; fields an option does not need are None:

  .. math::
    TP = \sum w p g, \quad \Sigma p = \sum w p, \quad
    \Sigma g = \sum w g, \quad N = \sum w p^n g

  plus :math:`\sum w p^2` and :math:`\sum w g^2` with ``squared=True``;
  with ``soft_labels=True``, :math:`TP = \sum w \min(p, g)` and
  :math:`N = \sum w g \min(p / g, 1)^n`. Everything but these sums is
  computed from them by `loss_from_stats`, and::

      loss_from_stats(region_stats(x, t, **o), **o) == pel_loss(x, t, **o)

  for every option set `o`. The fields are plain sums over pixels: the
  statistics of two batches, tiles of one image or micro-batches, added leaf
  by leaf (``jax.tree.map(jnp.add, s1, s2)``), are those of their union, so
  the loss of a batch too large for one step is exact (gradient
  accumulation, whole-slide images, 3D volumes split into patches).

  Differentiable with the fused backward of `pel_loss` (a custom VJP: the
  cotangent of each sum becomes a per-pixel gradient in one pass), under
  `jit`, `vmap`, `scan`, `pmap` and `shard_map`. With ``axis_name`` and
  ``batch=True`` the sums are `psum`-ed over the axis (every device gets the
  global sums, and the gradient of its own shard, as `pel_loss`); with
  ``batch=False`` they stay per (local) sample.

  Args:
    predictions: as in `pel_loss`.
    targets: as in `pel_loss`.
    **options: any keyword option of `pel_loss`; those that only shape the
      ratio (``scale``, ``fp_weight``, ``reduction``, ...) are checked and
      otherwise ignored, so one dict of options serves both calls.

  Returns:
    A `RegionStats` NamedTuple (fields ``tp``, ``sum_p``, ``sum_g``,
    ``numer``, ``sum_p2``, ``sum_g2``, ``ce``, ``count``), float32 (float64
    for float64 predictions).

  Examples:
    Two micro-batches give the loss of their concatenation:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pel_jax import loss_from_stats, pel_loss, region_stats
    >>> logits = jnp.linspace(-2.0, 2.0, 4 * 3 * 2).reshape(4, 3, 2)
    >>> ids = jnp.array([[0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    >>> o = dict(from_logits=True, batch=True)
    >>> parts = [region_stats(logits[i:i + 2], ids[i:i + 2], **o)
    ...          for i in (0, 2)]
    >>> total = jax.tree.map(jnp.add, *parts)
    >>> total.tp.shape
    (2,)
    >>> bool(jnp.allclose(loss_from_stats(total, **o),
    ...                   pel_loss(logits, ids, **o)))
    True
  """
  o = _options(options, "region_stats")
  predictions, targets, mask, stats_cfg, _, o = _stats_inputs(
    predictions, targets, o["where"], o
  )
  stats = _region_sums(stats_cfg, predictions, targets, mask, o)
  if stats_cfg.batch:
    stats = jax.tree.map(lambda s: s[0], stats)
  return stats


def loss_from_stats(stats: _core.RegionStats, **options: Any) -> jax.Array:
  r"""`pel_loss` from region sums (of `region_stats`, possibly accumulated).

  Per class :math:`c` (``squared``: :math:`\Sigma p^2, \Sigma g^2` in place
  of :math:`\Sigma p, \Sigma g`):

  .. math::
    D_c = (1 - \alpha - \beta) TP_c + \alpha \Sigma p_c + \beta \Sigma g_c,
    \quad R_c = \frac{N_c + \epsilon_{nr}}{D_c + \epsilon_{dr}},
    \quad L_c = 1 - s R_c

  then the per-class transform (``focal_gamma``: :math:`L_c^\gamma`;
  ``log_loss``: :math:`-\log R_c`), class weights, background and the
  reduction; or, with ``generalized``/``average="micro"``, one ratio per
  sample of the weighted sums :math:`\sum_c w_c N_c` and
  :math:`\sum_c w_c D_c`. All of this is plain `jax.numpy` on the small
  `[B, C]` sums, differentiated by ordinary autodiff; the cotangents reach
  the pixels through `region_stats`'s custom VJP.

  Args:
    stats: a `RegionStats`, as `region_stats` returns it (`[B, C]` leaves, or
      `[C]` with ``batch=True``), or a leaf-wise sum of several.
    **options: the keyword options of `pel_loss` (the same dict given to
      `region_stats`); ``from_logits``, ``where`` and others that act on
      pixels are ignored here.

  Returns:
    The loss, exactly as `pel_loss` returns it.

  Raises:
    TypeError: ``stats`` is not a `RegionStats`, or an option is unknown.
    ValueError: the stats' shape does not match ``batch``, or they lack a
      field an option needs (``squared``, ``ce_weight``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import loss_from_stats, pel_loss, region_stats
    >>> p = jnp.array([[0.9, 0.8, 0.1, 0.0]])[..., None]  # [B=1, 4, C=1]
    >>> g = jnp.array([[1.0, 1.0, 0.0, 0.0]])[..., None]
    >>> stats = region_stats(p, g, exponent=1.0)
    >>> # TP = 1.7, FP = 1.8 - 1.7, FN = 2 - 1.7: 1 - 1.7 / 2.1
    >>> print(f"{loss_from_stats(stats, exponent=1.0):.4f}")
    0.1905
    >>> print(f"{pel_loss(p, g, exponent=1.0):.4f}")
    0.1905
  """
  o = _options(options, "loss_from_stats")
  if not isinstance(stats, _core.RegionStats):
    raise TypeError(
      "`stats` must be the RegionStats that `region_stats` returns, got"
      f" {type(stats).__name__}."
    )
  want = 1 if o["batch"] else 2
  if np.ndim(stats.tp) != want:
    raise ValueError(
      f"`stats` leaves must be {'[C]' if o['batch'] else '[B, C]'} with"
      f" batch={bool(o['batch'])}, got tp of shape {np.shape(stats.tp)}."
    )
  if (stats.ce is not None) != bool(o["ce_weight"]):
    raise ValueError(
      f"`stats` were computed with{'' if stats.ce is not None else 'out'}"
      f" cross-entropy sums but `loss_from_stats` got"
      f" ce_weight={o['ce_weight']!r}; pass the same ce_weight to both."
    )
  if (stats.sum_p2 is not None) != bool(o["squared"]):
    raise ValueError(
      f"`stats` were computed with squared={stats.sum_p2 is not None}"
      f" but `loss_from_stats` got squared={o['squared']!r}."
    )
  class_weights, ce_class, ce_pos = _as_array_likes(
    o["class_weights"], o["ce_class_weights"], o["ce_pos_weight"]
  )
  o = {
    **o,
    "class_weights": class_weights,
    "ce_class_weights": ce_class,
    "ce_pos_weight": ce_pos,
  }
  # The sums stand in for predictions: they carry the class axis.
  fake = jax.ShapeDtypeStruct(
    (1, 1) + np.shape(stats.tp)[-1:], jnp.result_type(stats.tp)
  )
  _, ratio_cfg = _configs(fake, None, o)
  if o["batch"]:
    stats = jax.tree.map(lambda s: s[None], stats)
  return _loss_of_sums(stats, ratio_cfg, class_weights, o)

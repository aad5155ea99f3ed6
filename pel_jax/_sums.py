"""What the region sums are: their static configuration, fields and labels."""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class StatsConfig:
  """Hashable static configuration of the region sums (a custom_vjp nondiff arg)."""

  exponent: float
  activation: str | None  # None (probabilities), "sigmoid" or "softmax".
  batch: bool
  ignore_index: int | None
  axis_name: object = None
  squared: bool = False  # Sums of p^2 and g^2 in place of p and g.
  soft_labels: bool = False  # L1 forms of TP and N (float targets only).
  cross_entropy: bool = False  # The CE sum and its term count.
  # CE targets (1 - eps) g + eps / K, K = C (softmax) or 2 (sigmoid).
  label_smoothing: float = 0.0


def _is_label(targets: jax.Array, num_classes: int) -> jax.Array:
  """Bool `[B, *S, C]`: whether each pixel's id is class c (never built).

  One channel is binary: id 1 is the foreground, the channel's class, and
  every other id background (as in smp's binary mode).
  """
  if num_classes == 1:
    return (targets == 1)[..., None]
  if num_classes - 1 > jnp.iinfo(targets.dtype).max:
    # A class index built in a narrow dtype would wrap (uint8: 256 -> 0) and
    # alias classes; every id of the narrow dtype is exact in int32.
    targets = targets.astype(jnp.int32)
  ndim = targets.ndim + 1
  classes = lax.broadcasted_iota(
    targets.dtype, (1,) * (ndim - 1) + (num_classes,), ndim - 1
  )
  return targets[..., None] == classes


def _sum_axes(cfg: StatsConfig, ndim: int) -> tuple[int, ...]:
  return tuple(range(0 if cfg.batch else 1, ndim - 1))


class RegionStats(NamedTuple):
  r"""Per-class region sums, each `[G, C]`; None where no option needs it.

  With :math:`w` the pixel mask, summed over the spatial axes (and the batch
  with ``batch=True``):

  * ``tp``: :math:`\sum w p g`; with ``soft_labels``
    :math:`\sum w \min(p, g) = (\sum w p + \sum w g - \sum w |p - g|) / 2`.
  * ``sum_p``: :math:`\sum w p` (None with ``squared``).
  * ``sum_g``: :math:`\sum w g` (always: generalized weights and absent
    classes read it).
  * ``numer``: :math:`\sum w p^n g`; with ``soft_labels``
    :math:`\sum w g \min(p / g, 1)^n` (see `pel_jax.pel_loss`).
  * ``sum_p2``, ``sum_g2``: :math:`\sum w p^2`, :math:`\sum w g^2` (only
    with ``squared``).
  * ``ce``: `[G]`, the cross-entropy summed over pixels and classes (only
    with ``ce_weight``): :math:`-\sum w q \log p` (softmax) or
    :math:`-\sum w (q \log p + (1 - q) \log (1 - p))` (sigmoid), with
    :math:`q = (1 - \varepsilon) g + \varepsilon / K` the targets smoothed
    by ``ce_label_smoothing`` (K = C for softmax, 2 for sigmoid).
  * ``count``: `[G]`, the number of cross-entropy terms: kept pixels
    (softmax) or kept pixels times C (sigmoid). No gradient.

  With ``ce_class_weights`` or ``ce_pos_weight``, ``ce`` is the weighted sum
  of `pel_jax.cross_entropy` and ``count`` its normaliser (softmax:
  :math:`\sum w_y` over the kept pixels).

  Every field is a sum over pixels, so the statistics of two batches (or
  tiles, or micro-batches) added leaf by leaf are those of their union.
  """

  tp: jax.Array
  sum_p: jax.Array | None
  sum_g: jax.Array
  numer: jax.Array
  sum_p2: jax.Array | None = None
  sum_g2: jax.Array | None = None
  ce: jax.Array | None = None
  count: jax.Array | None = None


def _smoothed_targets(
  cfg: StatsConfig, g: jax.Array, classes: int | None = None
) -> jax.Array:
  """The cross-entropy's targets q = (1 - eps) g + eps / K.

  K = C classes for softmax (optax's `smooth_labels`, torch's
  `label_smoothing`), 2 for sigmoid (Keras' binary CE: each class is a
  two-way choice; MONAI 1.6.1 does not smooth its BCE). eps = 0 returns g
  itself (the unsmoothed arithmetic).
  `classes` is C when `g` holds a slice of the classes only.
  """
  eps = cfg.label_smoothing
  if not eps:
    return g
  if cfg.activation == "softmax":
    k = g.shape[-1] if classes is None else classes
  else:
    k = 2
  return g * (1 - eps) + eps / k


def term_count(cfg: StatsConfig, shape, dtype, w) -> jax.Array:
  """Cross-entropy terms per sample `[B]` (or `[]` over the batch).

  `shape` is the predictions' and `w` the 0/1 pixel weight `[B, *S, 1]`
  (None when every pixel is kept).
  """
  axes = _sum_axes(cfg, len(shape))
  per_pixel = 1 if cfg.activation == "softmax" else shape[-1]
  if w is None:
    return jnp.full(
      shape[: axes[0]], math.prod(shape[axes[0] : -1]) * per_pixel, dtype
    )
  # Counted in integers: exact past float32's 2^24.
  kept = jnp.sum(w.astype(jnp.int32), axes + (w.ndim - 1,))
  return (kept * per_pixel).astype(dtype)


class _Pixels(NamedTuple):
  """Per-pixel terms: `[B, *S, C]`, or `[B, *S, 1]` (`w`; `p_sel`, `p_n` for ids)."""

  p: jax.Array
  p_sel: jax.Array  # p, or the labelled class's p for integer ids.
  p_n: jax.Array  # p_sel ** n.
  g: jax.Array
  w: jax.Array | None  # 0/1 pixel weight; None when no pixel is excluded.
  hit: jax.Array | None  # bool g when p_sel is per pixel, else None.
  x: jax.Array | None = None  # The masked inputs in the compute dtype.
  log_p: jax.Array | None = None  # Softmax log-probabilities, else None.
  log_sel: jax.Array | None = None  # select(log_p) for softmax, else None.
  each: bool = False  # p_n is p^n of every entry (`_powers_each_entry`).

  def times_g(self, *factors: jax.Array) -> jax.Array:
    """`g * factors[0] * factors[1] ...`, a selection when `p_sel` is per pixel.

    The selection keeps a NaN at a pixel in its own class. The float form
    multiplies left to right on purpose: grouping the factors differently can
    recreate a subexpression of the forward (`p * p^2` is `p^3`), which XLA
    then writes out between forward and backward.
    """
    if self.hit is not None:
      return jnp.where(self.hit, functools.reduce(operator.mul, factors), 0)
    return functools.reduce(operator.mul, factors, self.g)

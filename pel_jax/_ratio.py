"""The loss from the region sums: plain jnp on `[G, C]`, ordinary autodiff."""

from __future__ import annotations

import dataclasses

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax._numerics import _power
from pel_jax._sums import RegionStats


@dataclasses.dataclass(frozen=True)
class RatioConfig:
  """Static configuration of the loss computed from `RegionStats`."""

  scale: float
  fp_weight: float
  fn_weight: float
  smooth_nr: float
  smooth_dr: float
  squared: bool = False
  include_background: bool = True
  generalized: str | None = None  # "square", "simple" or "uniform".
  focal_gamma: float | None = None
  log_loss: bool = False
  absent_classes: str = "count"  # or "exclude".


def _generalized_weights(kind: str, sum_g: jax.Array) -> jax.Array:
  """Sudre's class weights per row; an absent class gets its row's largest.

  MONAI's rule: a weight that is infinite (no target pixel, or 1/sum_g
  overflowing) is replaced by the largest finite weight of its row (sample,
  or the batch), 0 if none is finite. Weights carry no gradient.
  """
  sum_g = lax.stop_gradient(sum_g)
  if kind == "uniform":
    return jnp.ones_like(sum_g)
  present = sum_g > 0
  safe = jnp.where(present, sum_g, 1)
  raw = 1 / (safe * safe) if kind == "square" else 1 / safe
  finite = present & jnp.isfinite(raw)
  weights = jnp.where(finite, raw, 0)
  return jnp.where(finite, weights, jnp.max(weights, -1, keepdims=True))


@jax.custom_jvp
def _ratio(numer: jax.Array, denom: jax.Array) -> jax.Array:
  """(N + s) / (D + s) with a zero D counted as a perfect match (R = 1).

  D is 0 only for an empty class with smooth_dr = 0: R = 1 with no gradient
  instead of 0/0. (A NaN D stays NaN.)
  """
  valid = denom != 0
  return jnp.where(valid, numer / jnp.where(valid, denom, 1), 1)


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
  """dR = (dN - R dD) / D, never -N / D^2.

  Autodiff of N / D takes dR/dD = -N * D^-2: D^-2 overflows once D < 1e-19
  (float32), which an absent class reaches with zero smoothing (its D sums
  p or p^2 over pixels where p underflows), and N = 0 there gives 0 * inf =
  NaN, spread to every logit through the softmax. R / D is 0 for that class,
  as its exact derivative is. A subnormal D divides as the smallest normal
  number: 1 / D would be inf, whose product with the pixels' zero factors
  (g = 0 in dN/dp) is NaN again.
  """
  numer, denom = primals
  d_numer, d_denom = tangents
  ratio = _ratio(numer, denom)
  tiny = jnp.finfo(jnp.result_type(denom)).tiny
  safe = jnp.where(jnp.abs(denom) < tiny, tiny, denom)  # D = 0 included.
  d_ratio = (d_numer - ratio * d_denom) / safe
  return ratio, jnp.where(denom != 0, d_ratio, 0)


def _odd_power(x: jax.Array, exponent: float) -> jax.Array:
  """sign(x) |x|^exponent: x^exponent for x >= 0, odd below 0.

  The focal transform of a per-class loss, which is negative when the
  ratio exceeds 1 (smooth_nr > smooth_dr on an empty class, or N > D with
  n < 1 and a small fn_weight). The odd extension keeps the loss increasing
  in L (decreasing in R) on both sides of 0, and gamma = 1 the identity.
  The slope at 0 is 0 for gamma < 1, where it is infinite (see `_power`).
  """
  return jnp.sign(x) * _power(jnp.abs(x), exponent)


def stats_losses(cfg: RatioConfig, stats: RegionStats):
  """`(losses, present)` from region sums `[G, C]`.

  `losses` is `[G, C']` per class, or `[G, 1]` with `generalized` (C' = C - 1
  without background). `present` is a 0/1 `[G, C']` weight of the classes
  that count in the mean ("exclude"), or None when all do.
  """
  stats = stats._replace(ce=None, count=None)  # Added after the reduction.
  if not cfg.include_background:
    stats = jax.tree.map(lambda s: s[:, 1:], stats)
  tp, sum_p, sum_g, numer, sum_p2, sum_g2, _, _ = stats
  if cfg.squared:
    sum_p, sum_g_d = sum_p2, sum_g2
  else:
    sum_g_d = sum_g
  k = 1.0 - cfg.fp_weight - cfg.fn_weight
  denom = k * tp + cfg.fp_weight * sum_p + cfg.fn_weight * sum_g_d
  if cfg.generalized is not None:
    weights = _generalized_weights(cfg.generalized, sum_g)
    numer = jnp.sum(weights * numer, -1, keepdims=True)
    denom = jnp.sum(weights * denom, -1, keepdims=True)
  ratio = _ratio(numer + cfg.smooth_nr, denom + cfg.smooth_dr)
  if cfg.log_loss:
    # -log R, finite where R underflows (R = 0 needs smooth_nr = 0).
    losses = -jnp.log(jnp.maximum(ratio, jnp.finfo(ratio.dtype).tiny))
  else:
    losses = 1.0 - cfg.scale * ratio
  if cfg.focal_gamma is not None:
    losses = _odd_power(losses, cfg.focal_gamma)
  present = None
  if cfg.absent_classes == "exclude":
    present = lax.stop_gradient(sum_g > 0).astype(losses.dtype)
  return losses, present

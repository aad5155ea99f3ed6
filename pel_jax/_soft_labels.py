"""The soft-label forms of TP and N: min(p, g) and g min(p / g, 1)^n, safe at g = 0."""

from __future__ import annotations

import functools
import math

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax._numerics import _is_integer
from pel_jax._numerics import _power
from pel_jax._numerics import _root_power
from pel_jax._sums import StatsConfig
from pel_jax._sums import _Pixels


def _soft_ratio(p: jax.Array, g: jax.Array, backward: bool = False):
  """`(below, r)`: where p < g, and r = min(p / g, 1), safe at g = 0.

  The forward and the backward write both differently (`p < g`, `p / g`
  against `g > p`, `p * (1 / g)`): XLA merges equal expressions of the two
  passes and then writes the shared `below`, `r` and `r^n` out as
  full-size arrays between them, where recomputing them from `p` and `g`
  in each pass is cheaper than that traffic.
  """
  if backward:
    below = g > p
    return below, jnp.where(below, p * (1 / jnp.where(below, g, 1)), 1)
  below = p < g
  return below, jnp.where(below, p / jnp.where(below, g, 1), 1)


def _log_soft_ratio(px: _Pixels) -> jax.Array:
  """`log min(p / g, 1)`, -inf where p = 0; any value <= 0 where g = 0.

  From the softmax's log p where there is one (finite: no underflow to
  p = 0), else from log p (double `where`: p = 0 gives -inf, no NaN in a
  derivative). Clamped at 0 so that `exp(n log r)` stays <= 1 even where
  it is not selected (p >= g), where an overflow to inf would turn a zero
  cotangent into a NaN.
  """
  g = px.g
  log_g = jnp.log(jnp.where(g > 0, g, 1))
  if px.log_p is not None:
    return jnp.minimum(px.log_p - log_g, 0)
  positive = px.p > 0
  log_p = jnp.log(jnp.where(positive, px.p, 1))
  return jnp.where(positive, jnp.minimum(log_p - log_g, 0), -jnp.inf)


def _soft_power(cfg: StatsConfig, px: _Pixels, backward: bool = False):
  """`(below, power)`: where p < g, and `power(m)` = min(p / g, 1)^m.

  Integer n and n = 1/2: integer powers or the square root of
  `_soft_ratio`'s r, computed again in each pass. Other n: `r ** n` would
  be a scalar `powf` call per entry (several times an `exp`), so other
  half-integer n takes sqrt(r)^(2n) and any other n exp(n log r), from the
  softmax's log p where there is one (one log and one exp, both
  vectorised). These r^n are the same expression in both passes, written
  without `below`, so that XLA writes r^n out once, as it does p^n for
  plain targets, and recomputes `below` (written apart, see
  `_soft_ratio`). Computed in each pass instead, XLA writes the backward's
  ratio and power out as extra arrays, and sqrt(r)^5 in the forward's
  staged sum leaves that sum unvectorised.
  """
  n = cfg.exponent
  p, g = px.p, px.g
  if _is_integer(n) or n == 0.5:
    if not backward and cfg.activation == "sigmoid":
      # Keeps XLA from rewriting p / g as 1 / ((1 + e^-z) g) for a sigmoid
      # p, which makes e^-z a second full-size array next to p.
      p = lax.optimization_barrier(p)
    below, r = _soft_ratio(p, g, backward)
    if n != 0.5:
      return below, functools.partial(_power, r)
    # sqrt(r) with r clamped at the smallest normal (a value of at most
    # 1e-19 at r = 0, and a finite slope) rather than the double `where`,
    # which reads r next to the root and makes XLA write both out.
    tiny = jnp.finfo(r.dtype).tiny
    return (
      below,
      lambda m: _root_power(r, m) if m < 0 else jnp.sqrt(jnp.maximum(r, tiny)),
    )
  below = g > p if backward else p < g
  if _is_integer(2 * n):
    # Wherever g = 0 (p >= g), r is any value in [0, 1]: never selected.
    r = jnp.minimum(p / jnp.where(g > 0, g, 1), 1)
    return below, functools.partial(_root_power, r)
  log_r = _log_soft_ratio(px)
  floor = math.log(jnp.finfo(g.dtype).eps)
  return below, lambda m: jnp.exp(
    m * (log_r if m > 0 else jnp.maximum(log_r, floor))
  )

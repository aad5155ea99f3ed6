"""The activation of the predictions: softmax, sigmoid or probabilities, and p^n."""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax import _layout_accel
from pel_jax._layout_cpu import _past_fused_slices
from pel_jax._layout_cpu import _per_class_layout
from pel_jax._layout_cpu import _per_platform
from pel_jax._layout_cpu import _reduce_classes
from pel_jax._numerics import _is_integer
from pel_jax._numerics import _log_sigmoid
from pel_jax._numerics import _power
from pel_jax._numerics import compute_dtype
from pel_jax._sums import StatsConfig


def _powers_each_entry(cfg: StatsConfig, targets, classes: int) -> bool:
  """Whether `p^n g` takes p^n of every entry rather than of the label's p.

  Integer ids select one class per pixel, so the power is usually taken
  once per pixel (see `_activate`). Between `_FUSED_SLICES` and
  `_UNROLL_CLASSES` softmax classes that selection is a pass of its own
  over the logits, which an integer n avoids: p^n of each entry is n - 1
  multiplies, fused into the passes that read p anyway. (Not with the
  cross-entropy, which reads the selection itself.)
  """
  return (
    jnp.issubdtype(targets.dtype, jnp.integer)
    and cfg.activation == "softmax"
    and not cfg.cross_entropy
    and _is_integer(cfg.exponent)
    and cfg.exponent != 1
    and _past_fused_slices(classes, value_only_too=True)
  )


def _sum_exp(x: jax.Array, shifted: jax.Array, peak: jax.Array) -> jax.Array:
  """`sum(exp(shifted))` over the class axis (kept); `shifted = x - peak`."""
  classes = x.shape[-1]
  if not _past_fused_slices(classes):
    return _reduce_classes(jnp.add, jnp.exp(shifted))
  per_slice = lambda x, peak: functools.reduce(
    jnp.add, [jnp.exp(x[..., c : c + 1] - peak) for c in range(classes)]
  )
  plain = lambda x, peak: jnp.sum(jnp.exp(x - peak), axis=-1, keepdims=True)
  return _per_class_layout(classes, per_slice, plain, x, peak)


def _softmax_shift(x: jax.Array):
  """`(peak, lse)` with `log_softmax(x) = (x - peak) - lse`, `[B, *S, 1]`."""
  # The max is only a shift for stability: no gradient needs to flow into it.
  peak = lax.stop_gradient(_reduce_classes(jnp.maximum, x))
  return peak, jnp.log(_sum_exp(x, x - peak, peak))


def _select_labelled(hit, targets, x, per_slice: bool = False):
  """`sum(where(hit, x, 0))` over the class axis: x at each pixel's label.

  `per_slice` (for the logits, between `_FUSED_SLICES` and
  `_UNROLL_CLASSES` classes) compares each pixel's id with each class
  rather than slicing `hit`, whose slices make XLA write it out.
  """
  classes = x.shape[-1]
  if not (per_slice and _past_fused_slices(classes)):
    return _reduce_classes(jnp.add, jnp.where(hit, x, 0))
  by_slice = lambda hit, ids, x: functools.reduce(
    jnp.add,
    [jnp.where(ids == c, x[..., c : c + 1], 0) for c in range(classes)],
  )
  plain = lambda hit, ids, x: jnp.sum(
    jnp.where(hit, x, 0), axis=-1, keepdims=True
  )
  return _per_class_layout(classes, by_slice, plain, hit, targets[..., None], x)


def _activate(cfg: StatsConfig, x: jax.Array, select, each: bool = False):
  """`(p, p_sel, p_sel ** n, log_p, log_sel)`, compute dtype; `p_sel = select(p)`.

  `select` picks, per pixel, the entries the `p^n g` term can see: all of
  them for float targets, only the labelled class for integer ids (one-hot g
  zeroes the rest), so the power is taken once per pixel, not once per class
  (`per_slice=True`: see `_select_labelled`).
  For logits the power is taken in log space when n is not an integer.
  `log_p` is the softmax's log-probabilities (the cross-entropy reads them)
  and `log_sel` their selection (`log p_sel`), both None otherwise.
  `each` (`_powers_each_entry`, `select` the identity) makes `p_sel` p
  behind an optimization barrier (not on TPU: `_layout_accel.unshared`)
  and `p^n` its integer power: XLA
  otherwise rewrites `exp(a) * exp(a) * exp(a)` as `exp(3 a)`, a second
  exponential per entry that it writes out.
  """
  x = x.astype(compute_dtype(x.dtype))
  n = cfg.exponent
  if cfg.activation is None:
    p_sel = select(x)
    return x, p_sel, _power(p_sel, n), None, None
  if cfg.activation == "sigmoid":
    p = jax.nn.sigmoid(x)
    log_p = _log_sigmoid(x, p)
    p_sel = select(p)
    log_sel = None
  else:
    peak, lse = _softmax_shift(x)
    log_p = (x - peak) - lse
    p = jnp.exp(log_p)
    if each:
      p_sel = _layout_accel.unshared(p)
      return p, p_sel, lax.integer_pow(p_sel, int(n)), log_p, None
    # Equal to select(p), but computed from the logits: read from p, the
    # power would make XLA write out p and p^n.
    if _past_fused_slices(x.shape[-1]):
      # The selected logit, shifted: selecting from log_p slices it once
      # per class, and past `_FUSED_SLICES` XLA writes log_p out. (Equal at
      # a labelled pixel; wherever no class is hit the p^n g term is 0,
      # and the cross-entropy zeroes it.)
      log_sel = (select(x, per_slice=True) - peak) - lse
      if cfg.cross_entropy:
        # Elsewhere the cross-entropy reads select(log_p), shared with this.
        log_sel = _per_platform(
          lambda log_sel, log_p: log_sel,
          lambda log_sel, log_p: select(log_p),
          log_sel,
          log_p,
        )
    else:
      log_sel = select(log_p)
    p_sel = jnp.exp(log_sel)
  if _is_integer(n):
    p_n = lax.integer_pow(p_sel, int(n))
  else:
    p_n = jnp.exp(n * (select(log_p) if log_sel is None else log_sel))
  if cfg.activation == "sigmoid":
    return p, p_sel, p_n, None, None
  return p, p_sel, p_n, log_p, log_sel

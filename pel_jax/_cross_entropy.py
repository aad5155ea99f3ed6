"""The cross-entropy sums fused into the region sums (softmax and sigmoid)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pel_jax._layout_cpu import _past_fused_slices
from pel_jax._layout_cpu import _per_platform
from pel_jax._layout_cpu import _reduce_classes
from pel_jax._layout_cpu import _sum_together
from pel_jax._numerics import _log1p_exp_neg_abs
from pel_jax._sums import StatsConfig
from pel_jax._sums import _Pixels
from pel_jax._sums import _smoothed_targets
from pel_jax._sums import _sum_axes


def _cross_entropy_terms(cfg: StatsConfig, px: _Pixels) -> jax.Array:
  """Per-entry sigmoid cross-entropy from the logits, `[B, *S, C]`.

  The binary cross-entropy of each class with the (smoothed) targets q,
  -q log p - (1 - q) log(1 - p) = softplus(z) - q z
  = (max(z, 0) - q z) + log(1 + e^-|z|): one logarithm, where the two log
  terms take two. The linear part is formed first, so that a confident
  correct logit keeps its small loss (softplus(20) - 20 rounds to 0).
  Finite for any finite logit. Elementwise, so it joins the per-class sums.
  """
  q = _smoothed_targets(cfg, px.g)
  x = px.x
  linear = jnp.where(x > 0, (1 - q) * x, -q * x)
  return linear + _log1p_exp_neg_abs(x)


def _cross_entropy_sum(cfg: StatsConfig, px: _Pixels, targets) -> jax.Array:
  """Softmax cross-entropy summed over kept pixels and classes, `[G]`.

  Per pixel first, -sum_c q_c log p_c (`[B, *S, 1]`), from the
  log-probabilities of the activation (its class max and log-sum-exp are
  not computed again), then over the pixels. Inside the per-class sums,
  each of a pixel's C entries would recompute the pixel's class max.

  For integer ids, (1 - eps) (-log p_label) + (eps / C) (-sum_c log p_c):
  the labelled class's log p is `_activate`'s selection, which the p^n term
  reads too, so XLA computes it once per pixel and the cross-entropy adds no
  pass over the logits of its own. The other sums over classes here are
  plain reduces: unrolled (`_reduce_classes`) straight into the pixel sum,
  XLA CPU splits them into one pass per class.
  """
  log_p = px.log_p
  if px.hit is not None and _past_fused_slices(log_p.shape[-1]):
    # On the CPU, `_activate`'s selection from the logits (see there), 0
    # where the id is no class: selecting from log_p makes XLA write it out.
    labelled = (targets >= 0) & (targets < log_p.shape[-1])
    ce = _per_platform(
      lambda hit, labelled, log_sel, log_p: -jnp.where(labelled, log_sel, 0),
      lambda hit, labelled, log_sel, log_p: (
        -jnp.sum(jnp.where(hit, log_p, 0), axis=-1, keepdims=True)
      ),
      px.hit,
      labelled[..., None],
      px.log_sel,
      log_p,
    )
  elif px.hit is not None:
    ce = -_reduce_classes(jnp.add, jnp.where(px.hit, log_p, 0))
  if px.hit is not None:
    eps = cfg.label_smoothing
    if eps:
      spread = jnp.sum(log_p, -1, keepdims=True)
      ce = ce * (1 - eps) - spread * (eps / log_p.shape[-1])
  else:
    q = _smoothed_targets(cfg, px.g)
    ce = -jnp.sum(q * log_p, -1, keepdims=True)
  if px.w is not None:
    ce = ce * px.w
  # Staged like the other sums (float32 accuracy over millions of pixels).
  (total,) = _sum_together(_sum_axes(cfg, px.p.ndim), ce)
  return total[..., 0]

"""Private fused core of the PEL family: per-class region sums with a custom VJP.

Everything here is positional and already validated by `pel_jax._loss`.
Shapes: predictions `[B, *S, C]`, targets `[B, *S, C]` (float) or `[B, *S]`
(integer ids), mask `[B, *S]` bool or None. The core returns the region
statistics, a `RegionStats` of per-class sums `[G, C]` (G = B, or 1 when the
sums also run over the batch): the only full-size pass. Its custom VJP maps
the cotangent of each sum back to a per-pixel gradient in one more pass.
The loss itself (`stats_losses`) is plain `jnp` on those tiny sums,
differentiated by ordinary autodiff. The core works on the arrays' own
shapes: reshaping them first costs a layout copy of the gradient on CPU.
"""

from __future__ import annotations

import functools
import operator

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax import _gpu
from pel_jax._activation import _activate
from pel_jax._activation import _powers_each_entry
from pel_jax._activation import _select_labelled
from pel_jax._cross_entropy import _cross_entropy_sum
from pel_jax._cross_entropy import _cross_entropy_terms
from pel_jax._layout_cpu import _LONG_ROWS
from pel_jax._layout_cpu import _LONGER_ROWS
from pel_jax._layout_cpu import _ROWS
from pel_jax._layout_cpu import _past_fused_slices
from pel_jax._layout_cpu import _per_platform
from pel_jax._layout_cpu import _reduce_classes
from pel_jax._layout_cpu import _sum_together
from pel_jax._layout_cpu import _tracing_value_only
from pel_jax._numerics import _is_integer
from pel_jax._numerics import _power
from pel_jax._numerics import compute_dtype
from pel_jax._soft_labels import _soft_power
from pel_jax._sums import RegionStats
from pel_jax._sums import StatsConfig
from pel_jax._sums import _is_label
from pel_jax._sums import _Pixels
from pel_jax._sums import _smoothed_targets
from pel_jax._sums import _sum_axes
from pel_jax._sums import term_count


def _pixel_terms(cfg: StatsConfig, predictions, targets, mask) -> _Pixels:
  """The `_Pixels` of one call.

  Integer ids are compared against the class index instead of one-hot
  encoded; XLA fuses the comparison into the consumers, so no `[B, *S, C]`
  array is materialised. Ids outside `[0, C)` match no class; with one
  channel (C = 1) id 1 is its class (see `_is_label`). `p_sel` is `p`
  for float targets and the labelled class's `p`, `[B, *S, 1]`, for integer
  ids (see `_activate`). Excluded pixels (`where`, `ignore_index`) have their
  inputs replaced by 0 before any arithmetic (the double-`where` rule), so a
  NaN or inf there reaches neither a sum nor a gradient.
  """
  integer = jnp.issubdtype(targets.dtype, jnp.integer)
  if integer and cfg.ignore_index is not None:
    keep = targets != cfg.ignore_index
    mask = keep if mask is None else mask & keep
  keep = None if mask is None else mask[..., None]
  if keep is not None:
    predictions = jnp.where(keep, predictions, 0)
  if integer:
    is_label = _is_label(targets, predictions.shape[-1])
  # n = 1: p^n is p, no selection needed; the softmax cross-entropy of ids
  # reads the labelled class's log p from the same selection.
  softmax_ce = cfg.cross_entropy and cfg.activation == "softmax"
  each = _powers_each_entry(cfg, targets, predictions.shape[-1])
  select_ids = (cfg.exponent != 1 or softmax_ce) and not each
  hit = is_label if integer and select_ids else None
  if hit is not None:
    # One hit per pixel at most, so the sum of zeros and one entry is exact.
    select = functools.partial(_select_labelled, hit, targets)
  else:
    select = lambda x, per_slice=False: x
  p, p_sel, p_n, log_p, log_sel = _activate(cfg, predictions, select, each)
  if integer:
    g = is_label.astype(p.dtype)
  else:
    g = targets.astype(p.dtype)
    if keep is not None:
      g = jnp.where(keep, g, 0)
  w = None if keep is None else keep.astype(p.dtype)
  x = predictions.astype(p.dtype)
  return _Pixels(p, p_sel, p_n, g, w, hit, x, log_p, log_sel, each)


def _stage_rows(cfg: StatsConfig, predictions, targets) -> int:
  """Rows per stage of the forward sums (see `_LONG_ROWS`)."""
  if cfg.activation != "sigmoid" or not cfg.cross_entropy:
    return _ROWS
  ids = jnp.issubdtype(targets.dtype, jnp.integer)
  return _LONGER_ROWS if ids else _LONG_ROWS


def _pixel_summands(cfg: StatsConfig, px: _Pixels) -> RegionStats:
  """The per-pixel terms whose sums are the `RegionStats` fields."""
  p, g = px.p, px.g
  if cfg.soft_labels:
    # TP = sum min(p, g); N = sum g r^n with r = min(p/g, 1): equal to
    # p^n g for hard labels, to g at p = g, and <= min(p, g) for n >= 1.
    below, power = _soft_power(cfg, px)
    tp = jnp.where(below, p, g)
    numer = jnp.where(below, g * power(cfg.exponent), g)
  else:
    tp, numer = p * g, px.times_g(px.p_n)
  ce = None
  if cfg.cross_entropy and cfg.activation == "sigmoid":
    # Elementwise, so it joins the per-class sums; the softmax one is summed
    # per pixel first (`_cross_entropy_sum`).
    ce = _cross_entropy_terms(cfg, px)
  if cfg.squared:
    # The barrier keeps XLA from rewriting a softmax's p * p as exp(2 log p),
    # a second exponential (and class max) per entry inside the reduction.
    p_again = lax.optimization_barrier(p)
    terms = RegionStats(tp, None, g, numer, p_again * p_again, g * g, ce)
  else:
    terms = RegionStats(tp, p, g, numer, ce=ce)
  if px.w is not None:
    terms = jax.tree.map(lambda x: x * px.w, terms)
  return terms


def _softmax_u(
  cfg: StatsConfig, ct: RegionStats, p, g, hit, powers, classes=None
):
  """u = p dL/dp per entry (softmax, not soft labels); dL/dz = u - p sum(u).

  `p`, `g`, `hit` and the class axis of `ct` hold all classes or, for
  `_softmax_total`, one class's slice (`classes` is then C). `powers` are
  p^n as factors, multiplied left to right (see `_power_factors`).
  """
  linear = ct.tp * g + (2 * ct.sum_p2 * p if cfg.squared else ct.sum_p)
  # pull = p * dN/dp, written with p^n (log space) so that n < 1 and p = 0
  # are safe: d(p^n)/dz = n p^n (e_c - p).
  n_numer = cfg.exponent * ct.numer
  if hit is not None:
    pull = jnp.where(hit, functools.reduce(operator.mul, powers, n_numer), 0)
  else:
    pull = functools.reduce(operator.mul, powers, g * n_numer)
  u = pull + linear * p
  if cfg.cross_entropy:
    u = u - ct.ce * _smoothed_targets(cfg, g, classes)  # p d(-q log p)/dp.
  return u


def _softmax_total(cfg: StatsConfig, ct: RegionStats, px: _Pixels, targets, u):
  """`sum(u)` over the class axis (kept), u from `_softmax_u`.

  Between `_FUSED_SLICES` and `_UNROLL_CLASSES` classes with integer ids,
  the unrolled sum would slice u once per class, and XLA then writes u out
  as a full-size array. There each class's u_c is recomputed from its slice
  of p instead (with g_c = [id == c]): XLA writes p out in any case, shared
  by the forward's sums and the gradient, so u is only read elementwise,
  fused into the gradient. The sum is divided by sum_c p_c (1 up to
  rounding): ending in a cheap op, the whole total would be fused into the
  gradient's loop and recomputed for each class; a division ends it.
  """
  classes = u.shape[-1]
  integer = jnp.issubdtype(targets.dtype, jnp.integer)
  if not (integer and _past_fused_slices(classes)):
    return _reduce_classes(jnp.add, u)

  def by_slice(u, ids, p, p_sel, p_n, ct):
    del u
    total, norm = [], []
    for c in range(classes):
      p_c = p[..., c : c + 1]
      if px.hit is not None:
        powers = (p_n,)
      elif px.each:  # p_sel: p behind `_activate`'s barrier.
        powers = _power_factors(p_sel[..., c : c + 1], cfg.exponent)
      else:
        powers = (p_c,)
      hit_c = ids == c
      ct_c = jax.tree.map(
        lambda a, c=c: a[..., c : c + 1], ct._replace(ce=None)
      )
      total.append(
        _softmax_u(
          cfg,
          ct_c._replace(ce=ct.ce),
          p_c,
          hit_c.astype(p_c.dtype),
          None if px.hit is None else hit_c,
          powers,
          classes,
        )
      )
      norm.append(p_c)
    return functools.reduce(jnp.add, total) / functools.reduce(jnp.add, norm)

  plain = lambda u, *_: jnp.sum(u, axis=-1, keepdims=True)
  return _per_platform(
    by_slice, plain, u, targets[..., None], px.p, px.p_sel, px.p_n, ct
  )


def _power_factors(p: jax.Array, n: float) -> tuple[jax.Array, ...]:
  """p^n as the factors `(p, p^(n-1))`, for the backward of an integer n.

  Multiplied into the backward's other factors one at a time, they form no
  p^n subexpression that XLA could share with the forward's sums and then
  write out between the passes (see `_Pixels.times_g`).
  """
  return (p, _power(p, n - 1))


def stats_forward(cfg: StatsConfig, predictions, targets, mask) -> RegionStats:
  """The region sums of one call, `[G, C]` (G = 1 with `cfg.batch`)."""
  if _gpu.handles(cfg, predictions.shape[-1]):
    return _per_platform_sums(cfg, predictions, targets, mask)[0]
  return _global_sums(cfg, _local_sums(cfg, predictions, targets, mask))


def _per_platform_sums(cfg: StatsConfig, predictions, targets, mask):
  """`(stats, lse)`: `_gpu.forward` lowered for CUDA, else `_local_sums`.

  Elsewhere `lse` is a zero placeholder of its shape, which only the CUDA
  backward reads (lowered for one platform, XLA drops it); None where the
  CUDA layout keeps none (`_gpu.keeps_lse`).
  """

  def generic(predictions, targets):
    stats = _local_sums(cfg, predictions, targets, mask)
    if not _gpu.keeps_lse(predictions.shape[-1]):
      return stats, None
    lse_shape = predictions.shape[:-1] + (1,)
    return stats, jnp.zeros(lse_shape, compute_dtype(predictions.dtype))

  stats, lse = lax.platform_dependent(
    predictions,
    targets,
    **_gpu.per_platform(lambda x, t: _gpu.forward(cfg, x, t, mask)),
    default=generic,
  )
  return _global_sums(cfg, stats), lse


def _local_sums(cfg: StatsConfig, predictions, targets, mask) -> RegionStats:
  """The sums over this call's pixels: `[B, C]`, or `[C]` with `cfg.batch`."""
  px = _pixel_terms(cfg, predictions, targets, mask)
  terms = _pixel_summands(cfg, px)
  leaves, tree = jax.tree.flatten(terms)
  sums = _sum_together(
    _sum_axes(cfg, terms.tp.ndim),
    *leaves,
    stage=_stage_rows(cfg, predictions, targets),
  )
  stats = jax.tree.unflatten(tree, sums)
  if cfg.cross_entropy:
    if stats.ce is not None:
      ce = jnp.sum(stats.ce, -1)
    else:
      ce = _cross_entropy_sum(cfg, px, targets)
    stats = stats._replace(
      ce=ce, count=term_count(cfg, px.p.shape, px.p.dtype, px.w)
    )
  return stats


def _global_sums(cfg: StatsConfig, stats: RegionStats) -> RegionStats:
  """`[G, C]` sums: the batch axis kept, summed across devices if asked."""
  if cfg.batch:
    stats = jax.tree.map(lambda s: s[None], stats)
  if cfg.batch and cfg.axis_name is not None:
    # Global batch sums; per-sample sums stay local (the reduction is global).
    stats = lax.psum(stats, cfg.axis_name)
  return stats


def stats_backward(
  cfg: StatsConfig, predictions, targets, mask, stats, cotangent
):
  """`(d_predictions, d_targets)` from the cotangent of each region sum.

  Per pixel, with `ct` the cotangents (`[G, C]`, broadcast over pixels):
    dL/dp = w (ct.tp g + ct.sum_p + 2 ct.sum_p2 p + ct.numer n p^(n-1) g)
    dL/dg = w (ct.tp p + ct.sum_g + 2 ct.sum_g2 g + ct.numer p^n)
  (soft labels: the derivatives of min(p, g) and g min(p/g, 1)^n instead),
  chained through the activation, plus, per logit, ct.ce (p sum_c q - q)
  for the softmax cross-entropy sum and ct.ce (p - q) for the sigmoid one,
  q = (1 - eps) g + eps / K the smoothed targets (q = g without smoothing).
  The sums need nothing beyond the inputs, so `stats` is unused here; it is
  part of the signature for kernels that may want it.
  """
  del stats
  n = cfg.exponent
  if (
    cfg.activation == "sigmoid"
    and _is_integer(n)
    and jnp.dtype(predictions.dtype).itemsize >= 4
    and not cfg.soft_labels
    and not jnp.issubdtype(targets.dtype, jnp.integer)
  ):
    # Equal expressions in the two passes would make XLA compute the
    # sigmoid once and write it out as a full-size array between them;
    # recomputing it from the logits here is cheaper than that traffic.
    # (Not for a non-integer n, half precision, soft labels or integer ids:
    # there recomputing the power, the conversions, the ratio or the label
    # selection costs more than sharing them.)
    predictions = lax.optimization_barrier(predictions)
  px = _pixel_terms(cfg, predictions, targets, mask)
  p, p_sel, p_n, g, w = px.p, px.p_sel, px.p_n, px.g, px.w
  # [G, C] -> [G, 1, ..., 1, C] to broadcast over pixels.
  pixels = (cotangent.tp.shape[0],) + (1,) * (p.ndim - 2) + (p.shape[-1],)
  # (`count` has no gradient: it depends on the mask only.)
  ct = jax.tree.map(
    lambda c: c.reshape(pixels), cotangent._replace(ce=None, count=None)
  )
  if cfg.cross_entropy:
    ct = ct._replace(ce=cotangent.ce.reshape(pixels[:-1] + (1,)))
    q = _smoothed_targets(cfg, g)
  if cfg.soft_labels:
    below, power = _soft_power(cfg, px, backward=True)
    linear = jnp.where(below, ct.tp, 0)
  else:
    linear = ct.tp * g  # d/dp of the terms linear in p (and p^2).
  linear = linear + (2 * ct.sum_p2 * p if cfg.squared else ct.sum_p)
  if cfg.activation is None:
    if cfg.soft_labels:
      pull = jnp.where(below, n * ct.numer * power(n - 1), 0)
    else:
      pull = px.times_g(n * ct.numer, _power(p_sel, n - 1))
    grad = pull + linear
  elif cfg.activation == "softmax" and not cfg.soft_labels:
    powers = _power_factors(p_sel, n) if px.each else (p_n,)
    u = _softmax_u(cfg, ct, p, g, px.hit, powers)
    grad = u - p * _softmax_total(cfg, ct, px, targets, u)
  else:
    # pull = p * dN/dp, written with p^n (log space) so that n < 1 and p = 0
    # are safe: d(p^n)/dz = n p^n (1 - p) for sigmoid, n p^n (e_c - p) for
    # softmax.
    if cfg.soft_labels:
      pull = jnp.where(below, n * ct.numer * g * power(n), 0)
    elif cfg.activation == "sigmoid" and _is_integer(n):
      # (.. * p) * p^(n-1) rather than the forward's p^n: with no p^n
      # subexpression to share, XLA stops writing p^n out between forward
      # and backward.
      pull = px.times_g(n * ct.numer, *_power_factors(p_sel, n))
    else:
      pull = px.times_g(n * ct.numer, p_n)
    if cfg.activation == "sigmoid":
      grad = (pull + linear * p) * (1 - p)
      if cfg.cross_entropy:
        grad = grad + ct.ce * (p - q)  # d BCE / dz = p - q.
    else:
      u = pull + linear * p
      if cfg.cross_entropy:
        u = u - ct.ce * q  # p * d(-q log p)/dp.
      grad = u - p * _reduce_classes(jnp.add, u)
  if w is not None:
    grad = grad * w
  d_predictions = grad.astype(predictions.dtype)

  d_targets = None
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    if cfg.soft_labels:
      d_g = jnp.where(below, ct.numer * (1 - n) * power(n), ct.tp + ct.numer)
    else:
      d_g = ct.tp * p + ct.numer * p_n
    d_g = d_g + ct.sum_g
    if cfg.squared:
      d_g = d_g + 2 * ct.sum_g2 * g
    if cfg.cross_entropy:
      # d CE / dq: -log p (softmax), -(log p - log(1 - p)) = -z (sigmoid);
      # dq/dg = 1 - eps.
      ct_q = ct.ce * (1 - cfg.label_smoothing) if cfg.label_smoothing else ct.ce
      if cfg.activation == "softmax":
        d_g = d_g - ct_q * px.log_p
      else:
        d_g = d_g - ct_q * px.x
    if w is not None:
      d_g = d_g * w
    d_targets = d_g.astype(targets.dtype)
  return d_predictions, d_targets


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def region_sums(cfg: StatsConfig, predictions, targets, mask) -> RegionStats:
  """`stats_forward` with the fused backward `stats_backward`."""
  with _tracing_value_only():
    return stats_forward(cfg, predictions, targets, mask)


def _region_sums_fwd(cfg: StatsConfig, predictions, targets, mask):
  # Residuals: the inputs and the [G, C] sums (and on CUDA the per-pixel
  # log-sum-exp); the backward recomputes the activation rather than
  # keeping any full-size intermediate alive.
  if _gpu.handles(cfg, predictions.shape[-1]):
    stats, lse = _per_platform_sums(cfg, predictions, targets, mask)
  else:
    stats, lse = stats_forward(cfg, predictions, targets, mask), None
  return stats, (predictions, targets, mask, stats, lse)


def _region_sums_bwd(cfg: StatsConfig, residuals, cotangent):
  predictions, targets, mask, stats, lse = residuals
  if not _gpu.handles(cfg, predictions.shape[-1]):
    d_predictions, d_targets = stats_backward(
      cfg, predictions, targets, mask, stats, cotangent
    )
  else:
    d_predictions, d_targets = lax.platform_dependent(
      predictions,
      targets,
      **_gpu.per_platform(
        lambda x, t: _gpu.backward(cfg, x, t, mask, lse, cotangent)
      ),
      default=lambda x, t: stats_backward(cfg, x, t, mask, stats, cotangent),
    )
  return d_predictions, d_targets, None


region_sums.defvjp(_region_sums_fwd, _region_sums_bwd)

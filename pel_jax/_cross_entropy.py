"""Cross-entropy: the sums fused into the region sums, and the weighted one.

The unweighted CE of `pel_loss(ce_weight=...)` is computed inside the fused
region sums; `cross_entropy` (torch's class weights and `pos_weight`) is
plain autodiff, and `weighted_sums` adds its sums to the region sums when
`pel_loss` gets `ce_class_weights` or `ce_pos_weight`.
"""

from __future__ import annotations

from collections.abc import Hashable
import math
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from pel_jax import _checks
from pel_jax import _dense
from pel_jax import _global_sum
from pel_jax import _numerics
from pel_jax._layout_cpu import _past_fused_slices
from pel_jax._layout_cpu import _per_platform
from pel_jax._layout_cpu import _reduce_classes
from pel_jax._layout_cpu import _sum_together
from pel_jax._numerics import _log1p_exp_neg_abs
from pel_jax._sums import StatsConfig
from pel_jax._sums import _is_label
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


def cross_entropy(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  activation: str | None = None,
  class_weights: ArrayLike | None = None,
  pos_weight: ArrayLike | None = None,
  label_smoothing: float = 0.0,
  where: ArrayLike | None = None,
  ignore_index: int | None = None,
  axis_name: Hashable | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Cross-entropy of logits with torch's class weights and ``pos_weight``.

  Softmax (over the class axis), per pixel, with :math:`w_c` the class
  weights (1 without them) and :math:`q = (1 - \varepsilon) g +
  \varepsilon / C` the targets smoothed by ``label_smoothing``:

  .. math::
    \ell = -\sum_c w_c q_c \log p_c, \quad
    L = \frac{\sum \ell}{\sum v}, \quad v = \sum_c w_c g_c

  over the kept pixels (:math:`v = 1` without class weights): for integer
  ids :math:`v = w_y`, torch's ``CrossEntropyLoss(weight=w,
  label_smoothing=eps, ignore_index=i)`` with its "mean" (and MONAI
  ``DiceCELoss``'s CE with its ``weight``). One-hot float targets give the
  same value as their ids; torch's own probability-target path divides by
  the pixel count instead (``reduction="sum"`` over the pixel count here).

  Sigmoid (each class a two-way choice), per pixel and class, with
  :math:`q = (1 - \varepsilon) g + \varepsilon / 2`, :math:`a_c` the
  ``pos_weight`` and :math:`w_c` the class weights:

  .. math::
    \ell = w_c \left(-a_c q \log \sigma(z) - (1 - q) \log(1 - \sigma(z))
    \right), \quad L = \frac{\sum \ell}{N C}

  over the :math:`N` kept pixels: torch's ``BCEWithLogitsLoss(weight=w,
  pos_weight=a)`` (weights rescale without normalising, as there).

  Both are sums over pixels, so under ``axis_name`` they are global (with
  `global_sum`'s gradient convention), and `pel_loss`'s ``ce_class_weights``
  and ``ce_pos_weight`` add them to the region sums exactly under
  accumulation.

  Peer mapping: smp ``SoftCrossEntropyLoss(smooth_factor=f,
  ignore_index=i)`` is ``label_smoothing=f, ignore_index=i,
  reduction="sum"`` divided by *all* pixels (smp's mean counts the ignored
  ones); smp ``SoftBCEWithLogitsLoss(smooth_factor=f, ignore_index=i)`` is
  ``label_smoothing=2 f`` (smp smooths to :math:`f` and :math:`1 - f`),
  ``where=ids != i``, ``reduction="sum"`` divided by all entries.

  Args:
    predictions: float logits `[B, *spatial, C]`, channels last.
    targets: integer class ids `[B, *spatial]` (with one channel, id 1 is
      the class and every other id background), or float/bool labels of
      the logits' shape (one-hot, multi-hot or soft).
    activation: "softmax" or "sigmoid"; None picks sigmoid for C = 1, else
      softmax.
    class_weights: `[C]` weights >= 0 (torch's ``weight``).
    pos_weight: sigmoid only: the weight of the positive term, a scalar or
      `[C]` (torch's ``pos_weight``).
    label_smoothing: :math:`\varepsilon \in [0, 1)`.
    where: bool `[B, *spatial]`; False pixels leave every sum (NaN or inf
      logits there reach neither the loss nor the gradient).
    ignore_index: with integer ids, pixels with this id leave every sum.
    axis_name: a named axis (`pmap`, `shard_map`) the batch is split over.
    reduction: "mean" (as above), "sum" (:math:`\sum \ell`) or "none"
      (:math:`\ell` per pixel `[B, *spatial]` for softmax, per pixel and
      class `[B, *spatial, C]` for sigmoid; 0 where a pixel is left out).

  Returns:
    The loss, float32 (float64 for float64 predictions). "mean" with no weight
    kept is 0 with a zero gradient.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import cross_entropy
    >>> logits = jnp.array([[[0.0, 0.0], [0.0, 0.0]]])  # [B=1, 2, C=2]
    >>> ids = jnp.array([[0, 1]])
    >>> # Both pixels cost log 2, whatever the class weights.
    >>> print(f"{cross_entropy(logits, ids, class_weights=[1.0, 3.0]):.4f}")
    0.6931
  """
  predictions, targets, where, class_weights, pos_weight = (
    np.asarray(x) if isinstance(x, (list, tuple)) else x
    for x in (predictions, targets, where, class_weights, pos_weight)
  )
  activation, _, _ = _dense.check_inputs(
    predictions,
    targets,
    from_logits=True,
    activation=activation,
    include_background=True,
    reduction=reduction,
    where=where,
    ignore_index=ignore_index,
  )
  label_smoothing = _checks.check_number("label_smoothing", label_smoothing)
  check_ce_weights(predictions, activation, class_weights, pos_weight)
  _check_smoothing("label_smoothing", label_smoothing)
  terms, norm = _weighted_terms(
    jnp.asarray(predictions),
    jnp.asarray(targets),
    None if where is None else jnp.asarray(where),
    activation,
    ignore_index,
    label_smoothing,
    class_weights,
    pos_weight,
  )
  if reduction == "none":
    return terms[..., 0] if activation == "softmax" else terms
  everything = tuple(range(terms.ndim))
  return _global_sum.sum_or_mean(
    jnp.sum(terms), norm.sum(terms, everything), reduction, axis_name
  )


def _check_smoothing(name: str, eps: float) -> None:
  if not 0 <= eps < 1:
    raise ValueError(
      f"`{name}` must lie in [0, 1) (the targets are (1 - eps) g + eps / K),"
      f" got {eps}."
    )


def check_ce_weights(predictions, activation, class_weights, pos_weight):
  """`class_weights` `[C]` >= 0; `pos_weight` scalar or `[C]`, sigmoid only."""
  dtype = _numerics.compute_dtype(jnp.result_type(predictions))
  _checks.check_class_weights(predictions, class_weights, dtype)
  if pos_weight is None:
    return
  num_classes = np.shape(predictions)[-1]
  if activation != "sigmoid":
    raise ValueError(
      "`pos_weight` weighs the positive term of the sigmoid (binary)"
      f" cross-entropy, but the activation is {activation!r}: pass"
      " activation='sigmoid', or class weights for a softmax."
    )
  if np.shape(pos_weight) not in ((), (num_classes,)):
    raise ValueError(
      f"`pos_weight` must be a scalar or have shape ({num_classes},), one"
      f" weight per class of `predictions` {np.shape(predictions)}, got"
      f" shape {np.shape(pos_weight)}."
    )
  if not isinstance(pos_weight, jax.core.Tracer):
    values = np.asarray(pos_weight, np.float64)
    if not np.all(np.isfinite(values) & (values >= 0)):
      raise ValueError(
        f"`pos_weight` must be finite and >= 0, got {values.tolist()}."
      )


def _weighted_terms(
  x, targets, where, activation, ignore_index, eps, class_weights, pos_weight
):
  """Per-pixel terms and normalising weights of `cross_entropy`.

  `([B, *S, 1], [B, *S, 1])` for softmax, `([B, *S, C], [B, *S, C])` for
  sigmoid, in the compute dtype, 0 at the pixels left out. Logits there are
  replaced by 0 before any arithmetic, so that a NaN never reaches the
  gradient (a `where` after the arithmetic would multiply it by 0).
  """
  x = x.astype(_numerics.compute_dtype(x.dtype))
  num_classes = x.shape[-1]
  kept = None if where is None else where[..., None]
  ids = jnp.issubdtype(targets.dtype, jnp.integer)
  if ids:
    g = _is_label(targets, num_classes)
    if ignore_index is not None:
      labelled = (targets != ignore_index)[..., None]
      kept = labelled if kept is None else kept & labelled
  else:
    g = targets.astype(x.dtype)
  if kept is not None:
    x = jnp.where(kept, x, 0)
  w = None if class_weights is None else jnp.asarray(class_weights, x.dtype)
  if activation == "softmax":
    # -log p_c = lse - x_c: sums of x against the weights, never log p.
    lse = jax.nn.logsumexp(x, axis=-1, keepdims=True)
    wc = jnp.ones((num_classes,), x.dtype) if w is None else w
    if ids:  # Selections of the labelled class (0 for ids of no class).
      w_y = jnp.sum(jnp.where(g, wc, 0), -1, keepdims=True)
      x_y = jnp.sum(jnp.where(g, x, 0), -1, keepdims=True)
      terms = w_y * (lse - x_y)
      if eps:
        spread = lse * jnp.sum(wc) - jnp.sum(x * wc, -1, keepdims=True)
        terms = terms * (1 - eps) + spread * (eps / num_classes)
    else:
      q = g * (1 - eps) + eps / num_classes if eps else g
      r = q * wc
      terms = lse * jnp.sum(r, -1, keepdims=True) - jnp.sum(
        r * x, -1, keepdims=True
      )
      w_y = jnp.sum(g * wc, -1, keepdims=True)
    weight = None if w is None else w_y
  else:
    g = g.astype(x.dtype)
    q = g * (1 - eps) + eps / 2 if eps else g
    a = 1 if pos_weight is None else jnp.asarray(pos_weight, x.dtype)
    # -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z).
    terms = a * q * jax.nn.softplus(-x) + (1 - q) * jax.nn.softplus(x)
    if w is not None:
      terms = terms * w
    weight = None
  if kept is not None:
    terms = jnp.where(kept, terms, 0)
    if weight is not None:
      weight = jnp.where(kept, weight, 0)
  return terms, _Normaliser(weight, kept)


class _Normaliser(NamedTuple):
  """The weights `cross_entropy`'s mean divides by: `weight` `[B, *S, 1]`,
  or None for 1 per term, counted from the kept pixels `kept` (None: all)."""

  weight: jax.Array | None
  kept: jax.Array | None

  def sum(self, terms, axes):
    """The sum of the weights of `terms` (`[B, *S, K]`) over `axes`, which
    include the last (K entries per pixel)."""
    if self.weight is not None:
      return jnp.sum(self.weight, axes)
    if self.kept is None:
      size = math.prod(terms.shape[a] for a in axes)
      shape = tuple(n for a, n in enumerate(terms.shape) if a not in axes)
      return jnp.full(shape, size, terms.dtype)
    # Counted in integers: exact past float32's 2^24.
    kept = jnp.sum(self.kept.astype(jnp.int32), axes)
    return (kept * terms.shape[-1]).astype(terms.dtype)


def weighted_sums(cfg: StatsConfig, predictions, targets, mask, o):
  """`(ce, count)`, `[G]` each: `cross_entropy`'s sums for `pel_loss`.

  The CE sum and its normaliser with ``ce_class_weights`` /
  ``ce_pos_weight``, per sample (over the batch with ``cfg.batch``, global
  under ``cfg.axis_name`` then, like the region sums). Plain autodiff: one
  more pass over the logits, taken only when weights are given.
  """
  terms, norm = _weighted_terms(
    predictions,
    targets,
    mask,
    cfg.activation,
    cfg.ignore_index,
    o["ce_label_smoothing"],
    o["ce_class_weights"],
    o["ce_pos_weight"],
  )
  axes = tuple(range(0 if cfg.batch else 1, terms.ndim))
  ce, count = jnp.sum(terms, axes), norm.sum(terms, axes)
  if cfg.batch:
    ce, count = ce[None], count[None]
    if cfg.axis_name is not None:
      ce = _global_sum.global_sum(ce, cfg.axis_name)
      count = lax.psum(count, cfg.axis_name)
  return ce, count

"""Private fused core of the PEL family: per-class losses with a custom VJP.

Everything here is positional and already validated by `pel_jax._loss`.
Shapes: predictions `[B, *S, C]`, targets `[B, *S, C]` (float) or `[B, *S]`
(integer ids), mask `[B, *S]` bool or None. The core returns per-class losses
`[B, C]`, or `[1, C]` when the sums also run over the batch. It works on the
arrays' own shapes: reshaping them first costs a layout copy of the gradient
on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Hashable static configuration of one loss call (a custom_vjp nondiff arg)."""

  exponent: float
  scale: float
  fp_weight: float
  fn_weight: float
  smooth_nr: float
  smooth_dr: float
  activation: str | None  # None (probabilities), "sigmoid" or "softmax".
  batch: bool
  ignore_index: int | None
  axis_name: object = None


def compute_dtype(dtype) -> jnp.dtype:
  """Accumulation dtype: float32 for half and single precision, else float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _is_integer(x: float) -> bool:
  return float(x).is_integer()


def _power(p: jax.Array, exponent: float) -> jax.Array:
  """`p ** exponent` for p in [0, 1], finite with finite derivatives at p = 0.

  Integer exponents use `lax.integer_pow`. Other positive exponents use the
  double-`where` rule so that differentiating the result (as grad-of-grad does)
  never meets `0 * inf`. Negative exponents (the derivative of `p ** n` for
  n < 1) evaluate at `max(p, eps)`: the true value is infinite at p = 0.
  """
  if _is_integer(exponent) and exponent >= 0:
    return lax.integer_pow(p, int(exponent))
  if exponent < 0:
    return jnp.maximum(p, jnp.finfo(p.dtype).eps) ** exponent
  positive = p > 0
  return jnp.where(positive, jnp.where(positive, p, 1) ** exponent, 0)


# The layouts below that were tuned on XLA CPU (the class-axis unroll, the
# staged sums) are lowered only for these platforms; any other (GPU, TPU),
# where they were never measured, gets the plain reduce, whose lowering
# there is a tree reduction. The choice is made at lowering time
# (`lax.platform_dependent`): one traced function serves every backend.
# Tests empty it to run the plain form on the CPU.
_TUNED_PLATFORMS = ("cpu",)


def _per_platform(tuned, plain, *args):
  """`tuned(*args)` when lowered for `_TUNED_PLATFORMS`, else `plain(*args)`."""
  return lax.platform_dependent(
      *args, **{name: tuned for name in _TUNED_PLATFORMS}, default=plain
  )


# Up to this many classes, reductions over the class axis are unrolled into
# elementwise ops on slices: they then fuse with their neighbours into one
# vectorised loop, where XLA CPU makes a minor-axis reduce a separate fusion
# that needs its inputs materialised (8 classes: value+grad 69 -> 42 ms,
# gradient temporaries 4.0x -> 2.1x the gradient's size). With more classes
# the slices' many users make XLA write out their producer (the softmax exp)
# and split the backward, so wider inputs are folded in halves instead:
# `x[..., :h] op x[..., h:2h]` gives each level two users (32 / 64 / 128
# classes: value+grad 1.8x / 3.2x / 2.4x faster than the unroll or the
# reduce, temporaries 1.03x / 1.02x / 3.01x -> 0.78x / 0.33x / 0.27x; at 21
# classes the unroll is faster, at 24 they are even).
_UNROLL_CLASSES = 24


def _fold_classes(op, x: jax.Array) -> jax.Array:
  """`op`-reduction over the class axis by halving; odd widths set one aside."""
  odd = []
  while x.shape[-1] > 1:
    width = x.shape[-1]
    if width % 2:
      odd.append(x[..., width - 1 :])
      width -= 1
    x = op(x[..., : width // 2], x[..., width // 2 : width])
  return functools.reduce(op, odd, x)


def _reduce_classes(op, x: jax.Array) -> jax.Array:
  """`op`-reduction of `x` over the class axis, keeping it (size 1)."""
  reducer = jnp.max if op is jnp.maximum else jnp.sum
  plain = lambda x: reducer(x, axis=-1, keepdims=True)
  if x.shape[-1] > _UNROLL_CLASSES:
    return _per_platform(functools.partial(_fold_classes, op), plain, x)
  unrolled = lambda x: functools.reduce(
      op, [x[..., c : c + 1] for c in range(x.shape[-1])]
  )
  return _per_platform(unrolled, plain, x)


def _log_softmax(x: jax.Array) -> jax.Array:
  # The max is only a shift for stability: no gradient needs to flow into it.
  peak = lax.stop_gradient(_reduce_classes(jnp.maximum, x))
  shifted = x - peak
  return shifted - jnp.log(_reduce_classes(jnp.add, jnp.exp(shifted)))


def _activate(cfg: LossConfig, x: jax.Array, select):
  """`(p, p_sel, p_sel ** n)` in the compute dtype; `p_sel = select(p)`.

  `select` picks, per pixel, the entries the `p^n g` term can see: all of
  them for float targets, only the labelled class for integer ids (one-hot g
  zeroes the rest), so the power is taken once per pixel, not once per class.
  For logits the power is taken in log space when n is not an integer.
  """
  x = x.astype(compute_dtype(x.dtype))
  n = cfg.exponent
  if cfg.activation is None:
    p_sel = select(x)
    return x, p_sel, _power(p_sel, n)
  if cfg.activation == "sigmoid":
    log_p = jax.nn.log_sigmoid(x)
    p = jax.nn.sigmoid(x)
    p_sel = select(p)
  else:
    log_p = _log_softmax(x)
    p = jnp.exp(log_p)
    # Equal to select(p), but computed from the logits: read from p, the
    # power would make XLA write out p and p^n (8 classes: 2x the time).
    p_sel = jnp.exp(select(log_p))
  if _is_integer(n):
    return p, p_sel, lax.integer_pow(p_sel, int(n))
  return p, p_sel, jnp.exp(n * select(log_p))


class _Pixels(NamedTuple):
  """Per-pixel terms: `[B, *S, C]`, or `[B, *S, 1]` (`w`; `p_sel`, `p_n` for ids)."""

  p: jax.Array
  p_sel: jax.Array  # p, or the labelled class's p for integer ids.
  p_n: jax.Array  # p_sel ** n.
  g: jax.Array
  w: jax.Array | None  # 0/1 pixel weight; None when no pixel is excluded.
  hit: jax.Array | None  # bool g when p_sel is per pixel, else None.

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


def _pixel_terms(cfg: LossConfig, predictions, targets, mask) -> _Pixels:
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
  hit = is_label if integer and cfg.exponent != 1 else None  # n = 1: p^n is p.
  if hit is not None:
    # One hit per pixel at most, so the sum of zeros and one entry is exact.
    select = lambda x: _reduce_classes(jnp.add, jnp.where(hit, x, 0))
  else:
    select = lambda x: x
  p, p_sel, p_n = _activate(cfg, predictions, select)
  if integer:
    g = is_label.astype(p.dtype)
  else:
    g = targets.astype(p.dtype)
    if keep is not None:
      g = jnp.where(keep, g, 0)
  w = None if keep is None else keep.astype(p.dtype)
  return _Pixels(p, p_sel, p_n, g, w, hit)


def _sum_axes(cfg: LossConfig, ndim: int) -> tuple[int, ...]:
  return tuple(range(0 if cfg.batch else 1, ndim - 1))


def _variadic_sum(operands, axes: tuple[int, ...]):
  zero = jnp.zeros((), operands[0].dtype)
  return lax.reduce(
      tuple(operands),
      (zero,) * len(operands),
      lambda xs, ys: tuple(x + y for x, y in zip(xs, ys)),
      axes,
  )


# XLA CPU accumulates a reduction sequentially (a long one as a scalar
# loop), so one reduce over millions of pixels loses float32 precision: a
# constant 0.3 summed over 4M pixels comes out ~1% low. The summed axes are
# therefore flattened and reduced 16 rows at a time, [16, rest] -> [rest],
# fused with the producers in the first stage and repeated on the partial
# sums: every value passes through at most ~16 additions per stage and
# log16(size) stages, the error bound of a pairwise sum. A size not
# divisible by 16 splits off its remainder rows (< 16) at each stage, summed
# on their own and added at the end. Short reductions (up to 16) are also
# what XLA CPU vectorises; 32 rows per stage, or two 16-row axes at once,
# fall back to slow loops.
_ROWS = 16


def _staged_sum(reduce, operands, first: int, size: int):
  """`reduce(operands, (first,))` over the axis `first` (of `size`), staged.

  `reduce` maps a list of same-shape arrays and axes to a tuple of sums (the
  variadic reduce, or one `jnp.sum` each for tangents).
  """
  remainders = []
  while size > _ROWS:
    rows, rest = divmod(size, _ROWS)
    if rest:
      head = size - rest
      remainders.append(reduce(
          [lax.slice_in_dim(x, head, size, axis=first) for x in operands],
          (first,),
      ))
      operands = [lax.slice_in_dim(x, 0, head, axis=first) for x in operands]
    shape = operands[0].shape
    split = shape[:first] + (_ROWS, rows) + shape[first + 1 :]
    operands = reduce([x.reshape(split) for x in operands], (first,))
    size = rows
  sums = tuple(reduce(list(operands), (first,)))
  for extra in remainders:
    sums = tuple(map(operator.add, sums, extra))
  return sums


def _sum_flat(reduce, axes: tuple[int, ...], operands):
  """Staged sums of same-shape `operands` over the contiguous `axes`."""
  shape = operands[0].shape
  if not axes:
    return tuple(operands)
  first, last = axes[0], axes[-1] + 1
  size = math.prod(shape[first:last])
  flat = shape[:first] + (size,) + shape[last:]
  return _staged_sum(reduce, [x.reshape(flat) for x in operands], first, size)


def _separate_sums(operands, axes: tuple[int, ...]):
  return tuple(jnp.sum(x, axis=axes) for x in operands)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _sum_together(axes: tuple[int, ...], *operands: jax.Array):
  """Sums of several same-shape arrays over contiguous `axes`, fused.

  One variadic reduce over all operands is several times faster on XLA CPU
  than a `jnp.sum` each; on the CPU the reduction is staged (see `_ROWS`)
  for float32 accuracy, elsewhere it is one reduce (see `_TUNED_PLATFORMS`).
  The custom JVP exists because JAX's JVP of a variadic reduce fails on
  symbolic-zero tangents (e.g. integer targets under grad-of-grad); sums are
  linear, so tangents are summed plainly, laid out the same way.
  """
  return _per_platform(
      lambda *xs: _sum_flat(_variadic_sum, axes, xs),
      lambda *xs: tuple(_variadic_sum(xs, axes)),
      *operands,
  )


@_sum_together.defjvp
def _sum_together_jvp(axes, primals, tangents):
  return (
      _sum_together(axes, *primals),
      _per_platform(
          lambda *ts: _sum_flat(_separate_sums, axes, ts),
          lambda *ts: _separate_sums(ts, axes),
          *tangents,
      ),
  )


def _class_sums(cfg: LossConfig, predictions, targets, mask):
  """The four per-class sums `(TP, sum p, sum g, sum p^n g)`, each `[G, C]`."""
  px = _pixel_terms(cfg, predictions, targets, mask)
  p, g, p_n_g = px.p, px.g, px.times_g(px.p_n)
  if px.w is not None:
    p, g, p_n_g = p * px.w, g * px.w, p_n_g * px.w
  sums = _sum_together(_sum_axes(cfg, p.ndim), p * g, p, g, p_n_g)
  if cfg.batch:
    sums = tuple(s[None] for s in sums)
  if cfg.batch and cfg.axis_name is not None:
    # Global batch sums; per-sample sums stay local (the reduction is global).
    sums = lax.psum(sums, cfg.axis_name)
  return sums


def _ratio_terms(cfg: LossConfig, sums):
  """Denominator D (made safe), validity of D, and the ratio R = (N + s)/D."""
  tp, sum_p, sum_g, numer = sums
  k = 1.0 - cfg.fp_weight - cfg.fn_weight
  denom = k * tp + cfg.fp_weight * sum_p + cfg.fn_weight * sum_g + cfg.smooth_dr
  # D is 0 only for an empty class with smooth_dr = 0: count it as a perfect
  # match (R = 1) with no gradient instead of 0/0. (A NaN D stays NaN.)
  valid = denom != 0
  safe_denom = jnp.where(valid, denom, 1)
  ratio = jnp.where(valid, (numer + cfg.smooth_nr) / safe_denom, 1)
  return safe_denom, valid, ratio


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def class_losses(cfg: LossConfig, predictions, targets, mask):
  """Per-class PEL losses `[G, C]` (G = B, or 1 with `cfg.batch`)."""
  return _class_losses_fwd(cfg, predictions, targets, mask)[0]


def _class_losses_fwd(cfg: LossConfig, predictions, targets, mask):
  sums = _class_sums(cfg, predictions, targets, mask)
  _, _, ratio = _ratio_terms(cfg, sums)
  # Residuals: the inputs and four [G, C] sums; the backward recomputes the
  # activation rather than keeping any full-size intermediate alive.
  return 1.0 - cfg.scale * ratio, (predictions, targets, mask, sums)


def _class_losses_bwd(cfg: LossConfig, residuals, cotangent):
  predictions, targets, mask, sums = residuals
  safe_denom, valid, ratio = _ratio_terms(cfg, sums)
  # With A = -scale * ct / D, per pixel (w: mask, k = 1 - fp_w - fn_w):
  #   dL/dp = w * A * (n p^(n-1) g - R (k g + fp_w))
  #   dL/dg = w * A * (p^n - R (k p + fn_w))
  a = jnp.where(valid, -cfg.scale * cotangent / safe_denom, 0)
  a_ratio = a * ratio
  k = 1.0 - cfg.fp_weight - cfg.fn_weight
  n = cfg.exponent
  px = _pixel_terms(cfg, predictions, targets, mask)
  p, p_sel, p_n, g, w = px.p, px.p_sel, px.p_n, px.g, px.w
  # [G, C] -> [G, 1, ..., 1, C] to broadcast over pixels.
  pixels = (a.shape[0],) + (1,) * (p.ndim - 2) + (a.shape[1],)
  a, a_ratio = a.reshape(pixels), a_ratio.reshape(pixels)
  linear = -a_ratio * (k * g + cfg.fp_weight)  # d/dp of the -R*D part.
  if cfg.activation is None:
    grad = px.times_g(n * a, _power(p_sel, n - 1)) + linear
  else:
    # u = p * dL/dp, written with p^n (log space) so that n < 1 and p = 0 are
    # safe: d(p^n)/dz = n p^n (1 - p) for sigmoid, n p^n (e_c - p) for softmax.
    if cfg.activation == "sigmoid":
      if _is_integer(n):
        # (.. * p) * p^(n-1) rather than the forward's p^n: with no p^n
        # subexpression to share, XLA stops writing p^n out between forward
        # and backward (binary [16,512,512,1] value+grad 7.4 -> 5.4 ms,
        # 16 MiB -> 0 temporaries).
        pull = px.times_g(n * a, p_sel, _power(p_sel, n - 1))
      else:
        pull = px.times_g(n * a, p_n)
      grad = (pull + linear * p) * (1 - p)
    else:
      u = px.times_g(n * a, p_n) + linear * p
      grad = u - p * _reduce_classes(jnp.add, u)
  if w is not None:
    grad = grad * w
  d_predictions = grad.astype(predictions.dtype)

  d_targets = None
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    d_g = a * p_n - a_ratio * (k * p + cfg.fn_weight)
    if w is not None:
      d_g = d_g * w
    d_targets = d_g.astype(targets.dtype)
  return d_predictions, d_targets, None


class_losses.defvjp(_class_losses_fwd, _class_losses_bwd)

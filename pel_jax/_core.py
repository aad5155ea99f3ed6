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

import contextlib
import contextvars
import dataclasses
import functools
import math
import operator
import sys
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax import _gpu
from pel_jax import _layout_accel


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


# A call with no backward (evaluation, metrics: the custom VJP's primal)
# reduces over 8 or more classes with plain reduces on every platform. The
# unrolled and per-slice forms pay off when a backward shares the per-pixel
# terms, which XLA then writes out once; without it XLA CPU fuses them into
# the pixel sums and recomputes them for every class entry (O(C^2) work per
# pixel, unvectorised). Up to `_UNROLL_CLASSES` both forms add the classes
# in the same order, so the values equal those of `value_and_grad` bit for
# bit on XLA CPU; past it (halving) at rounding level.
_VALUE_ONLY_PLAIN_CLASSES = 8
_value_only = contextvars.ContextVar("pel_jax_value_only", default=False)


@contextlib.contextmanager
def _tracing_value_only():
  token = _value_only.set(True)
  try:
    yield
  finally:
    _value_only.reset(token)


def _per_class_layout(classes: int, tuned, plain, *args):
  """`_per_platform` for a reduction over `classes` (see `_value_only`)."""
  if classes >= _VALUE_ONLY_PLAIN_CLASSES and _value_only.get():
    return plain(*args)
  return _per_platform(tuned, plain, *args)


# Up to this many classes, reductions over the class axis are unrolled into
# elementwise ops on slices: they then fuse with their neighbours into one
# vectorised loop, where XLA CPU makes a minor-axis reduce a separate fusion
# that needs its inputs materialised (slower, and more gradient temporaries).
# With more classes the slices' many users make XLA write out their producer
# (the softmax exp) and split the backward, so wider inputs are folded in
# halves instead: `x[..., :h] op x[..., h:2h]` gives each level two users
# (measured crossover near 24 classes; see benchmarks/README.md).
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
    return _per_class_layout(
      x.shape[-1], functools.partial(_fold_classes, op), plain, x
    )
  unrolled = lambda x: functools.reduce(
    op, [x[..., c : c + 1] for c in range(x.shape[-1])]
  )
  return _per_class_layout(x.shape[-1], unrolled, plain, x)


# XLA CPU fuses a producer into its consumer only while the fused code
# emits it at most 15 times (XLA's `kAllowedCodeDuplication`), and each
# class slice of an unrolled reduction emits its producer once: from 16
# classes on, the softmax's `exp` was written out a second time just to be
# summed. Between that and `_UNROLL_CLASSES` the sum of exponentials takes
# the `exp` of each slice of the logits instead, one use per `exp`.
_FUSED_SLICES = 15


def _past_fused_slices(classes: int) -> bool:
  """Whether an unrolled class reduction emits its producer too often."""
  return _FUSED_SLICES < classes <= _UNROLL_CLASSES


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
    and _past_fused_slices(classes)
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


def _log1p_exp_neg_abs(x: jax.Array) -> jax.Array:
  """`log(1 + exp(-|x|))` to a few ulps, vectorised.

  `softplus(x) = max(x, 0) + log1p(exp(-|x|))`, but `jax.nn.softplus`'s
  `log1p` is a scalar call per entry on XLA CPU (the bulk of the sigmoid
  cross-entropy's time). With `e = exp(-|x|)` and `u = 1 + e`, Goldberg's
  `log(u) * e / (u - 1)` is `log1p(e)` to a few ulps: `u - 1` is exact, so
  the rounding of u cancels between the two factors (`e` itself where u
  rounds to 1). XLA's simplifier rewrites `(1 + e) - 1` as `e`, which
  would undo the cancellation, so the 1 subtracted is opaque to it.
  """
  e = jnp.exp(-jnp.abs(x))
  u = 1 + e
  rounded = u == 1
  one = lax.optimization_barrier(jnp.ones((), u.dtype))
  ratio = e / jnp.where(rounded, 1, u - one)
  return jnp.where(rounded, e, jnp.log(u) * ratio)


def _log_sigmoid(x: jax.Array, p: jax.Array) -> jax.Array:
  """`log p` for `p = sigmoid(x)`, vectorised (unlike `jax.nn.log_sigmoid`).

  `min(x, 0) + log(max(p, 1 - p))`: the log's argument lies in [1/2, 1],
  where its absolute error (under 2^-23) is a relative error of at most
  n 2^-23 in `p^n = exp(n log p)`, the one use; `x` keeps log p exact
  in the tails where p or 1 - p underflow.
  """
  return jnp.minimum(x, 0) + jnp.log(jnp.where(x < 0, 1 - p, p))


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


def _sum_axes(cfg: StatsConfig, ndim: int) -> tuple[int, ...]:
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
# Rows per stage where the per-entry code is longer (`_stage_rows`): LLVM
# vectorises a stage only once it fully unrolls the rows, and 16 copies of
# the sigmoid with the cross-entropy's exp and log exceed its budget,
# leaving a scalar loop several times slower; 8 copies fit, 4 with the
# comparison and conversion of integer ids too.
_LONG_ROWS = 8
_LONGER_ROWS = 4
# A single channel's stage reads its rows from one contiguous block,
# `[rows, stage, 8]` reduced over `stage` (one vector of 8 partial sums per
# block), rather than `stage` strided rows `[stage, rows]`: those lie a
# multiple of 4 KiB apart for power-of-two images, so the rows of two or
# three inputs compete for the same cache sets. (Multi-class sums keep the
# strided rows: a block would interleave the classes' partial sums.)
_BLOCK = 8


def _stage_rows(cfg: StatsConfig, predictions, targets) -> int:
  """Rows per stage of the forward sums (see `_LONG_ROWS`)."""
  if cfg.activation != "sigmoid" or not cfg.cross_entropy:
    return _ROWS
  ids = jnp.issubdtype(targets.dtype, jnp.integer)
  return _LONGER_ROWS if ids else _LONG_ROWS


def _staged_sum(
  reduce, operands, first: int, size: int, stage: int, block: int = 1
):
  """`reduce(operands, (first,))` over the axis `first` (of `size`), staged.

  `reduce` maps a list of same-shape arrays and axes to a tuple of sums (the
  variadic reduce, or one `jnp.sum` each for tangents), `stage` rows at a
  time: `[stage, rows]` reduced over `stage`, or with `block > 1`
  `[rows, stage, block]` (see `_BLOCK`) while the axis is that long.
  """
  remainders = []
  while size > stage:
    width = block if size >= stage * block else 1
    rows, rest = divmod(size, stage * width)
    if rest:
      head = size - rest
      remainders.append(
        reduce(
          [lax.slice_in_dim(x, head, size, axis=first) for x in operands],
          (first,),
        )
      )
      operands = [lax.slice_in_dim(x, 0, head, axis=first) for x in operands]
    shape = operands[0].shape
    before, after = shape[:first], shape[first + 1 :]
    if width == 1:
      split = before + (stage, rows) + after
      operands = reduce([x.reshape(split) for x in operands], (first,))
    else:
      split = before + (rows, stage, width) + after
      merged = before + (rows * width,) + after
      operands = [
        x.reshape(merged)
        for x in reduce([x.reshape(split) for x in operands], (first + 1,))
      ]
    size = rows * width
  sums = tuple(reduce(list(operands), (first,)))
  for extra in remainders:
    sums = tuple(map(operator.add, sums, extra))
  return sums


def _sum_flat(reduce, axes: tuple[int, ...], stage: int, operands):
  """Staged sums of same-shape `operands` over the contiguous `axes`."""
  shape = operands[0].shape
  if not axes:
    return tuple(operands)
  first, last = axes[0], axes[-1] + 1
  size = math.prod(shape[first:last])
  flat = shape[:first] + (size,) + shape[last:]
  block = _BLOCK if math.prod(shape[last:]) == 1 else 1
  return _staged_sum(
    reduce, [x.reshape(flat) for x in operands], first, size, stage, block
  )


def _separate_sums(operands, axes: tuple[int, ...]):
  return tuple(jnp.sum(x, axis=axes) for x in operands)


def _sum_together(
  axes: tuple[int, ...], *operands: jax.Array, stage: int = _ROWS
):
  """Sums of several same-shape arrays over contiguous `axes`, fused.

  One variadic reduce over all operands is several times faster on XLA CPU
  than a `jnp.sum` each; on the CPU the reduction is staged (see `_ROWS`)
  for float32 accuracy; GPU and TPU get `_layout_accel.region_sums`.
  The custom JVP exists because JAX's JVP of a variadic reduce fails on
  symbolic-zero tangents (e.g. integer targets under grad-of-grad); sums are
  linear, so tangents are summed plainly, laid out the same way.
  """
  return _staged_sums(axes, stage, *operands)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _staged_sums(axes: tuple[int, ...], stage: int, *operands: jax.Array):
  return _per_platform(
    lambda *xs: _sum_flat(_variadic_sum, axes, stage, xs),
    lambda *xs: _layout_accel.region_sums(xs, axes, _variadic_sum),
    *operands,
  )


@_staged_sums.defjvp
def _staged_sums_jvp(axes, stage, primals, tangents):
  return (
    _staged_sums(axes, stage, *primals),
    _per_platform(
      lambda *ts: _sum_flat(_separate_sums, axes, stage, ts),
      lambda *ts: _separate_sums(ts, axes),
      *tangents,
    ),
  )


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


def _root_power(r: jax.Array, m: float) -> jax.Array:
  """`r ** m` for r in [0, 1] and m an odd multiple of 1/2: sqrt(r)^(2m).

  `sqrt` is one vectorised instruction where `**` is a scalar `powf` call
  per entry. Safe at r = 0 as `_power` is: the double `where` for m > 0,
  r clamped at eps for m < 0.
  """
  if m < 0:
    root = jnp.sqrt(jnp.maximum(r, jnp.finfo(r.dtype).eps))
  else:
    positive = r > 0
    root = jnp.where(positive, jnp.sqrt(jnp.where(positive, r, 1)), 0)
  return lax.integer_pow(root, round(2 * m))


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
  backward reads (lowered for one platform, XLA drops it).
  """

  def generic(predictions, targets):
    stats = _local_sums(cfg, predictions, targets, mask)
    lse_shape = predictions.shape[:-1] + (1,)
    return stats, jnp.zeros(lse_shape, compute_dtype(predictions.dtype))

  stats, lse = lax.platform_dependent(
    predictions,
    targets,
    **_gpu.per_platform(
      lambda x, t: _gpu.forward(cfg, sys.modules[__name__], x, t, mask)
    ),
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
  if lse is None:
    d_predictions, d_targets = stats_backward(
      cfg, predictions, targets, mask, stats, cotangent
    )
  else:
    d_predictions, d_targets = lax.platform_dependent(
      predictions,
      targets,
      lse,
      **_gpu.per_platform(
        lambda x, t, lse: _gpu.backward(
          cfg, sys.modules[__name__], x, t, mask, lse, cotangent
        )
      ),
      default=lambda x, t, lse: stats_backward(
        cfg, x, t, mask, stats, cotangent
      ),
    )
  return d_predictions, d_targets, None


region_sums.defvjp(_region_sums_fwd, _region_sums_bwd)


# ----------------------------------------------------------------------------
# The loss from the region sums: plain jnp on [G, C], ordinary autodiff.
# ----------------------------------------------------------------------------


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

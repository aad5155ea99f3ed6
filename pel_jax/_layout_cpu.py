"""Layouts of the core tuned on XLA CPU, and the choice of layout per platform.

The class-axis reductions (unrolled or folded in halves) and the staged
pixel sums below were tuned and timed on XLA CPU; they are lowered only for
`_TUNED_PLATFORMS`, and every other platform gets the plain reduce
(`_layout_accel` says what GPU and TPU get instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import operator

import jax
from jax import lax
import jax.numpy as jnp

from pel_jax import _layout_accel

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


def _past_fused_slices(classes: int, value_only_too: bool = False) -> bool:
  """Whether an unrolled class reduction emits its producer too often.

  Not in a value-only call unless `value_only_too`: there the class
  reductions are plain reduces (`_per_class_layout`), and the per-slice
  forms that work around the unrolled ones are fused into the pixel sums
  once per class (with the cross-entropy, 16 classes took 10x the time of
  a value+grad). Integer powers of each entry still pay off there.
  """
  if _value_only.get() and not value_only_too:
    return False
  return _FUSED_SLICES < classes <= _UNROLL_CLASSES


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

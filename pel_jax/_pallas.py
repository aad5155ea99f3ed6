"""Pallas kernels of the PEL core's per-class sums and of their pullback.

Experimental and private: no loss uses this module. It has never been
measured on a GPU or TPU, so it is no default anywhere; it exists so that the
fused forward and backward can be tried there (Triton on GPU, Mosaic on TPU)
with the same interface as the XLA core's region sums:

* `region_stats(cfg, predictions, targets, mask)` returns the four per-class
  sums `(TP, sum p, sum g, N)` = `(sum w p g, sum w p, sum w g,
  sum w p^n g)`, each `[G, C]` (G = B, or 1 with `cfg.batch`), in the
  accumulation dtype;
* `region_stats_bwd(cfg, predictions, targets, mask, stats, cotangent)`
  returns `(d_predictions, d_targets)` for a cotangent of those four sums
  (a 4-tuple, or any object with fields `tp`, `sum_p`, `sum_g`, `numer`),
  chained through the activation as `pel_jax._core`'s backward is
  (`d_targets` is None for integer ids).

`cfg` needs the fields `exponent`, `activation`, `batch` and `ignore_index`
(`pel_jax._core`'s configurations have them); the squared and soft-label
sums are not implemented here and raise NotImplementedError.

Shapes and masks follow `pel_jax._core`: predictions `[B, *S, C]`, targets
`[B, *S, C]` (float) or `[B, *S]` (integer ids; `cfg.ignore_index` excluded,
ids outside `[0, C)` match no class), mask `[B, *S]` bool or None. Inputs are
validated by `pel_jax._loss`, not here. Cross-device sums (`cfg.axis_name`)
are the caller's.

Layout: the arrays are viewed as `[G, P, C]` (P pixels per group) and cut
into blocks of R pixels; one kernel instance reduces a block to partial sums
`[4, C]` (written out, then summed by XLA: no cross-instance accumulation,
which Triton's parallel grid would not allow), or writes the block's
gradient. Triton needs every block to hold a power-of-two number of
elements, so the class axis is padded to a power of two (padded classes get
no probability and no target) and the pixel axis to a multiple of R (padded
pixels are masked out by their index). On the CPU the kernels run in Pallas's
interpret mode, which is how they are tested.
"""

from __future__ import annotations

import functools
import math

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
import jax.numpy as jnp

from pel_jax import _numerics

# Elements of one [R, C] block: a Triton program holds it in registers.
_BLOCK_ELEMENTS = 4096
# Rows per block are a multiple of this (TPU: 8 sublanes of float32).
_MIN_ROWS = 8


def _next_power_of_2(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


class _Layout:
  """Static sizes of one call: groups G, pixels P, classes C and padded."""

  def __init__(self, cfg, shape: tuple[int, ...], block_rows: int | None):
    self.classes = shape[-1]
    pixels = math.prod(shape[:-1])
    self.groups = 1 if cfg.batch else shape[0]
    self.pixels = pixels // self.groups
    self.padded_classes = _next_power_of_2(self.classes)
    rows = block_rows or max(_MIN_ROWS, _BLOCK_ELEMENTS // self.padded_classes)
    rows = min(rows, max(_MIN_ROWS, _next_power_of_2(self.pixels)))
    self.rows = rows
    self.blocks = -(-self.pixels // rows)
    self.padded_pixels = self.blocks * rows


def _as_blocks(layout: _Layout, x: jax.Array, width: int) -> jax.Array:
  """`[B, *S(, C)]` -> `[G, padded P, width]`, zero-padded."""
  x = x.reshape(layout.groups, layout.pixels, -1)
  pad_rows = layout.padded_pixels - layout.pixels
  pad_cols = width - x.shape[-1]
  if pad_rows or pad_cols:
    x = jnp.pad(x, ((0, 0), (0, pad_rows), (0, pad_cols)))
  return x


def _operands(cfg, layout, predictions, targets, mask):
  """Blocked inputs and their BlockSpecs: predictions, targets[, mask]."""
  integer = jnp.issubdtype(targets.dtype, jnp.integer)
  width = layout.padded_classes
  rows = layout.rows
  wide = pl.BlockSpec((1, rows, width), lambda g, i: (g, i, 0))
  narrow = pl.BlockSpec((1, rows, 1), lambda g, i: (g, i, 0))
  arrays = [_as_blocks(layout, predictions, width)]
  specs = [wide]
  if integer:
    arrays.append(_as_blocks(layout, targets.astype(jnp.int32), 1))
    specs.append(narrow)
  else:
    arrays.append(_as_blocks(layout, targets, width))
    specs.append(wide)
  if mask is not None:
    arrays.append(_as_blocks(layout, mask.astype(jnp.int32), 1))
    specs.append(narrow)
  return arrays, specs


class _Block:
  """Per-pixel terms of one `[R, C]` block inside a kernel."""

  def __init__(self, cfg, layout, dtype, x_ref, t_ref, m_ref):
    rows, width = layout.rows, layout.padded_classes
    row = pl.program_id(1) * rows + lax.broadcasted_iota(
      jnp.int32, (rows, 1), 0
    )
    col = lax.broadcasted_iota(jnp.int32, (1, width), 1)
    real = col < layout.classes
    keep = row < layout.pixels
    if m_ref is not None:
      keep = keep & (m_ref[0] != 0)
    t = t_ref[0]
    if jnp.issubdtype(t.dtype, jnp.integer):
      if cfg.ignore_index is not None:
        keep = keep & (t != cfg.ignore_index)
      g = ((t == col) & keep).astype(dtype)  # Padded classes are dropped.
    else:
      g = jnp.where(keep, t.astype(dtype), 0)
    # Excluded pixels read 0 before any arithmetic (double-`where` rule).
    x = jnp.where(keep, x_ref[0].astype(dtype), 0)
    self.p, self.p_n = self._activate(cfg, x, real)
    self.g = g
    self.w = keep.astype(dtype)

  @staticmethod
  def _activate(cfg, x, real):
    """`(p, p^n)`; padded classes get p = 0 under softmax."""
    n = cfg.exponent
    if cfg.activation is None:
      return x, _numerics._power(x, n)  # pylint: disable=protected-access
    if cfg.activation == "sigmoid":
      p = jax.nn.sigmoid(x)
      log_p = jax.nn.log_sigmoid(x)
    else:
      peak = jnp.max(jnp.where(real, x, -jnp.inf), axis=-1, keepdims=True)
      shifted = x - peak
      e = jnp.where(real, jnp.exp(shifted), 0)
      log_p = shifted - jnp.log(jnp.sum(e, axis=-1, keepdims=True))
      p = jnp.where(real, jnp.exp(log_p), 0)
    if float(n).is_integer():
      return p, lax.integer_pow(p, int(n))
    # Log space: finite at p = 0 for any n > 0.
    return p, jnp.exp(n * log_p)


def _platform_call(kernel, out_shape, grid, in_specs, out_specs, *arrays):
  """`pallas_call` compiled for the backend lowering it: Triton, Mosaic TPU,
  or the interpreter elsewhere (CPU)."""
  call = functools.partial(
    pl.pallas_call,
    kernel,
    out_shape=out_shape,
    grid=grid,
    in_specs=in_specs,
    out_specs=out_specs,
  )
  parallel = ("parallel", "parallel")
  return lax.platform_dependent(
    *arrays,
    cuda=lambda *a: call(compiler_params=pltriton.CompilerParams())(*a),
    rocm=lambda *a: call(compiler_params=pltriton.CompilerParams())(*a),
    tpu=lambda *a: call(
      compiler_params=pltpu.CompilerParams(dimension_semantics=parallel)
    )(*a),
    default=lambda *a: call(interpret=True)(*a),
  )


def _check_supported(cfg) -> None:
  for option in ("squared", "soft_labels"):
    if getattr(cfg, option, False):
      raise NotImplementedError(
        f"pel_jax._pallas: {option}=True sums are not implemented"
      )


def _four(cotangent):
  """`(tp, sum_p, sum_g, numer)` from a 4-tuple or a record with those fields."""
  if hasattr(cotangent, "numer"):
    return (cotangent.tp, cotangent.sum_p, cotangent.sum_g, cotangent.numer)
  return tuple(cotangent)


def region_stats(
  cfg, predictions, targets, mask, *, block_rows: int | None = None
):
  """The four per-class sums `(TP, sum p, sum g, N)`, each `[G, C]`.

  `block_rows` (a power of two, at least 8) overrides the pixels per block.
  """
  _check_supported(cfg)
  layout = _Layout(cfg, predictions.shape, block_rows)
  dtype = _numerics.compute_dtype(predictions.dtype)
  arrays, specs = _operands(cfg, layout, predictions, targets, mask)
  has_mask = mask is not None

  def kernel(*refs):
    x_ref, t_ref = refs[:2]
    m_ref = refs[2] if has_mask else None
    out_refs = refs[2 + has_mask :]
    px = _Block(cfg, layout, dtype, x_ref, t_ref, m_ref)
    terms = (px.p * px.g, px.p * px.w, px.g, px.p_n * px.g)
    for ref, term in zip(out_refs, terms):
      ref[...] = jnp.sum(term, axis=0).reshape(ref.shape)

  part = jax.ShapeDtypeStruct(
    (layout.groups, layout.blocks, 1, layout.padded_classes), dtype
  )
  part_spec = pl.BlockSpec(
    (1, 1, 1, layout.padded_classes), lambda g, i: (g, i, 0, 0)
  )
  parts = _platform_call(
    kernel,
    (part,) * 4,
    (layout.groups, layout.blocks),
    specs,
    (part_spec,) * 4,
    *arrays,
  )
  return tuple(s.sum(axis=1)[:, 0, : layout.classes] for s in parts)


def region_stats_bwd(
  cfg,
  predictions,
  targets,
  mask,
  stats,
  cotangent,
  *,
  block_rows: int | None = None,
):
  """`(d_predictions, d_targets)` of `region_stats` for a cotangent of it.

  With `(a, b, c, d)` the cotangents of `(TP, sum p, sum g, N)`, per pixel
  and class (w: the pixel's weight):

    dL/dp = w (a g + b + n d p^(n-1) g),  dL/dg = w (a p + c + d p^n),

  then through the activation in the form the XLA core uses: with
  `u = p dL/dp` (written with p^n, safe at p = 0 for n < 1),
  `u (1 - p)` for sigmoid and `u - p sum_c u` for softmax. The sums' pullback
  is linear in the cotangent and needs no value of `stats` (taken for the
  interface's sake).
  """
  del stats
  _check_supported(cfg)
  layout = _Layout(cfg, predictions.shape, block_rows)
  dtype = _numerics.compute_dtype(predictions.dtype)
  arrays, specs = _operands(cfg, layout, predictions, targets, mask)
  width = layout.padded_classes
  has_mask = mask is not None
  float_targets = not jnp.issubdtype(targets.dtype, jnp.integer)
  n = cfg.exponent
  # [G, C] cotangents -> [G, 1, padded C]; padded classes get 0.
  cts = [
    jnp.pad(
      jnp.asarray(c, dtype).reshape(layout.groups, 1, -1),
      ((0, 0), (0, 0), (0, width - layout.classes)),
    )
    for c in _four(cotangent)
  ]
  ct_spec = pl.BlockSpec((1, 1, width), lambda g, i: (g, 0, 0))

  def kernel(*refs):
    x_ref, t_ref = refs[:2]
    m_ref = refs[2] if has_mask else None
    ct_tp, ct_p, ct_g, ct_n = (r[0] for r in refs[2 + has_mask : 6 + has_mask])
    out_refs = refs[6 + has_mask :]
    px = _Block(cfg, layout, dtype, x_ref, t_ref, m_ref)
    p, g, w, p_n = px.p, px.g, px.w, px.p_n
    linear = ct_tp * g + ct_p
    if cfg.activation is None:
      p_n1 = _numerics._power(p, n - 1)  # pylint: disable=protected-access
      grad = g * (n * ct_n) * p_n1 + linear
    else:
      u = g * (n * ct_n) * p_n + linear * p
      if cfg.activation == "sigmoid":
        grad = u * (1 - p)
      else:
        grad = u - p * jnp.sum(u, axis=-1, keepdims=True)
    out_refs[0][0] = (grad * w).astype(out_refs[0].dtype)
    if float_targets:
      d_g = ct_tp * p + ct_g + ct_n * p_n
      out_refs[1][0] = (d_g * w).astype(out_refs[1].dtype)

  def full(x):
    return jax.ShapeDtypeStruct(
      (layout.groups, layout.padded_pixels, width), x.dtype
    )

  wide = specs[0]
  out_shape = (full(predictions),)
  if float_targets:
    out_shape += (full(targets),)
  grads = _platform_call(
    kernel,
    out_shape,
    (layout.groups, layout.blocks),
    specs + [ct_spec] * 4,
    (wide,) * len(out_shape),
    *arrays,
    *cts,
  )

  def unblock(d, like):
    return d[:, : layout.pixels, : layout.classes].reshape(like.shape)

  d_predictions = unblock(grads[0], predictions)
  d_targets = unblock(grads[1], targets) if float_targets else None
  return d_predictions, d_targets

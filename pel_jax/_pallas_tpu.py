"""The TPU (Mosaic) form of the Pallas region sums: pixels on the lanes.

A TPU keeps an array `[B, *S, C]` in HBM in a layout of its own choosing,
not row-major: measured with deviceless compiles (jax 0.10.2, libtpu
0.0.42.1, v5e) for `[16, 512, 512, C]`, the last spatial axis W is the lane
(minor) axis for every C < 128, the classes sit on the sublanes when C is a
power of two up to 64 (`{2,3,1,0:T(C,128)}`, physically `[B, H, C, W]`) and
in front of the spatial axes otherwise (`{2,1,3,0:T(8,128)}` at C = 21,
physically `[B, C, H, W]`); at C = 128 the layout is row-major. A Mosaic
kernel takes its operands row-major, so a kernel over `[B, H, W, C]` forced
XLA to copy the logits into that layout with C padded to 128 lanes (up to
43x the bytes at C = 2). Here the kernel takes the transposed view whose
row-major layout is the device's own (`view_of`), which XLA lowers as a
bitcast: no copy, no padding. A view that does not match (other shapes, or
another TPU's choice) stays correct and costs one copy each way.

In the view `[B, d1, d2, d3]` (d3 on the lanes) one axis holds the classes
(`class_axis`) and one the rows of pixels that the grid steps over
(`row_axis`). One kernel instance reads a block of rows of one image (and,
for wide rows, a 128-multiple slice of W) and adds its four per-class sums
into a resident accumulator (the row axis is innermost and sequential,
"arbitrary"), reduced over the rows only so that its last two axes stay
lane-dense; XLA sums the lanes. The pullback writes a gradient
block per input block. Integer ids come as `[B, R, W]` (R = prod S[:-1]),
whose row-major layout is the device's; the mask is folded into them as a
sentinel id (one small elementwise pass), or, with float targets, comes as
a float `[B, R, W]`. On the CPU the same kernels run in interpret mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
from jax import lax
from jax.experimental import pallas as pl
import jax.numpy as jnp

from pel_jax import _numerics

# Elements of one logits block (1 MiB in float32): with the pullback's
# input and output blocks double-buffered, well inside v5e's 16 MiB of
# scoped VMEM.
_BLOCK_ELEMENTS = 1 << 18
# An id no class has and no caller passes: pixels excluded by the mask.
_MASKED = -(2**31)


class View(NamedTuple):
  """Static layout of one call (all axes of the 4-D view `[B, d1, d2, d3]`)."""

  perm: tuple[int, ...]  # `[B, R, W, C]` -> the view.
  shape: tuple[int, ...]  # The view's shape.
  class_axis: int  # 1, 2 or 3.
  row_axis: int  # The axis the grid steps over: 1 or 2.
  rows: int  # R.
  block_rows: int
  block_width: int  # Pixels of W per block: W, or a divisor of W in 128s.

  @property
  def width_axis(self) -> int:
    return 2 if self.class_axis == 3 else 3

  @property
  def width(self) -> int:
    return self.shape[self.width_axis]

  @property
  def grid(self) -> tuple[int, int, int]:
    """(B, W blocks, row blocks): the rows innermost, for the accumulator."""
    rows = -(-self.rows // self.block_rows)
    return (self.shape[0], self.width // self.block_width, rows)

  @property
  def block(self) -> tuple[int, ...]:
    b = list(self.shape)
    b[0], b[self.row_axis] = 1, self.block_rows
    b[self.width_axis] = self.block_width
    return tuple(b)

  def index_map(self, b, j, i):
    at = {0: b, self.row_axis: i, self.width_axis: j}
    return tuple(at.get(a, 0) for a in range(4))

  def expand(self, x):
    """`[rows, W]` (a block of ids or mask) -> broadcastable to the block."""
    return jnp.expand_dims(x, self.class_axis - 1)


def view_of(
  shape: tuple[int, ...], dtype, block_rows: int | None = None
) -> View:
  """The view of `[B, *S, C]` whose row-major layout is the TPU's own."""
  classes = shape[-1]
  spatial = shape[1:-1]
  width = spatial[-1] if spatial else 1
  rows = math.prod(spatial[:-1])
  dtype = jnp.dtype(dtype)
  if classes % 128 == 0:
    class_axis, row_axis, perm = 3, 1, (0, 1, 2, 3)  # [B, R, W, C]
  elif classes & (classes - 1) == 0 and not (
    dtype.itemsize < 4 and classes == 1
  ):
    class_axis, row_axis, perm = 2, 1, (0, 1, 3, 2)  # [B, R, C, W]
  else:
    class_axis, row_axis, perm = 1, 2, (0, 3, 1, 2)  # [B, C, R, W]
  full = (shape[0], rows, width, classes)
  view_shape = tuple(full[p] for p in perm)
  if block_rows is None:
    # Classes on the sublanes fill whole tiles in VMEM: count them padded.
    sublanes = 8 * max(1, 4 // dtype.itemsize)
    padded = max(classes, sublanes) if class_axis == 2 else classes
    # Whole (8, 128) tiles of the int32 ids, and of the logits where the
    # rows are their sublanes ((16, 128) in bfloat16).
    align = sublanes if row_axis == 2 else 8
    # Wide rows are cut into 128-multiples of W that divide it, so that a
    # block of `align` rows stays within the budget.
    block_width = width
    if width % 128 == 0:
      lanes = width // 128
      fit = max(1, _BLOCK_ELEMENTS // (padded * align * 128))
      block_width = 128 * max(
        k for k in range(1, lanes + 1) if lanes % k == 0 and k <= fit
      )
    block_rows = max(1, _BLOCK_ELEMENTS // (padded * block_width))
    block_rows = max(align, block_rows // align * align)
  else:
    block_width = width
  block_rows = min(block_rows, rows)
  return View(
    perm, view_shape, class_axis, row_axis, rows, block_rows, block_width
  )


def to_view(view: View, x: jax.Array) -> jax.Array:
  """`[B, *S, C]` -> the view (a bitcast where the layouts agree)."""
  b, c = x.shape[0], x.shape[-1]
  w = x.shape[-2] if x.ndim > 2 else 1
  return jnp.transpose(x.reshape(b, view.rows, w, c), view.perm)


def from_view(view: View, y: jax.Array, shape) -> jax.Array:
  inverse = tuple(view.perm.index(a) for a in range(4))
  return jnp.transpose(y, inverse).reshape(shape)


def activate(cfg, x: jax.Array, axis: int, real=None):
  """`(p, p^n)` of a block, the classes along `axis`.

  `real` (or None) marks the real classes of a padded class axis: padded
  classes get p = 0 under softmax.
  """
  n = cfg.exponent
  if cfg.activation is None:
    return x, _numerics._power(x, n)  # pylint: disable=protected-access
  if cfg.activation == "sigmoid":
    p = jax.nn.sigmoid(x)
    log_p = jax.nn.log_sigmoid(x)
  else:
    masked = x if real is None else jnp.where(real, x, -jnp.inf)
    shifted = x - jnp.max(masked, axis=axis, keepdims=True)
    e = jnp.exp(shifted)
    if real is not None:
      e = jnp.where(real, e, 0)
    log_p = shifted - jnp.log(jnp.sum(e, axis=axis, keepdims=True))
    p = jnp.exp(log_p)
    if real is not None:
      p = jnp.where(real, p, 0)
  if float(n).is_integer():
    return p, lax.integer_pow(p, int(n))
  # Log space: finite at p = 0 for any n > 0.
  return p, jnp.exp(n * log_p)


def pullback(cfg, p, g, w, p_n, cts, axis: int, want_targets: bool):
  """`(dL/dx, dL/dg)` per pixel and class for cotangents `(a, b, c, d)` of
  `(TP, sum p, sum g, N)`; see `pel_jax._pallas.region_stats_bwd`. `w`
  (pixel weights) None means all 1; `dL/dg` is None unless `want_targets`.
  """
  ct_tp, ct_p, ct_g, ct_n = cts
  n = cfg.exponent
  linear = ct_tp * g + ct_p
  if cfg.activation is None:
    p_n1 = _numerics._power(p, n - 1)  # pylint: disable=protected-access
    grad = g * (n * ct_n) * p_n1 + linear
  else:
    u = g * (n * ct_n) * p_n + linear * p
    if cfg.activation == "sigmoid":
      grad = u * (1 - p)
    else:
      grad = u - p * jnp.sum(u, axis=axis, keepdims=True)
  d_g = ct_tp * p + ct_g + ct_n * p_n if want_targets else None
  if w is None:
    return grad, d_g
  return grad * w, None if d_g is None else d_g * w


def _block_terms(cfg, view: View, dtype, x_ref, t_ref, m_ref):
  """`(p, g, w, p^n)` of one block; w is None where every pixel counts.

  Excluded pixels read 0 before any arithmetic (double-`where` rule).
  """
  axis = view.class_axis - 1
  keep = None
  if view.rows % view.block_rows:  # The last block's rows past R.
    shape = [1, 1, 1]
    shape[view.row_axis - 1] = view.block_rows
    row = lax.broadcasted_iota(jnp.int32, tuple(shape), view.row_axis - 1)
    keep = row + pl.program_id(2) * view.block_rows < view.rows
  t = t_ref[0]
  if jnp.issubdtype(t.dtype, jnp.integer):
    t = view.expand(t)
    hit = t != _MASKED
    if cfg.ignore_index is not None:
      hit = hit & (t != cfg.ignore_index)
    keep = hit if keep is None else keep & hit
    shape = [1, 1, 1]
    shape[axis] = view.block[view.class_axis]
    col = lax.broadcasted_iota(jnp.int32, tuple(shape), axis)
    g = ((t == col) & keep).astype(dtype)
  else:
    if m_ref is not None:
      hit = view.expand(m_ref[0]) != 0
      keep = hit if keep is None else keep & hit
    g = t.astype(dtype)
    if keep is not None:
      g = jnp.where(keep, g, 0)
  x = x_ref[0].astype(dtype)
  w = None
  if keep is not None:
    x = jnp.where(keep, x, 0)
    w = keep.astype(dtype)
  p, p_n = activate(cfg, x, axis)
  return p, g, w, p_n


def _operands(view: View, predictions, targets, mask):
  """Kernel inputs and their BlockSpecs: logits, targets[, mask]."""
  b = predictions.shape[0]
  width = view.width
  big = pl.BlockSpec(view.block, view.index_map)
  small = pl.BlockSpec(
    (1, view.block_rows, view.block_width), lambda g, j, i: (g, i, j)
  )
  arrays, specs = [to_view(view, predictions)], [big]
  if jnp.issubdtype(targets.dtype, jnp.integer):
    ids = targets.astype(jnp.int32)
    if mask is not None:
      ids = jnp.where(mask, ids, _MASKED)
    arrays.append(ids.reshape(b, view.rows, width))
    specs.append(small)
    mask = None
  else:
    arrays.append(to_view(view, targets))
    specs.append(big)
  if mask is not None:
    arrays.append(mask.astype(jnp.int32).reshape(b, view.rows, width))
    specs.append(small)
  return arrays, specs


def _call(kernel, out_shape, view, in_specs, out_specs, semantics, interpret):
  kwargs = dict(interpret=True)
  if not interpret:
    # pylint: disable-next=import-outside-toplevel
    from jax.experimental.pallas import tpu as pltpu

    kwargs = dict(
      compiler_params=pltpu.CompilerParams(dimension_semantics=semantics)
    )
  return pl.pallas_call(
    kernel,
    out_shape=out_shape,
    grid=view.grid,
    in_specs=in_specs,
    out_specs=out_specs,
    **kwargs,
  )


def region_stats(
  cfg, predictions, targets, mask, *, interpret, block_rows=None
):
  """`(TP, sum p, sum g, N)`, each `[G, C]` (see `pel_jax._pallas`)."""
  view = view_of(predictions.shape, predictions.dtype, block_rows)
  dtype = _numerics.compute_dtype(predictions.dtype)
  arrays, specs = _operands(view, predictions, targets, mask)
  has_mask = len(arrays) == 3
  row = view.row_axis - 1
  # The accumulator: the block less its rows, one per image and W block.
  kept = [a for a in range(1, 4) if a != view.row_axis]
  out_block = (1, 4, *(view.block[a] for a in kept))

  def out_map(g, j, i):
    del i
    return (g, 0, *(j if a == view.width_axis else 0 for a in kept))

  def kernel(*refs):
    x_ref, t_ref = refs[:2]
    m_ref = refs[2] if has_mask else None
    out = refs[-1]

    @pl.when(pl.program_id(2) == 0)
    def _():
      out[...] = jnp.zeros(out.shape, out.dtype)

    p, g, w, p_n = _block_terms(cfg, view, dtype, x_ref, t_ref, m_ref)
    terms = (p * g, p if w is None else p * w, g, p_n * g)
    for j, term in enumerate(terms):
      out[0, j] += jnp.sum(term, axis=row)

  partial = _call(
    kernel,
    jax.ShapeDtypeStruct(
      (view.shape[0], 4, *(view.shape[a] for a in kept)), dtype
    ),
    view,
    specs,
    pl.BlockSpec(out_block, out_map),
    ("parallel", "parallel", "arbitrary"),
    interpret,
  )(*arrays)
  # The lanes left in the partial sums: W, beside the classes.
  sums = jnp.sum(partial, axis=3 if view.class_axis != 3 else 2)
  if cfg.batch:
    sums = jnp.sum(sums, axis=0, keepdims=True)
  return tuple(sums[:, j] for j in range(4))


def region_stats_bwd(
  cfg,
  predictions,
  targets,
  mask,
  cotangents,
  target_grad=True,
  *,
  interpret,
  block_rows=None,
):
  """`(d_predictions, d_targets)` (see `pel_jax._pallas.region_stats_bwd`)."""
  view = view_of(predictions.shape, predictions.dtype, block_rows)
  dtype = _numerics.compute_dtype(predictions.dtype)
  arrays, specs = _operands(view, predictions, targets, mask)
  has_mask = len(arrays) == 3
  float_targets = target_grad and not jnp.issubdtype(targets.dtype, jnp.integer)
  b, classes = predictions.shape[0], predictions.shape[-1]
  ct_shape = [b, 1, 1, 1]
  ct_shape[view.class_axis] = classes
  cts = [
    jnp.broadcast_to(jnp.asarray(c, dtype), (b, classes)).reshape(ct_shape)
    for c in cotangents
  ]
  ct_spec = pl.BlockSpec((1, *ct_shape[1:]), lambda g, j, i: (g, 0, 0, 0))
  axis = view.class_axis - 1

  def kernel(*refs):
    x_ref, t_ref = refs[:2]
    m_ref = refs[2] if has_mask else None
    ct = tuple(r[0] for r in refs[2 + has_mask : 6 + has_mask])
    outs = refs[6 + has_mask :]
    p, g, w, p_n = _block_terms(cfg, view, dtype, x_ref, t_ref, m_ref)
    grad, d_g = pullback(cfg, p, g, w, p_n, ct, axis, float_targets)
    outs[0][0] = grad.astype(outs[0].dtype)
    if float_targets:
      outs[1][0] = d_g.astype(outs[1].dtype)

  out_shape = [jax.ShapeDtypeStruct(view.shape, predictions.dtype)]
  if float_targets:
    out_shape.append(jax.ShapeDtypeStruct(view.shape, targets.dtype))
  grads = _call(
    kernel,
    tuple(out_shape),
    view,
    specs + [ct_spec] * 4,
    (specs[0],) * len(out_shape),
    ("parallel", "parallel", "parallel"),
    interpret,
  )(*arrays, *cts)
  d_predictions = from_view(view, grads[0], predictions.shape)
  d_targets = (
    from_view(view, grads[1], targets.shape) if float_targets else None
  )
  return d_predictions, d_targets

"""Pallas kernels of the PEL core's per-class sums and of their pullback.

Experimental and private: no loss uses this module, and no platform uses it
by default. It has never run on a GPU or TPU; it is compiled for both
without a device (tests/pallas_test.py, benchmarks/bench_pallas.py), so that
the fused forward and backward can be timed there against the XLA core. The
interface is that of the XLA core's region sums:

* `region_stats(cfg, predictions, targets, mask)` returns the four per-class
  sums `(TP, sum p, sum g, N)` = `(sum w p g, sum w p, sum w g,
  sum w p^n g)`, each `[G, C]` (G = B, or 1 with `cfg.batch`), in the
  accumulation dtype;
* `region_sums(cfg, predictions, targets, mask)`: the two above as one
  differentiable function with `pel_jax._core.region_sums`'s interface
  (a `RegionStats`; for the options the kernels have), so that a loss can
  swap one for the other;
* `region_stats_bwd(cfg, predictions, targets, mask, stats, cotangent)`
  returns `(d_predictions, d_targets)` for a cotangent of those four sums
  (a 4-tuple, or any object with fields `tp`, `sum_p`, `sum_g`, `numer`),
  chained through the activation as `pel_jax._core`'s backward is
  (`d_targets` is None for integer ids).

Two forms, chosen at lowering time: on TPU the Mosaic kernels of
`pel_jax._pallas_tpu` (pixels on the lanes, in the TPU's own HBM layout of
the logits); on GPU the Triton kernels below. On the CPU the TPU form runs
in Pallas's interpret mode; `form="triton"` or `form="tpu"` picks one form's
interpret mode anywhere (tests).

`cfg` needs the fields `exponent`, `activation`, `batch` and `ignore_index`
(`pel_jax._core`'s configurations have them); the squared and soft-label
sums are not implemented here and raise NotImplementedError.

Shapes and masks follow `pel_jax._core`: predictions `[B, *S, C]`, targets
`[B, *S, C]` (float) or `[B, *S]` (integer ids; `cfg.ignore_index` excluded,
ids outside `[0, C)` match no class), mask `[B, *S]` bool or None. Inputs are
validated by `pel_jax._loss`, not here. Cross-device sums (`cfg.axis_name`)
are the caller's.

The Triton form views the arrays as `[G, P, C]` (P pixels per group) and cuts
them into blocks of R pixels; one forward program loops over 8 blocks and
writes their partial sums `[4, C]` (then summed by XLA: no cross-program
accumulation, which Triton's parallel grid would not allow), one pullback
program writes one block's gradient. Triton needs every block to hold a power-of-two number of
elements, so a block spans the classes rounded up to a power of two and R
pixels; blocks overhang the unpadded arrays (`[G, P, C]` is a bitcast of
`[B, *S, C]` on a GPU), and masked loads read 0 past their ends (padded
classes get no probability and no target) while masked stores write
nothing there. On a TPU this layout would force a relayout copy of the
logits with the classes padded to 128 lanes, which is why the TPU has a
form of its own.
"""

from __future__ import annotations

import functools
import math

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton
import jax.numpy as jnp

from pel_jax import _numerics
from pel_jax import _pallas_tpu
from pel_jax import _sums

# Elements of one [R, C] block: a Triton program holds it in registers.
_BLOCK_ELEMENTS = 4096
# Rows per block are a multiple of this (TPU: 8 sublanes of float32).
_MIN_ROWS = 8
# Blocks summed by one program of the forward.
_CHUNKS = 8


def _next_power_of_2(n: int) -> int:
  return 1 << max(0, n - 1).bit_length()


class _Layout:
  """Static sizes of one call: groups G, pixels P, classes C and padded."""

  def __init__(
    self, cfg, shape: tuple[int, ...], block_rows: int | None, chunks=1
  ):
    self.classes = shape[-1]
    pixels = math.prod(shape[:-1])
    self.groups = 1 if cfg.batch else shape[0]
    self.pixels = pixels // self.groups
    self.padded_classes = _next_power_of_2(self.classes)
    rows = block_rows or max(_MIN_ROWS, _BLOCK_ELEMENTS // self.padded_classes)
    rows = min(rows, max(_MIN_ROWS, _next_power_of_2(self.pixels)))
    self.rows = rows
    # Blocks of R pixels that one program loops over (a power of two).
    self.chunks = min(chunks, _next_power_of_2(-(-self.pixels // rows)))
    self.blocks = -(-self.pixels // (rows * self.chunks))


def _as_blocks(layout: _Layout, x: jax.Array) -> jax.Array:
  """`[B, *S(, C)]` -> `[G, P, C or 1]` (a bitcast: nothing is padded)."""
  return x.reshape(layout.groups, layout.pixels, -1)


def _operands(cfg, layout, predictions, targets, mask):
  """Blocked inputs and their BlockSpecs: predictions, targets[, mask]."""
  integer = jnp.issubdtype(targets.dtype, jnp.integer)
  width = layout.padded_classes
  rows = layout.rows * layout.chunks
  wide = pl.BlockSpec((1, rows, width), lambda g, i: (g, i, 0))
  narrow = pl.BlockSpec((1, rows, 1), lambda g, i: (g, i, 0))
  arrays = [_as_blocks(layout, predictions)]
  specs = [wide]
  if integer:
    arrays.append(_as_blocks(layout, targets.astype(jnp.int32)))
    specs.append(narrow)
  else:
    arrays.append(_as_blocks(layout, targets))
    specs.append(wide)
  if mask is not None:
    arrays.append(_as_blocks(layout, mask.astype(jnp.int32)))
    specs.append(narrow)
  return arrays, specs


def _load(ref, mask):
  """Block `ref[0]`, 0 where `mask` (broadcastable to it) is False."""
  mask = jnp.broadcast_to(mask, ref.shape[1:])[None]
  return pltriton.load(ref, mask=mask, other=0)[0]


def _store(ref, value, mask):
  mask = jnp.broadcast_to(mask, ref.shape[1:])[None]
  pltriton.store(ref, value.astype(ref.dtype)[None], mask=mask)


class _Block:
  """Per-pixel terms of one `[R, C]` block inside a kernel."""

  def __init__(self, cfg, layout, dtype, x_ref, t_ref, m_ref, block=None):
    """`block`: the index of the block of R pixels (the program's)."""
    rows, width = layout.rows, layout.padded_classes
    block = pl.program_id(1) if block is None else block
    row = block * rows + lax.broadcasted_iota(jnp.int32, (rows, 1), 0)
    col = lax.broadcasted_iota(jnp.int32, (1, width), 1)
    real = col < layout.classes
    keep = row < layout.pixels
    # Blocks overhang the arrays (padded classes, the last pixels): masked
    # loads read 0 there, and masked stores write nothing.
    self.inside = keep & real
    if m_ref is not None:
      keep = keep & (_load(m_ref, keep) != 0)
    t = _load(t_ref, keep if t_ref.shape[-1] == 1 else self.inside)
    if jnp.issubdtype(t.dtype, jnp.integer):
      if cfg.ignore_index is not None:
        keep = keep & (t != cfg.ignore_index)
      g = ((t == col) & keep).astype(dtype)  # Padded classes are dropped.
    else:
      g = jnp.where(keep, t.astype(dtype), 0)
    # Excluded pixels read 0 before any arithmetic (double-`where` rule).
    x = jnp.where(keep, _load(x_ref, self.inside).astype(dtype), 0)
    self.p, self.p_n = _pallas_tpu.activate(cfg, x, -1, real)
    self.g = g
    self.w = keep.astype(dtype)


def _triton_call(kernel, out_shape, grid, in_specs, out_specs, interpret):
  return pl.pallas_call(
    kernel,
    out_shape=out_shape,
    grid=grid,
    in_specs=in_specs,
    out_specs=out_specs,
    **(
      dict(interpret=True)
      if interpret
      else dict(compiler_params=pltriton.CompilerParams())
    ),
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


def _triton_stats(cfg, predictions, targets, mask, *, interpret, block_rows):
  """The Triton form of `region_stats`."""
  # A program sums several blocks: fewer partial sums written out.
  layout = _Layout(cfg, predictions.shape, block_rows, chunks=_CHUNKS)
  dtype = _numerics.compute_dtype(predictions.dtype)
  arrays, specs = _operands(cfg, layout, predictions, targets, mask)
  has_mask = mask is not None
  rows = layout.rows

  def kernel(*refs):
    x_ref, t_ref = refs[:2]
    m_ref = refs[2] if has_mask else None
    out_refs = refs[2 + has_mask :]
    # Outside the loop: the interpreter reads program ids at the top only.
    first = pl.program_id(1) * layout.chunks

    def add_chunk(k, acc):
      def chunk(ref):
        return None if ref is None else ref.at[:, pl.ds(k * rows, rows), :]

      px = _Block(
        cfg, layout, dtype, chunk(x_ref), chunk(t_ref), chunk(m_ref), first + k
      )
      terms = (px.p * px.g, px.p * px.w, px.g, px.p_n * px.g)
      return tuple(a + jnp.sum(t, axis=0) for a, t in zip(acc, terms))

    zero = jnp.zeros((layout.padded_classes,), dtype)
    sums = lax.fori_loop(0, layout.chunks, add_chunk, (zero,) * 4)
    for ref, total in zip(out_refs, sums):
      ref[...] = total.reshape(ref.shape)

  part = jax.ShapeDtypeStruct(
    (layout.groups, layout.blocks, 1, layout.padded_classes), dtype
  )
  part_spec = pl.BlockSpec(
    (1, 1, 1, layout.padded_classes), lambda g, i: (g, i, 0, 0)
  )
  parts = _triton_call(
    kernel,
    (part,) * 4,
    (layout.groups, layout.blocks),
    specs,
    (part_spec,) * 4,
    interpret,
  )(*arrays)
  return tuple(s.sum(axis=1)[:, 0, : layout.classes] for s in parts)


def _triton_bwd(
  cfg,
  predictions,
  targets,
  mask,
  cotangent,
  target_grad,
  *,
  interpret,
  block_rows,
):
  """The Triton form of `region_stats_bwd`."""
  layout = _Layout(cfg, predictions.shape, block_rows)
  dtype = _numerics.compute_dtype(predictions.dtype)
  arrays, specs = _operands(cfg, layout, predictions, targets, mask)
  width = layout.padded_classes
  has_mask = mask is not None
  float_targets = target_grad and not jnp.issubdtype(targets.dtype, jnp.integer)
  # [G, C] cotangents -> [G, 1, padded C]; padded classes get 0.
  cts = [
    jnp.pad(
      jnp.asarray(c, dtype).reshape(layout.groups, 1, -1),
      ((0, 0), (0, 0), (0, width - layout.classes)),
    )
    for c in cotangent
  ]
  ct_spec = pl.BlockSpec((1, 1, width), lambda g, i: (g, 0, 0))

  def kernel(*refs):
    x_ref, t_ref = refs[:2]
    m_ref = refs[2] if has_mask else None
    cts = tuple(r[0] for r in refs[2 + has_mask : 6 + has_mask])
    out_refs = refs[6 + has_mask :]
    px = _Block(cfg, layout, dtype, x_ref, t_ref, m_ref)
    grad, d_g = _pallas_tpu.pullback(
      cfg, px.p, px.g, px.w, px.p_n, cts, -1, float_targets
    )
    _store(out_refs[0], grad, px.inside)
    if float_targets:
      _store(out_refs[1], d_g, px.inside)

  def full(x):
    return jax.ShapeDtypeStruct(
      (layout.groups, layout.pixels, layout.classes), x.dtype
    )

  wide = specs[0]
  out_shape = (full(predictions),)
  if float_targets:
    out_shape += (full(targets),)
  grads = _triton_call(
    kernel,
    out_shape,
    (layout.groups, layout.blocks),
    specs + [ct_spec] * 4,
    (wide,) * len(out_shape),
    interpret,
  )(*arrays, *cts)

  d_predictions = grads[0].reshape(predictions.shape)
  d_targets = grads[1].reshape(targets.shape) if float_targets else None
  return d_predictions, d_targets


def _dispatch(which: int, form, block_rows, *args):
  """One form's interpret mode (`form` given), else the platform's form."""
  tpu = (_pallas_tpu.region_stats, _pallas_tpu.region_stats_bwd)[which]
  triton = (_triton_stats, _triton_bwd)[which]
  if form is not None:
    if form not in ("triton", "tpu"):
      raise ValueError(f"form must be 'triton', 'tpu' or None, got {form!r}")
    fn = triton if form == "triton" else tpu
    return fn(*args, interpret=True, block_rows=block_rows)

  def run(fn, interpret):
    return lambda: fn(*args, interpret=interpret, block_rows=block_rows)

  return lax.platform_dependent(
    cuda=run(triton, False),
    rocm=run(triton, False),
    tpu=run(tpu, False),
    default=run(tpu, True),
  )


def region_stats(
  cfg,
  predictions,
  targets,
  mask,
  *,
  block_rows: int | None = None,
  form: str | None = None,
):
  """The four per-class sums `(TP, sum p, sum g, N)`, each `[G, C]`.

  `block_rows` overrides the rows per block: pixels per block in the Triton
  form (a power of two, at least 8), rows of the spatial view in the TPU
  form. `form` ("triton" or "tpu") runs that form in interpret mode.
  """
  _check_supported(cfg)
  return _dispatch(0, form, block_rows, cfg, predictions, targets, mask)


def region_stats_bwd(
  cfg,
  predictions,
  targets,
  mask,
  stats,
  cotangent,
  *,
  block_rows: int | None = None,
  form: str | None = None,
  target_grad: bool = True,
):
  """`(d_predictions, d_targets)` of `region_stats` for a cotangent of it.

  With `(a, b, c, d)` the cotangents of `(TP, sum p, sum g, N)`, per pixel
  and class (w: the pixel's weight):

    dL/dp = w (a g + b + n d p^(n-1) g),  dL/dg = w (a p + c + d p^n),

  then through the activation in the form the XLA core uses: with
  `u = p dL/dp` (written with p^n, safe at p = 0 for n < 1),
  `u (1 - p)` for sigmoid and `u - p sum_c u` for softmax. The sums' pullback
  is linear in the cotangent and needs no value of `stats` (taken for the
  interface's sake). `target_grad=False` treats float targets as constants:
  no target gradient is written (`d_targets` is None).
  """
  del stats
  _check_supported(cfg)
  cts = _four(cotangent)
  return _dispatch(
    1, form, block_rows, cfg, predictions, targets, mask, cts, target_grad
  )


_NOT_IN_KERNELS = ("squared", "soft_labels", "cross_entropy", "axis_name")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def region_sums(cfg, predictions, targets, mask) -> _sums.RegionStats:
  """`pel_jax._core.region_sums` on the Pallas kernels.

  Raises NotImplementedError for the options whose sums the kernels lack
  (squared, soft labels, cross-entropy) and for `axis_name` (the
  cross-device sums are not wired here).
  """
  for option in _NOT_IN_KERNELS:
    if getattr(cfg, option, None):
      raise NotImplementedError(
        f"pel_jax._pallas.region_sums: {option} is not implemented"
      )
  return _sums.RegionStats(*region_stats(cfg, predictions, targets, mask))


def _region_sums_fwd(cfg, predictions, targets, mask):
  # Symbolic zeros: the primals say whether they need a gradient, so that
  # constant float targets get no target gradient written. Residuals: the
  # inputs only; the pullback recomputes the activation.
  x, t = predictions.value, targets.value
  m = None if mask is None else mask.value
  stats = region_sums(cfg, x, t, m)
  return stats, (x, t, m, targets.perturbed)


def _region_sums_bwd(cfg, residuals, cotangent):
  predictions, targets, mask, target_grad = residuals
  cts = tuple(
    jnp.zeros(c.shape, c.dtype)
    if isinstance(c, jax.custom_derivatives.SymbolicZero)
    else c
    for c in _four(cotangent)
  )
  d_predictions, d_targets = region_stats_bwd(
    cfg, predictions, targets, mask, None, cts, target_grad=target_grad
  )
  return d_predictions, d_targets, None


region_sums.defvjp(_region_sums_fwd, _region_sums_bwd, symbolic_zeros=True)

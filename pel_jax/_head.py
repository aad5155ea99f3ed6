"""The last 1×1 convolution fused into the loss: the logits never exist.

The loss is a function of per-class sums over pixels (`region_stats`), so
it takes two passes over spatial chunks of the features: the forward adds
up the sums of each chunk's logits; the backward recomputes each chunk's
logits, turns the cotangent of the sums into that chunk's logit gradient
(`region_stats`'s own fused backward) and folds it into the gradients of
the features, the kernel and the bias. No `[B, *S, C]` array is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any, NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _core
from pel_jax import _numerics
from pel_jax._loss import _options
from pel_jax._region_stats import loss_from_stats
from pel_jax._region_stats import region_stats

ArrayLike = jax.typing.ArrayLike

# The default chunk, when `chunk_size` is None: at most this many
# (full-resolution) pixels, batch included, and at most this many logits and
# features, batch x pixels x (C + D) (the chunk's temporaries are a few
# arrays of that size). CPU: about the fastest of 512 to 16384 pixels at 2,
# 16 and 118 classes, D = 32, 64^3 voxels (benchmarks/bench_head.py);
# accelerators: untuned, large enough to fill the chip.
_CHUNK = {"cpu": (2048, 1 << 20)}
_CHUNK_ACCELERATOR = (1 << 15, 1 << 21)


class _HeadConfig(NamedTuple):
  """Static configuration of the fused head (a custom_vjp nondiff arg)."""

  chunk: int  # pixels per sample and chunk
  overlap: bool  # the last chunk starts early and overlaps its predecessor
  options: tuple  # `region_stats` options, sorted (key, value) pairs
  factors: tuple  # nearest upsampling per spatial axis; () for none


def head_loss(
  features: ArrayLike,
  kernel: ArrayLike,
  bias: ArrayLike,
  targets: ArrayLike,
  *,
  chunk_size: int | None = None,
  upsample: int | tuple[int, ...] | None = None,
  **loss_options: Any,
) -> jax.Array:
  r"""`pel_loss` of a 1×1 head's logits, without ever building the logits.

  Equal, value and gradients (features, kernel, bias and float targets), to

  .. code-block:: python

    pel_loss(features @ kernel + bias, targets, from_logits=True,
             **loss_options)

  but the `[B, *S, C]` logits, their probabilities and their gradient never
  exist: the pixels are taken in chunks of ``chunk_size`` per sample, the
  forward adds up each chunk's region sums (`region_stats`), and the
  backward recomputes each chunk's logits and turns the cotangent of the
  sums into the gradients:

  .. math::
    \frac{\partial L}{\partial W} = \sum_k F_k^\top Z_k, \quad
    \frac{\partial L}{\partial b} = \sum_k \mathbf{1}^\top Z_k, \quad
    \frac{\partial L}{\partial F_k} = Z_k W^\top

  with :math:`F_k` the features of chunk :math:`k` and :math:`Z_k` the
  gradient of its logits. The memory of a step no longer grows with the
  number of classes times the volume (the features' gradient, the size of
  the features, is an output); the logits are computed twice. With C <= D
  the logits are no larger than the features: there the plain head is as
  small and on CPU faster (``benchmarks/README.md``).

  Args:
    features: float `[B, *spatial, D]`, the input of the 1×1 head (the last
      decoder stage), channels last.
    kernel: `[D, C]`, the head's weights (Flax ``nnx.Conv`` /
      ``nnx.Linear`` ``kernel`` with the spatial 1s squeezed out).
    bias: `[C]`, the head's bias.
    targets: integer class ids `[B, *spatial]`, or float targets
      `[B, *spatial, C]`, as in `pel_loss` (at the full resolution with
      ``upsample``).
    chunk_size: pixels per sample in one chunk (static); with ``upsample``,
      slices of the first spatial axis of ``features``. None picks, over
      the whole batch, 2048 pixels and at most :math:`2^{20}` logits and
      features on CPU, :math:`2^{15}` pixels and at most :math:`2^{21}` on
      accelerators (by `jax.default_backend()`). It need not divide the
      pixel count: the last chunk then overlaps the one before it, and its
      repeated pixels are left out of the sums.
    upsample: None, or an integer factor (one, or one per spatial axis)
      for low-resolution features: the logits are repeated (nearest
      upsampling, ``jnp.repeat`` along each spatial axis, equal to
      ``jax.image.resize(..., "nearest")`` for integer factors) to the
      resolution of ``targets`` and ``where``, inside each chunk, so the
      full-resolution logits never exist either (a 1×1 convolution and
      the repetition commute). Bilinear upsampling is not supported.
    **loss_options: any keyword option of `pel_loss` (``where``,
      ``ignore_index``, ``batch``, ``axis_name``, ``ce_weight``, ...).
      ``from_logits`` is implied (True); False raises.

  Returns:
    The loss, exactly as `pel_loss` returns it.

  Raises:
    ValueError: the shapes of ``features``, ``kernel``, ``bias`` and
      ``targets`` do not fit together, or ``from_logits=False``.
    TypeError: a non-float input or a bad ``chunk_size``.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pel_jax import head_loss, pel_loss
    >>> f = jnp.linspace(-1.0, 1.0, 2 * 6 * 6 * 4).reshape(2, 6, 6, 4)
    >>> w = jnp.linspace(-0.5, 0.5, 4 * 3).reshape(4, 3)
    >>> b = jnp.zeros(3)
    >>> ids = jnp.arange(2 * 6 * 6).reshape(2, 6, 6) % 3
    >>> fused = head_loss(f, w, b, ids, chunk_size=8, ce_weight=1.0)
    >>> plain = pel_loss(f @ w + b, ids, from_logits=True, ce_weight=1.0)
    >>> bool(jnp.allclose(fused, plain))
    True
  """
  return loss_from_stats(
    head_stats(
      features,
      kernel,
      bias,
      targets,
      chunk_size=chunk_size,
      upsample=upsample,
      **loss_options,
    ),
    **_loss_options(loss_options),
  )


def head_stats(
  features: ArrayLike,
  kernel: ArrayLike,
  bias: ArrayLike,
  targets: ArrayLike,
  *,
  chunk_size: int | None = None,
  upsample: int | tuple[int, ...] | None = None,
  **options: Any,
) -> _core.RegionStats:
  r"""`region_stats` of a 1×1 head's logits, in chunks (see `head_loss`).

  Equal to ``region_stats(features @ kernel + bias, targets,
  from_logits=True, **options)``, with its gradient computed chunk by chunk:
  ``loss_from_stats(head_stats(...), **options)`` is `head_loss`, and the
  sums of micro-batches, tiles or devices add up as `region_stats`' do
  (`accumulated_value_and_grad`, ``axis_name``).

  Args:
    features: float `[B, *spatial, D]`.
    kernel: `[D, C]`.
    bias: `[C]`.
    targets: integer ids `[B, *spatial]` or float `[B, *spatial, C]`.
    chunk_size: as in `head_loss`.
    upsample: as in `head_loss`.
    **options: as in `head_loss`.

  Returns:
    A `RegionStats`, as `region_stats` returns it.

  Examples:
    Two halves of a batch, or two devices, add up:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pel_jax import head_loss, head_stats, loss_from_stats
    >>> f = jnp.linspace(-1.0, 1.0, 4 * 5 * 2).reshape(4, 5, 2)
    >>> w, b = jnp.array([[1.0, -1.0], [0.5, 2.0]]), jnp.zeros(2)
    >>> ids = jnp.array([[0, 1, 1, 0, 1]] * 4)
    >>> o = dict(batch=True, ce_weight=1.0)
    >>> halves = [head_stats(f[i:i + 2], w, b, ids[i:i + 2], **o)
    ...           for i in (0, 2)]
    >>> total = jax.tree.map(jnp.add, *halves)
    >>> bool(jnp.allclose(loss_from_stats(total, from_logits=True, **o),
    ...                   head_loss(f, w, b, ids, **o)))
    True
  """
  o = _loss_options(options)
  features, kernel, bias, targets = (
    jnp.asarray(x) for x in (features, kernel, bias, targets)
  )
  where = o["where"]
  where = None if where is None else jnp.asarray(where)
  _check_head(features, kernel, bias)
  spatial = features.shape[1:-1]
  factors = _upsample_factors(upsample, spatial)
  full = tuple(s * r for s, r in zip(spatial, factors or (1,) * len(spatial)))
  logits = jax.ShapeDtypeStruct(
    features.shape[:1] + full + kernel.shape[-1:],
    jnp.result_type(features, kernel, bias),
  )
  if factors and np.shape(targets)[1 : 1 + len(full)] != full:
    raise ValueError(
      f"`targets` {np.shape(targets)} must be at the resolution of"
      f" `features` {features.shape} times `upsample={upsample!r}`: spatial"
      f" shape {full}."
    )
  # Every check of `region_stats` on the whole logits (their size bounds
  # the hyperparameters); the named axis exists only inside the map.
  jax.eval_shape(
    functools.partial(region_stats, **{**o, "where": None, "axis_name": None}),
    logits,
    targets,
  )
  _checks.check_mask(logits, where)
  batch = features.shape[0]
  if factors:
    # [B, X * r1, ...] -> [B, X, r1, ...]: a free reshape, chunked along X.
    view = (batch,) + tuple(i for sr in zip(spatial, factors) for i in sr)
    row_pixels = int(np.prod(spatial[1:]))
  else:
    view = (batch, int(np.prod(spatial)))
    features = features.reshape(view + features.shape[-1:])
    row_pixels = 1
  rows = features.shape[1]
  chunk = _chunk_rows(
    chunk_size, batch, rows, row_pixels, kernel.shape, factors
  )
  stats_options = {
    k: v for k, v in o.items() if k not in ("where", "class_weights")
  }
  cfg = _HeadConfig(
    chunk=chunk,
    overlap=rows % chunk != 0,
    options=tuple(sorted(stats_options.items())),
    factors=factors,
  )
  if targets.dtype == jnp.bool_:
    targets = targets.astype(logits.dtype)
  return _head_sums(
    cfg,
    features,
    kernel,
    bias,
    targets.reshape(view + targets.shape[1 + len(spatial) :]),
    None if where is None else where.reshape(view),
  )


def deep_supervision_loss(
  heads: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike]],
  targets: ArrayLike,
  *,
  weights: Sequence[float] | None = None,
  chunk_size: int | None = None,
  **loss_options: Any,
) -> jax.Array:
  r"""Deep supervision (nnU-Net): a fused `head_loss` per decoder scale.

  One 1×1 head per decoder scale :math:`s` (features :math:`F_s`, kernel
  :math:`W_s`, bias :math:`b_s`, the highest resolution first), each scored
  against the targets downsampled to its resolution by nearest neighbour:

  .. math::
    L = \sum_s w_s \, \mathrm{head\_loss}(F_s, W_s, b_s, T_{\downarrow r_s}),
    \qquad T_{\downarrow r}[i] = T[r\,i + \lfloor r / 2 \rfloor]

  per spatial axis, with :math:`r_s` the targets' size over :math:`F_s`'
  (an integer per axis): the pixel at the centre of each :math:`r`-block,
  half-pixel centres as ``jax.image.resize(..., "nearest")`` and torch's
  ``interpolate(mode="nearest-exact")``, which nnU-Net v2's
  ``DownsampleSegForDSTransform`` (batchgeneratorsv2) uses. ``where`` is
  downsampled the same way. By default :math:`w_s \propto 2^{-s}`,
  normalised to sum to 1 (nnU-Net also sets the lowest scale's weight to
  0: pass ``weights`` for that). No scale's logits are ever built.

  Args:
    heads: one ``(features, kernel, bias)`` per scale, as `head_loss` takes
      them: `[B, *S_s, D_s]`, `[D_s, C]`, `[C]`.
    targets: integer ids `[B, *S]` or float targets `[B, *S, C]` at the
      full resolution; each :math:`S_s` must divide :math:`S` axis by axis.
    weights: one static number >= 0 per head, used as given; None:
      :math:`2^{-s} / \sum_k 2^{-k}`. A head of weight 0 is skipped.
    chunk_size: as in `head_loss`, for every head.
    **loss_options: any option of `head_loss` but ``upsample`` (``where``
      at the full resolution).

  Returns:
    The weighted sum of the heads' losses.

  Raises:
    ValueError: no head, a head that is not three arrays, a scale that does
      not divide the targets', bad ``weights``, or ``upsample``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import deep_supervision_loss, head_loss
    >>> ids = jnp.arange(2 * 8 * 8).reshape(2, 8, 8) % 3
    >>> full = (jnp.ones((2, 8, 8, 4)), jnp.eye(4, 3), jnp.zeros(3))
    >>> half = (jnp.ones((2, 4, 4, 5)), jnp.eye(5, 3), jnp.zeros(3))
    >>> loss = deep_supervision_loss([full, half], ids, ce_weight=1.0)
    >>> want = (2 * head_loss(*full, ids, ce_weight=1.0)
    ...         + head_loss(*half, ids[:, 1::2, 1::2], ce_weight=1.0)) / 3
    >>> bool(jnp.allclose(loss, want))
    True
  """
  heads = list(heads)
  if not heads or any(len(h) != 3 for h in heads):
    raise ValueError(
      "`heads` must be a non-empty sequence of (features, kernel, bias),"
      f" got {len(heads)} heads of lengths {[len(h) for h in heads]}."
    )
  if "upsample" in loss_options:
    raise ValueError(
      "deep_supervision_loss downsamples the targets to each head's"
      " resolution: `upsample` is not an option."
    )
  if weights is None:
    weights = 0.5 ** np.arange(len(heads))
    weights = weights / weights.sum()
  weights = np.asarray(weights, np.float64)
  if weights.shape != (len(heads),) or not np.all(
    np.isfinite(weights) & (weights >= 0)
  ):
    raise ValueError(
      f"`weights` must be {len(heads)} finite numbers >= 0, one per head,"
      f" got {weights.tolist()}."
    )
  targets = jnp.asarray(targets)
  where = loss_options.pop("where", None)
  total = 0.0
  for s, ((features, kernel, bias), weight) in enumerate(zip(heads, weights)):
    if weight == 0:
      continue
    spatial = np.shape(features)[1:-1]
    factors = _downsample_factors(np.shape(targets), spatial, s)
    loss = head_loss(
      features,
      kernel,
      bias,
      _downsample(targets, factors),
      chunk_size=chunk_size,
      where=None if where is None else _downsample(where, factors),
      **loss_options,
    )
    total = total + float(weight) * loss
  return total


def _downsample_factors(target_shape, spatial, s: int) -> tuple[int, ...]:
  full = tuple(target_shape[1 : 1 + len(spatial)])
  if len(full) != len(spatial) or any(
    n < 1 or t % n for t, n in zip(full, spatial)
  ):
    raise ValueError(
      f"The spatial shape {tuple(spatial)} of `heads[{s}]`'s features must"
      " divide that of `targets`, axis by axis (nearest downsampling by an"
      f" integer factor), got `targets` of shape {tuple(target_shape)}."
    )
  return tuple(t // n for t, n in zip(full, spatial))


def _downsample(x, factors):
  """The centre pixel of each block (half-pixel centres), per spatial axis."""
  return x[(slice(None),) + tuple(slice(r // 2, None, r) for r in factors)]


def _upsample_factors(upsample, spatial) -> tuple[int, ...]:
  """Static integer factors per spatial axis; () without upsampling."""
  if upsample is None:
    return ()
  factors = (upsample,) * len(spatial) if np.ndim(upsample) == 0 else upsample
  if len(factors) != len(spatial) or not all(
    isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1
    for r in factors
  ):
    raise ValueError(
      "`upsample` must be None, an int >= 1 or one int >= 1 per spatial"
      f" axis of `features` ({len(spatial)}), got {upsample!r}."
    )
  factors = tuple(int(r) for r in factors)
  return () if all(r == 1 for r in factors) else factors


def _loss_options(options: dict[str, Any]) -> dict[str, Any]:
  """`pel_loss`'s options for logits; ``from_logits=False`` raises."""
  if options.get("from_logits", True) is not True:
    raise ValueError(
      "A 1×1 head computes logits: `from_logits` must be True or left out,"
      f" got {options['from_logits']!r}."
    )
  for name in ("ce_class_weights", "ce_pos_weight"):
    if options.get(name) is not None:
      # Its CE is a plain pass over the logits, which the head never builds.
      raise ValueError(
        f"`{name}` (the weighted cross-entropy) is not fused into the 1×1"
        " head: add `pel_jax.cross_entropy` of the logits, or use the plain"
        " head with `pel_loss`."
      )
  return {**_options(options, "head_loss"), "from_logits": True}


def _check_head(features, kernel, bias) -> None:
  for name, x in (("features", features), ("kernel", kernel), ("bias", bias)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"`{name}` must be floating point, got {x.dtype}.")
  if features.ndim < 3:
    raise ValueError(
      "`features` must be [batch, *spatial, channels] with at least one"
      f" spatial axis, got shape {features.shape}."
    )
  if kernel.ndim != 2 or kernel.shape[0] != features.shape[-1]:
    raise ValueError(
      f"`kernel` must be [D, C] with D = {features.shape[-1]}, the channels"
      f" (last axis) of `features` {features.shape}, got shape"
      f" {kernel.shape}."
    )
  if bias.shape != kernel.shape[-1:]:
    raise ValueError(
      f"`bias` must have shape ({kernel.shape[-1]},), one value per class"
      f" of `kernel` {kernel.shape}, got shape {bias.shape}."
    )


def _chunk_rows(
  chunk_size, batch: int, rows: int, row_pixels: int, kernel_shape, factors
) -> int:
  """Rows (pixels, or slices of the first axis with `upsample`) per chunk."""
  if chunk_size is None:
    pixels, elements = _CHUNK.get(jax.default_backend(), _CHUNK_ACCELERATOR)
    # A row: `row_pixels` pixels of D features, repeated to C logits each
    # at `prod(factors)` full-resolution pixels.
    features, classes = kernel_shape
    full = batch * row_pixels * int(np.prod(factors))
    per_row = full * classes + batch * row_pixels * features
    chunk_size = max(1, min(pixels // full, elements // per_row))
    if not factors:
      chunk_size = max(8, chunk_size // 8 * 8)
  elif isinstance(chunk_size, bool) or not isinstance(
    chunk_size, (int, np.integer)
  ):
    raise TypeError(
      f"`chunk_size` must be a Python int or None, got {chunk_size!r}."
    )
  elif chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
  return min(int(chunk_size), rows)


def _chunk(cfg: _HeadConfig, i, features, targets, where):
  """Chunk `i`: its start, features, targets and mask (None: all pixels).

  The last chunk of an uneven split starts early, at P - K, so that every
  chunk has K pixels; the pixels it shares with the chunk before are masked.
  """
  pixels = features.shape[1]
  nominal = i * cfg.chunk
  start = jnp.minimum(nominal, pixels - cfg.chunk)

  def cut(x):
    return (
      None if x is None else lax.dynamic_slice_in_dim(x, start, cfg.chunk, 1)
    )

  f, t, w = cut(features), cut(targets), cut(where)
  if cfg.overlap:
    pixels = t.shape[: t.ndim - int(jnp.issubdtype(t.dtype, jnp.floating))]
    new = start + jnp.arange(cfg.chunk) >= nominal
    new = new.reshape((1, -1) + (1,) * (len(pixels) - 2))
    w = jnp.broadcast_to(new if w is None else w & new, pixels)
  return start, f, t, w


def _logits(f, kernel, bias):
  return jnp.dot(f, kernel) + bias


def _repeat(cfg: _HeadConfig, z):
  """Logits repeated `cfg.factors` times along each spatial axis (nearest).

  `[B, k, Y, Z, C]` -> `[B, k, r1, Y, r2, Z, r3, C]`, the layout of the
  targets' view: only the chunk's full-resolution logits exist.
  """
  if not cfg.factors:
    return z
  spatial = z.shape[1:-1]
  ones = [i for s in spatial for i in (s, 1)]
  full = [i for sr in zip(spatial, cfg.factors) for i in sr]
  z = z.reshape(z.shape[:1] + tuple(ones) + z.shape[-1:])
  return jnp.broadcast_to(z, z.shape[:1] + tuple(full) + z.shape[-1:])


def _stats_fn(cfg: _HeadConfig, w):
  return functools.partial(
    region_stats, **{**dict(cfg.options), "axis_name": None, "where": w}
  )


def _num_chunks(cfg: _HeadConfig, features) -> int:
  return -(-features.shape[1] // cfg.chunk)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _head_sums(cfg: _HeadConfig, features, kernel, bias, targets, where):
  """The region sums of the logits, chunk by chunk; global with batch."""
  o = dict(cfg.options)

  def add(i, total):
    _, f, t, w = _chunk(cfg, i, features, targets, where)
    stats = _stats_fn(cfg, w)(_repeat(cfg, _logits(f, kernel, bias)), t)
    return jax.tree.map(jnp.add, total, stats)

  _, f, t, w = _chunk(cfg, 0, features, targets, where)
  shapes = jax.eval_shape(
    _stats_fn(cfg, w), _repeat(cfg, _logits(f, kernel, bias)), t
  )
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  total = lax.fori_loop(0, _num_chunks(cfg, features), add, zeros)
  if o["batch"] and o["axis_name"] is not None:
    # As `region_stats`: global batch sums, each device's own gradient.
    total = lax.psum(total, o["axis_name"])
  return total


def _head_sums_fwd(cfg: _HeadConfig, features, kernel, bias, targets, where):
  total = _head_sums(cfg, features, kernel, bias, targets, where)
  return total, (features, kernel, bias, targets, where)


def _head_sums_bwd(cfg: _HeadConfig, residuals, cotangent):
  features, kernel, bias, targets, where = residuals
  soft = not jnp.issubdtype(targets.dtype, jnp.integer)
  accumulate = _numerics.compute_dtype(jnp.result_type(kernel, bias))

  def step(i, carry):
    d_features, d_kernel, d_bias, d_targets = carry
    start, f, t, w = _chunk(cfg, i, features, targets, where)
    logits = _logits(f, kernel, bias)

    def stats(z, t):
      return _stats_fn(cfg, w)(_repeat(cfg, z), t)

    if soft:
      _, pull = jax.vjp(stats, logits, t)
      d_logits, d_t = pull(cotangent)
    else:
      _, pull = jax.vjp(lambda z: stats(z, t), logits)
      (d_logits,) = pull(cotangent)
    # Masked pixels (`where`, the overlap) have a zero logit gradient, so
    # they add nothing to the kernel and the bias; in the features and the
    # targets the overlap keeps the earlier chunk's values.
    d_kernel = d_kernel + jnp.einsum(
      "...d,...c->dc", f, d_logits, preferred_element_type=accumulate
    )
    d_bias = d_bias + jnp.sum(
      d_logits, tuple(range(d_logits.ndim - 1)), dtype=accumulate
    )
    d_f = jnp.dot(d_logits, kernel.T).astype(features.dtype)
    d_features = _write(cfg, d_features, d_f, start, i)
    if soft:
      d_targets = _write(cfg, d_targets, d_t.astype(targets.dtype), start, i)
    return d_features, d_kernel, d_bias, d_targets

  carry = (
    jnp.zeros_like(features),
    jnp.zeros(kernel.shape, accumulate),
    jnp.zeros(bias.shape, accumulate),
    jnp.zeros_like(targets) if soft else None,
  )
  d_features, d_kernel, d_bias, d_targets = lax.fori_loop(
    0, _num_chunks(cfg, features), step, carry
  )
  return (
    d_features,
    d_kernel.astype(kernel.dtype),
    d_bias.astype(bias.dtype),
    d_targets,
    None,
  )


def _write(cfg: _HeadConfig, out, chunk, start, i):
  """Writes a chunk's gradient; overlapped pixels keep their earlier value."""
  if cfg.overlap:
    old = lax.dynamic_slice_in_dim(out, start, cfg.chunk, 1)
    new = start + jnp.arange(cfg.chunk) >= i * cfg.chunk
    chunk = jnp.where(new.reshape((1, -1) + (1,) * (out.ndim - 2)), chunk, old)
  return lax.dynamic_update_slice_in_dim(out, chunk, start, 1)


_head_sums.defvjp(_head_sums_fwd, _head_sums_bwd)

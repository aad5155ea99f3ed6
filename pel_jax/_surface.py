"""Surface-distance metrics on the device: Hausdorff distance (max and
percentile), average symmetric surface distance and normalised surface Dice.

The surface of a mask is MONAI's: its border pixels, the mask minus its
erosion by the cross-shaped structuring element (SciPy's default, one-pixel
connectivity), pixels beyond the image counting as outside. The distances
from one surface to the other are read off one batched
`distance_transform` of the complements of both surfaces.
"""

from __future__ import annotations

from collections.abc import Sequence
import numbers

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _distance
from pel_jax import _sums

ArrayLike = jax.typing.ArrayLike

_ARRAYS = """
    predictions: the predicted segmentation, integer class ids
      ``[B, *spatial]`` or bool (or 0/1 float) masks ``[B, *spatial, C]``,
      one channel per class (a float mask is its entries above 0.5).
    targets: the reference segmentation, in either form."""

_OPTIONS = """
    num_classes: the number of classes of integer ids, needed when both
      arguments are ids (else the masks' ``C``). With one class, id 1 is
      the foreground, as in the losses.
    include_background: keep class 0 (MONAI's default is False).
    spacing: the pixel size along each spatial axis (default 1), as for
      :func:`distance_transform`; distances are in its units."""


def _doc(func):
  """Fills in the arguments the three metrics share."""
  doc = func.__doc__.replace("    ARRAYS", _ARRAYS[1:])
  func.__doc__ = doc.replace("    OPTIONS", _OPTIONS[1:])
  return func


@_doc
def hausdorff_distance(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  percentile: float | None = None,
  directed: bool = False,
  num_classes: int | None = None,
  include_background: bool = True,
  spacing: Sequence[float] | None = None,
) -> jax.Array:
  r"""Hausdorff distance between the surfaces, per sample and class.

  As MONAI 1.6.1's ``compute_hausdorff_distance``: with :math:`S_p` and
  :math:`S_g` the surfaces (border pixels) of the predicted and target
  masks and :math:`d(x, S)` the Euclidean distance from pixel :math:`x`
  to the nearest pixel of :math:`S`,

  .. math::
    HD = \max\Big(Q_q\{d(x, S_g) : x \in S_p\},\;
      Q_q\{d(y, S_p) : y \in S_g\}\Big),

  where :math:`Q_q` is the maximum, or with ``percentile=q`` the
  :math:`q`-th percentile with linear interpolation (``torch.quantile``,
  ``numpy.percentile``'s default): HD95 is ``percentile=95``. The surface
  is MONAI's (the pixels of the mask with a neighbour outside it along
  an axis, or on the image's edge). DeepMind's ``surface-distance``
  measures between surfels on the pixel corners instead; the two agree on
  its published HD and HD95 cases (``tests/surface_test.py``) but not in
  general.

  Empty masks follow MONAI: a class absent from both the prediction and
  the target is NaN, one absent from only one of them ``+inf`` (DeepMind
  returns ``+inf`` for both).

  Args:
    ARRAYS
    percentile: ``None`` for the maximum, or a number in [0, 100]
      (static). MONAI takes 0 as the maximum too; here 0 is the minimum.
    directed: only the first term, from the prediction's surface to the
      target's (MONAI's ``directed``).
    OPTIONS

  Returns:
    float ``[B, C']`` (float64 under ``jax.enable_x64``), ``C'`` the kept
    classes. Under ``jax.jit`` every argument but the two arrays is
    static; the percentile sorts, with no branch on values.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import hausdorff_distance
    >>> target = jnp.zeros((1, 6, 6), jnp.int32).at[0, 1:3, 1:3].set(1)
    >>> pred = jnp.zeros((1, 6, 6), jnp.int32).at[0, 1:4, 1:3].set(1)
    >>> hausdorff_distance(pred, target, num_classes=1)
    Array([[1.]], dtype=float32)
    >>> hausdorff_distance(pred, target, num_classes=1, spacing=(2.0, 1.0))
    Array([[2.]], dtype=float32)
  """
  p, g, spacing = _check_inputs(
    predictions, targets, num_classes, include_background, spacing
  )
  if percentile is not None:
    percentile = _checks.check_number("percentile", percentile)
    if percentile > 100:
      raise ValueError(f"`percentile` must be in [0, 100], got {percentile}.")
  directed = _checks.check_flag("directed", directed)
  s = _surfaces(p, g, spacing)
  if percentile is None:
    zero = jnp.zeros((), s.to_g.dtype)
    pg = jnp.max(jnp.where(s.edges_p, s.to_g, zero), -1)
    gp = jnp.max(jnp.where(s.edges_g, s.to_p, zero), -1)
  else:
    pg = _masked_quantile(s.to_g, s.edges_p, percentile / 100)
    gp = _masked_quantile(s.to_p, s.edges_g, percentile / 100)
  hd = pg if directed else jnp.maximum(pg, gp)
  return _empty_policy(hd, s, jnp.inf)


@_doc
def average_surface_distance(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  symmetric: bool = True,
  num_classes: int | None = None,
  include_background: bool = True,
  spacing: Sequence[float] | None = None,
) -> jax.Array:
  r"""Average (symmetric) surface distance, per sample and class.

  As MONAI 1.6.1's ``compute_average_surface_distance``: the mean of the
  distances of both surfaces' pixels to the other surface together (the
  surfaces as in :func:`hausdorff_distance`),

  .. math::
    ASSD = \frac{\sum_{x \in S_p} d(x, S_g) + \sum_{y \in S_g} d(y, S_p)}
      {|S_p| + |S_g|},

  or with ``symmetric=False`` the mean of :math:`d(x, S_g)` over
  :math:`S_p` alone. DeepMind's ``compute_average_surface_distance``
  weights its surfels by their areas and returns both directed means, so
  its values differ. A class absent from both masks is NaN, from one of
  them ``+inf`` (MONAI's policy).

  Args:
    ARRAYS
    symmetric: both directions (the default), or from the prediction's
      surface to the target's only.
    OPTIONS

  Returns:
    float ``[B, C']`` (float64 under ``jax.enable_x64``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import average_surface_distance
    >>> target = jnp.zeros((1, 6, 6), jnp.int32).at[0, 1:3, 1:3].set(1)
    >>> pred = jnp.zeros((1, 6, 6), jnp.int32).at[0, 1:4, 1:3].set(1)
    >>> # Pixels at 0: 4 of the target's, 4 of the prediction's; at 1: 2.
    >>> print(f"{average_surface_distance(pred, target, num_classes=1)[0, 0]:.4f}")
    0.2000
  """
  p, g, spacing = _check_inputs(
    predictions, targets, num_classes, include_background, spacing
  )
  symmetric = _checks.check_flag("symmetric", symmetric)
  s = _surfaces(p, g, spacing)
  zero = jnp.zeros((), s.to_g.dtype)
  total = jnp.sum(jnp.where(s.edges_p, s.to_g, zero), -1)
  count = s.count_p
  if symmetric:
    total += jnp.sum(jnp.where(s.edges_g, s.to_p, zero), -1)
    count = count + s.count_g
  asd = total / jnp.maximum(count, 1).astype(total.dtype)
  return _empty_policy(asd, s, jnp.inf)


@_doc
def surface_dice(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  tolerance: float | Sequence[float],
  num_classes: int | None = None,
  include_background: bool = True,
  spacing: Sequence[float] | None = None,
) -> jax.Array:
  r"""Normalised surface Dice at a tolerance, per sample and class.

  Nikolov et al. 2021 (arXiv:2111.05408), as MONAI 1.6.1's
  ``compute_surface_dice`` (its default ``use_subvoxels=False``): the
  share of both surfaces' pixels within :math:`\tau` of the other surface,

  .. math::
    NSD = \frac{|\{x \in S_p : d(x, S_g) \le \tau\}|
      + |\{y \in S_g : d(y, S_p) \le \tau\}|}{|S_p| + |S_g|},

  the surfaces as in :func:`hausdorff_distance`. DeepMind's
  ``compute_surface_dice_at_tolerance`` (and MONAI's
  ``use_subvoxels=True``) weights surfels on the pixel corners by their
  areas instead, so its values differ. A class absent from both masks is
  NaN, from one of them 0 (MONAI's policy).

  Args:
    ARRAYS
    tolerance: :math:`\tau \ge 0` in the units of ``spacing``: one number,
      or one per kept class (MONAI's ``class_thresholds``); static.
    OPTIONS

  Returns:
    float ``[B, C']`` in [0, 1] or NaN (float64 under ``jax.enable_x64``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import surface_dice
    >>> target = jnp.zeros((1, 6, 6), jnp.int32).at[0, 1:3, 1:3].set(1)
    >>> pred = jnp.zeros((1, 6, 6), jnp.int32).at[0, 1:4, 1:3].set(1)
    >>> surface_dice(pred, target, num_classes=1, tolerance=0.5)  # 8 / 10
    Array([[0.8]], dtype=float32)
  """
  p, g, spacing = _check_inputs(
    predictions, targets, num_classes, include_background, spacing
  )
  tolerance = _check_tolerance(tolerance, p.shape[-1])
  # Distances beyond the tolerance only need to be known as such.
  s = _surfaces(p, g, spacing, cap=max(tolerance, default=0.0))
  tau = jnp.asarray(tolerance, s.to_g.dtype)[None, :, None]
  hits = jnp.sum(s.edges_p & (s.to_g <= tau), -1) + jnp.sum(
    s.edges_g & (s.to_p <= tau), -1
  )
  count = s.count_p + s.count_g
  nsd = hits.astype(tau.dtype) / jnp.maximum(count, 1).astype(tau.dtype)
  return _empty_policy(nsd, s, 0.0)


class _Surfaces:
  """The surfaces of `[B, C]` pairs of masks and their distances, with the
  spatial axes flattened: bool `edges_p`, `edges_g` and float `to_g` (each
  pixel's distance to `S_g`), `to_p`, all `[B, C, P]`; int `count_p`,
  `count_g` `[B, C]`."""

  def __init__(self, edges_p, edges_g, to_g, to_p):
    self.edges_p, self.edges_g = edges_p, edges_g
    self.to_g, self.to_p = to_g, to_p
    self.count_p = jnp.sum(edges_p, -1)
    self.count_g = jnp.sum(edges_g, -1)


def _surfaces(p, g, spacing, cap=None):
  """`_Surfaces` of bool `[B, *S, C]` predicted and target masks; with a
  `cap`, only the distances up to it are exact (the others above it)."""
  masks = jnp.moveaxis(jnp.concatenate([p, g], -1), -1, 1)
  batch, pairs = masks.shape[:2]
  flat = masks.reshape((-1,) + masks.shape[2:])
  edges = _edges(flat)
  spatial = tuple(range(1, flat.ndim))
  # A surface with no pixel is at +inf; the metrics' empty policy replaces
  # its values, so it is measured as a full surface (all 0) and stops the
  # transform's loop at once rather than after the image's length.
  empty = ~jnp.any(edges, spatial, keepdims=True)
  # Only the distances at the other surface's pixels are read: the
  # transform's loops stop at their largest (the Hausdorff distance).
  other = edges.reshape(batch, 2, -1, *edges.shape[1:])[:, ::-1].reshape(
    edges.shape
  )
  dist = _distance._distance_transform(  # pylint: disable=protected-access
    ~(edges | empty), spacing, queries=other, cap=cap
  )
  edges = edges.reshape(batch, pairs, -1)
  dist = dist.reshape(batch, pairs, -1)
  c = pairs // 2
  return _Surfaces(edges[:, :c], edges[:, c:], dist[:, c:], dist[:, :c])


def _edges(mask):
  """The border pixels of bool `[N, *S]` masks: the mask minus its erosion
  by the cross (SciPy's `binary_erosion` default, outside False)."""
  inner = mask
  for axis in range(1, mask.ndim):
    n = mask.shape[axis]
    pad = [(0, 0)] * mask.ndim
    pad[axis] = (1, 1)
    padded = jnp.pad(mask, pad)
    inner = (
      inner
      & lax.slice_in_dim(padded, 0, n, axis=axis)
      & lax.slice_in_dim(padded, 2, n + 2, axis=axis)
    )
  return mask & ~inner


def _masked_quantile(values, mask, q):
  """The `q` quantile (linear interpolation, as `torch.quantile`) of the
  nonnegative `values` where `mask`, along the last axis."""
  count = jnp.sum(mask, -1)
  last = jnp.maximum(count - 1, 0)
  rank = q * last.astype(values.dtype)
  lo = jnp.floor(rank)
  frac = rank - lo
  inf = jnp.asarray(jnp.inf, values.dtype)
  values = jnp.where(mask, values, inf)
  v_lo = _order_statistic(values, lo.astype(count.dtype))
  # The next order statistic: v_lo again if it is repeated past `lo`, else
  # the smallest value above it.
  repeated = jnp.sum(values <= v_lo[..., None], -1) > lo.astype(count.dtype) + 1
  above = jnp.min(jnp.where(values > v_lo[..., None], values, inf), -1)
  v_hi = jnp.where(repeated | (lo >= last), v_lo, above)
  return v_lo + frac * (v_hi - v_lo)


def _order_statistic(values, k):
  """The `k`-th smallest (from 0) of nonnegative `values` along the last
  axis, `k` `[...]`: a bisection on the bit patterns, which order
  nonnegative floats as integers; a fixed number of counting passes where a
  sort of the whole image would cost more (XLA:CPU sorts slowly)."""
  nbits = jnp.finfo(values.dtype).bits
  ints = jnp.int32 if nbits == 32 else jnp.int64
  bits = lax.bitcast_convert_type(values, ints)
  lo = jnp.zeros(k.shape, ints)
  hi = jnp.full(
    k.shape, lax.bitcast_convert_type(jnp.asarray(jnp.inf, values.dtype), ints)
  )

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(bits <= mid[..., None], -1) > k
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

  lo, _ = lax.fori_loop(0, nbits - 1, halve, (lo, hi))
  return lax.bitcast_convert_type(lo, values.dtype)


def _empty_policy(value, s, one_empty):
  """NaN where both surfaces are empty, `one_empty` where one of them is."""
  none_p, none_g = s.count_p == 0, s.count_g == 0
  value = jnp.where(none_p ^ none_g, jnp.asarray(one_empty, value.dtype), value)
  return jnp.where(none_p & none_g, jnp.asarray(jnp.nan, value.dtype), value)


def _check_inputs(
  predictions, targets, num_classes, include_background, spacing
):
  """`(p, g, spacing)`: bool `[B, *S, C']` masks of the kept classes and
  the spacing as floats; raises on bad shapes, dtypes and options."""
  is_ids = [
    _form(x, name)
    for x, name in ((predictions, "predictions"), (targets, "targets"))
  ]
  p_shape, t_shape = np.shape(predictions), np.shape(targets)
  if all(is_ids):
    if num_classes is None:
      raise ValueError(
        "`num_classes` is needed when `predictions` and `targets` are both"
        f" integer ids (shapes {p_shape} and {t_shape})."
      )
    spatial_shape = p_shape
  else:
    masks = p_shape if not is_ids[0] else t_shape
    spatial_shape = masks[:-1]
    if num_classes is None:
      num_classes = masks[-1]
  if not (
    isinstance(num_classes, numbers.Integral)
    and not isinstance(num_classes, bool)
    and num_classes >= 1
  ):
    raise ValueError(
      f"`num_classes` must be a Python int >= 1, got {num_classes!r}."
    )
  for shape, ids, name in (
    (p_shape, is_ids[0], "predictions"),
    (t_shape, is_ids[1], "targets"),
  ):
    want = spatial_shape if ids else spatial_shape + (num_classes,)
    form = "integer ids [B, *spatial]" if ids else "masks [B, *spatial, C]"
    if shape != want:
      raise ValueError(
        f"`{name}` must have shape {want} ({form} for `predictions`"
        f" {p_shape} and `targets` {t_shape}), got {shape}."
      )
  if len(spatial_shape) < 2 or spatial_shape[0] == 0:
    raise ValueError(
      "The masks need a nonempty batch axis and at least one spatial axis"
      f" ([B, *spatial]), got `predictions` {p_shape} and `targets` {t_shape}."
    )
  include_background = _checks.check_flag(
    "include_background", include_background
  )
  if not include_background and num_classes < 2:
    raise ValueError(
      "`include_background=False` drops class 0, which leaves no class of"
      f" {num_classes}."
    )
  spacing = _distance.check_spacing(
    spacing,
    len(spatial_shape) - 1,
    f"the masks [B, *spatial] = {spatial_shape}",
  )
  p, g = (
    _class_masks(x, ids, num_classes)
    for x, ids in ((predictions, is_ids[0]), (targets, is_ids[1]))
  )
  if not include_background:
    p, g = p[..., 1:], g[..., 1:]
  return p, g, spacing


def _form(x, name) -> bool:
  """Whether `x` holds integer ids (else masks); raises on other dtypes."""
  dtype = jnp.result_type(x)
  if jnp.issubdtype(dtype, jnp.integer):
    return True
  if dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.floating):
    return False
  raise TypeError(
    f"`{name}` must be integer ids or bool or float masks, got shape"
    f" {np.shape(x)} and dtype {dtype}."
  )


def _class_masks(x, ids, num_classes):
  x = jnp.asarray(x)
  if ids:
    return _sums._is_label(x, num_classes)  # pylint: disable=protected-access
  return x if x.dtype == jnp.bool_ else x > 0.5


def _check_tolerance(tolerance, classes) -> tuple[float, ...]:
  """`tolerance` as one static float >= 0 per kept class."""
  many = isinstance(tolerance, Sequence) and not isinstance(tolerance, str)
  values = tuple(tolerance) if many else (tolerance,) * classes
  if len(values) != classes:
    raise ValueError(
      f"`tolerance` must be one number or {classes}, one per kept class,"
      f" got {len(values)}: {tolerance!r}."
    )
  return tuple(_checks.check_number("tolerance", v) for v in values)

"""clDice (Shit et al. 2021): soft skeletons by min and max pooling."""

from __future__ import annotations

import numbers

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _dense
from pel_jax import _numerics
from pel_jax import _variants

ArrayLike = jax.typing.ArrayLike


def cldice_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  iter_: int = 3,
  smooth_nr: float = 1.0,
  smooth_dr: float = 1.0,
  smooth: float = 1e-4,
  from_logits: bool = False,
  activation: str | None = None,
  include_background: bool = True,
  where: ArrayLike | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Soft clDice: the centreline Dice of soft skeletons.

  Shit et al., "clDice - a Novel Topology-Preserving Loss Function for
  Tubular Structure Segmentation" (CVPR 2021), as MONAI 1.6.1's
  ``SoftclDiceLoss``: per sample, with :math:`S(\cdot)` the soft skeleton
  and sums over the pixels and the kept classes,

  .. math::
    T_{prec} = \frac{\sum S(p)\, g + \epsilon_{nr}}{\sum S(p) +
      \epsilon_{dr}}, \quad
    T_{sens} = \frac{\sum S(g)\, p + \epsilon_{nr}}{\sum S(g) +
      \epsilon_{dr}}, \quad
    L = 1 - \frac{2\, T_{prec} T_{sens}}{T_{prec} + T_{sens} + \epsilon}.

  :math:`S` is the paper's ``soft_skel``: with the soft erosion
  :math:`E` (the minimum over a 3-pixel window along each spatial axis in
  turn, the least of those), the soft dilation :math:`D` (the maximum over
  the :math:`3^d` neighbourhood) and the opening :math:`O = D \circ E`,

  .. math::
    S_0 = [x - O(x)]_+, \quad
    S_{k+1} = S_k + \big[\delta_k - S_k \delta_k\big]_+, \quad
    \delta_k = [E^{k+1}(x) - O(E^{k+1}(x))]_+,

  for ``iter_`` steps. Pooling pads with :math:`\pm\infty` (as PyTorch's
  max pooling), so the border is not eroded. The targets' skeletons are
  taken of :math:`g` itself (one-hot or soft), and gradients flow through
  the predictions' skeleton (the max and min pooling route them to the
  selected pixel). Empty targets and predictions give
  :math:`T = \epsilon_{nr} / \epsilon_{dr}`, never NaN (``smooth_dr`` must
  be positive).

  MONAI before 1.6 (1.5.1 as the authors' code) summed only the channels
  ``[:, 1:]``, over the whole batch: with one channel (a sigmoid output)
  every sum was empty, :math:`T_{prec} = T_{sens} = 1`, and the loss was 0
  with a zero gradient whatever the prediction (MONAI issue #8239, fixed
  in 2026). This follows the fixed MONAI 1.6.1: every kept channel counts
  (``include_background`` chooses class 0), one value per sample.

  Args:
    predictions: float ``[B, *spatial, C]``, probabilities, or logits with
      ``from_logits=True``; any number of spatial axes (MONAI: 2-D, 3-D).
    targets: integer class ids ``[B, *spatial]`` (with one channel, id 1
      is the foreground), or float or bool ``[B, *spatial, C]``, one-hot or
      soft.
    iter_: the skeleton's erosion steps, an int >= 0 (MONAI's name; at
      least the largest half-width of the structures).
    smooth_nr: :math:`\epsilon_{nr} \ge 0`, added to the numerators.
    smooth_dr: :math:`\epsilon_{dr} > 0`, added to the denominators.
    smooth: :math:`\epsilon > 0` in the harmonic mean's denominator.
    from_logits: apply ``activation`` to ``predictions`` first.
    activation: ``"sigmoid"`` or ``"softmax"`` (logits only); default
      sigmoid for one class, else softmax.
    include_background: keep class 0.
    where: bool ``[B, *spatial]``: False pixels leave the four sums (the
      skeletons are still those of the whole image; MONAI has no mask).
    ignore_index: an id of integer ``targets`` whose pixels leave the sums
      as with ``where``; they are in no class's target.
    reduction: ``"mean"`` over samples, ``"sum"``, or ``"none"``: ``[B]``.

  Returns:
    The loss, a scalar, or ``[B]`` with ``reduction="none"``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import cldice_loss
    >>> g = jnp.zeros((1, 5, 5, 1)).at[0, 2, :, 0].set(1.0)  # a line
    >>> print(f"{cldice_loss(g, g):.4f}")  # its own skeleton: T = 1
    0.0000
    >>> print(f"{cldice_loss(jnp.zeros_like(g), g):.4f}")  # T_sens = 1/6
    0.7143
  """
  p, g, w, iter_, smooths = _prepare(
    predictions,
    targets,
    iter_=iter_,
    smooth_nr=smooth_nr,
    smooth_dr=smooth_dr,
    smooth=smooth,
    from_logits=from_logits,
    activation=activation,
    include_background=include_background,
    where=where,
    ignore_index=ignore_index,
    reduction=reduction,
  )
  return _dense.reduce(_cldice(p, g, w, iter_, *smooths), reduction)


def soft_dice_cldice_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  iter_: int = 3,
  alpha: float = 0.5,
  smooth_nr: float = 1.0,
  smooth_dr: float = 1.0,
  smooth: float = 1e-4,
  from_logits: bool = False,
  activation: str | None = None,
  include_background: bool = True,
  where: ArrayLike | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Soft Dice plus clDice: :math:`(1 - \alpha) L_{Dice} + \alpha L_{clDice}`.

  MONAI 1.6.1's ``SoftDiceclDiceLoss`` (Shit et al. 2021 train with this
  sum: clDice alone does not fix the segmentation's extent).
  :math:`L_{Dice}` is MONAI's ``DiceLoss``, per sample and class
  :math:`1 - (2 \sum p g + \epsilon_{nr}) / (\sum p + \sum g +
  \epsilon_{dr})` (:func:`dice_loss` with half these constants: it adds
  twice its own), and
  :math:`L_{clDice}` is :func:`cldice_loss` (per sample), each reduced on
  its own. It follows MONAI 1.6.1, not the zero loss of single-channel
  inputs in MONAI before 1.6 (see :func:`cldice_loss`).

  Args:
    predictions: as for :func:`cldice_loss`.
    targets: as for :func:`cldice_loss`.
    iter_: the skeleton's erosion steps (see :func:`cldice_loss`).
    alpha: the weight :math:`\alpha \in [0, 1]` of clDice.
    smooth_nr: :math:`\epsilon_{nr} \ge 0`, both losses' numerators.
    smooth_dr: :math:`\epsilon_{dr} > 0`, both losses' denominators.
    smooth: :math:`\epsilon > 0` of clDice's harmonic mean.
    from_logits: apply ``activation`` to ``predictions`` first.
    activation: ``"sigmoid"`` or ``"softmax"`` (logits only).
    include_background: keep class 0 in both losses.
    where: False pixels leave both losses' sums (see :func:`cldice_loss`).
    ignore_index: an id of integer ``targets`` left out of both.
    reduction: ``"mean"`` (Dice over samples and classes, clDice over
      samples) or ``"sum"``. ``"none"`` is refused: the two losses have
      shapes ``[B, C']`` and ``[B]`` (MONAI broadcasts them into an
      ``[B, C', 1, B]`` array there).

  Returns:
    The loss, a scalar.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import soft_dice_cldice_loss
    >>> g = jnp.zeros((1, 5, 5, 1)).at[0, 2, :, 0].set(1.0)
    >>> print(f"{soft_dice_cldice_loss(g, g):.4f}")
    0.0000
  """
  p, g, w, iter_, smooths = _prepare(
    predictions,
    targets,
    iter_=iter_,
    smooth_nr=smooth_nr,
    smooth_dr=smooth_dr,
    smooth=smooth,
    from_logits=from_logits,
    activation=activation,
    include_background=include_background,
    where=where,
    ignore_index=ignore_index,
    reduction=reduction,
  )
  alpha = _checks.check_number("alpha", alpha)
  if alpha > 1:
    raise ValueError(f"`alpha` must lie in [0, 1], got {alpha}.")
  if reduction == "none":
    raise ValueError(
      "`reduction='none'` has no single shape here: the Dice part is"
      " per sample and class [B, C'], the clDice part per sample [B]. Use"
      " 'mean' or 'sum', or call `dice_loss` and `cldice_loss` with"
      " `reduction='none'`."
    )
  dice = _variants.dice_loss(
    predictions,
    targets,
    # `dice_loss` adds twice its constants (its ratio is halved); MONAI's
    # DiceLoss adds them once.
    smooth_nr=smooths[0] / 2,
    smooth_dr=smooths[1] / 2,
    from_logits=from_logits,
    activation=activation,
    include_background=include_background,
    where=where,
    ignore_index=ignore_index,
    reduction=reduction,
  )
  cl = _dense.reduce(_cldice(p, g, w, iter_, *smooths), reduction)
  return (1 - alpha) * dice + alpha * cl


def _soft_skeleton(x: jax.Array, iter_: int) -> jax.Array:
  """The soft skeleton of ``[B, *spatial, C]`` values in [0, 1]."""
  skel = jax.nn.relu(x - _open(x))

  def step(_, carry):
    x, skel = carry
    x = _erode(x)
    delta = jax.nn.relu(x - _open(x))
    return x, skel + jax.nn.relu(delta - skel * delta)

  return lax.fori_loop(0, iter_, step, (x, skel))[1]


def _cldice(p, g, w, iter_, smooth_nr, smooth_dr, smooth):
  """clDice per sample of ``[B, *S, C']`` probabilities and targets, over
  the pixels ``w`` (bool ``[B, *S, 1]``, None for all)."""
  skel_p = _soft_skeleton(p, iter_)
  skel_g = _soft_skeleton(g, iter_)
  if w is not None:
    skel_p = jnp.where(w, skel_p, 0)
    skel_g = jnp.where(w, skel_g, 0)
  axes = tuple(range(1, p.ndim))
  tprec = (jnp.sum(skel_p * g, axes) + smooth_nr) / (
    jnp.sum(skel_p, axes) + smooth_dr
  )
  tsens = (jnp.sum(skel_g * p, axes) + smooth_nr) / (
    jnp.sum(skel_g, axes) + smooth_dr
  )
  return 1 - 2 * tprec * tsens / (tprec + tsens + smooth)


def _max_pool(x, spatial_window):
  """Stride-1 max over ``spatial_window`` (odd sizes), padded with -inf so
  the output keeps the shape, as PyTorch's max pooling with padding."""
  window = (1, *spatial_window, 1)
  pad = [(0, 0)] + [(w // 2, w // 2) for w in spatial_window] + [(0, 0)]
  # A concrete NumPy init lets JAX pick its max-pooling primitive, which has
  # a reverse-mode rule; a traced one (jnp.array under jit) falls back to the
  # generic reduction, which has none.
  init = np.array(-np.inf, x.dtype)
  return lax.reduce_window(x, init, lax.max, window, (1,) * x.ndim, pad)


def _erode(x):
  d = x.ndim - 2
  along = [
    -_max_pool(-x, tuple(3 if i == a else 1 for i in range(d)))
    for a in range(d)
  ]
  out = along[0]
  for y in along[1:]:
    out = jnp.minimum(out, y)
  return out


def _open(x):
  return _max_pool(_erode(x), (3,) * (x.ndim - 2))


def _prepare(
  predictions,
  targets,
  *,
  iter_,
  smooth_nr,
  smooth_dr,
  smooth,
  from_logits,
  activation,
  include_background,
  reduction,
  where,
  ignore_index,
):
  """Checks the options; returns ``(p, g, w, iter_, smooths)`` (see
  `_dense.probabilities_and_targets`)."""
  activation, include_background, _ = _dense.check_inputs(
    predictions,
    targets,
    from_logits=from_logits,
    activation=activation,
    include_background=include_background,
    reduction=reduction,
    where=where,
    ignore_index=ignore_index,
  )
  if not isinstance(iter_, numbers.Integral) or isinstance(iter_, bool):
    raise TypeError(
      f"`iter_` must be a Python int (the skeleton's steps), got {iter_!r}."
    )
  if iter_ < 0:
    raise ValueError(f"`iter_` must be >= 0, got {iter_}.")
  smooths = (
    _checks.check_number("smooth_nr", smooth_nr),
    _checks.check_number("smooth_dr", smooth_dr, positive=True),
    _checks.check_number("smooth", smooth, positive=True),
  )
  _checks.check_representable(
    predictions,
    _numerics.compute_dtype(jnp.result_type(predictions)),
    # `dice_loss` adds twice its constants (its ratio is halved); MONAI's
    # DiceLoss adds them once.
    smooth_nr=smooths[0] / 2,
    smooth_dr=smooths[1] / 2,
    smooth=smooths[2],
  )
  p, g, w = _dense.probabilities_and_targets(
    predictions, targets, activation, include_background, where, ignore_index
  )
  return p, g, w, int(iter_), smooths

"""The boundary loss (Kervadec et al. 2019) on `signed_distance` maps."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from pel_jax import _dense
from pel_jax import _distance

ArrayLike = jax.typing.ArrayLike


def boundary_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  from_logits: bool = False,
  activation: str | None = None,
  include_background: bool = True,
  spacing: Sequence[float] | None = None,
  where: ArrayLike | None = None,
  ignore_index: int | None = None,
  reduction: str = "mean",
) -> jax.Array:
  r"""Boundary loss: probabilities weighted by the targets' signed distance.

  Kervadec et al., "Boundary loss for highly unbalanced segmentation"
  (MIDL 2019), as their reference ``BoundaryLoss``: per sample and class
  :math:`c`, the mean over the :math:`P` (kept) pixels

  .. math::
    L_c = \frac{1}{P} \sum_x p_c(x) \, \phi_c(x),

  with :math:`\phi_c` = :func:`signed_distance` of the class's target mask
  (positive outside it, :math:`-(D - 1)` inside, 0 where the class is
  absent or everywhere). It is linear in :math:`p`: its gradient is
  :math:`\phi_c / P` (times the activation's Jacobian), constant in
  training; the targets' maps are computed inside the call, on the
  device, with no gradient. Its minimum, at the targets themselves, is
  :math:`-\frac{1}{P} \sum_{x \in m_c} (D(x) - 1)` (0 for objects at most
  two pixels thick), so it is used beside a region loss (e.g. ``pel_loss(...) + alpha *
  boundary_loss(...)`` with a growing ``alpha``, as in the paper). A
  class that fills a sample has a map of 0 there, where the reference
  code returns SciPy's undefined distances.

  Args:
    predictions: float ``[B, *spatial, C]``, probabilities, or logits with
      ``from_logits=True``.
    targets: integer class ids ``[B, *spatial]`` (with one channel, id 1
      is the foreground), or float or bool one-hot ``[B, *spatial, C]``
      (a class's mask is where its target exceeds 0.5).
    from_logits: apply ``activation`` to ``predictions`` first.
    activation: ``"sigmoid"`` or ``"softmax"`` (logits only); default
      sigmoid for one class, else softmax.
    include_background: keep class 0 (the reference code's ``idc`` is
      often ``[1]``: ``include_background=False``).
    spacing: the pixel size along each spatial axis, as for
      :func:`signed_distance` (default 1).
    where: bool ``[B, *spatial]``: False pixels contribute nothing, and
      the mean is over the kept pixels (0 for a sample with none). The
      maps are still those of the whole image's targets.
    ignore_index: an id of integer ``targets`` whose pixels leave the mean
      as with ``where``; they are in no class's target mask, so the maps
      treat them as outside every class.
    reduction: ``"mean"`` over samples and kept classes (the reference
      code's ``.mean()``), ``"sum"``, or ``"none"``: ``[B, C']``.

  Returns:
    The loss, a scalar, or ``[B, C']`` with ``reduction="none"``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import boundary_loss
    >>> ids = jnp.array([[0, 1, 1, 0, 0]])  # [B=1, 5]
    >>> p = jnp.array([[0.0, 1.0, 1.0, 0.0, 0.0]])[..., None]  # exact
    >>> # phi = [1, 0, 0, 1, 2]: the prediction sits where phi is 0.
    >>> print(f"{boundary_loss(p, ids):.2f}")
    0.00
    >>> shifted = jnp.array([[0.0, 0.0, 1.0, 1.0, 0.0]])[..., None]
    >>> print(f"{boundary_loss(shifted, ids):.2f}")  # (0 + 1) / 5
    0.20
  """
  activation, include_background, spacing = _dense.check_inputs(
    predictions,
    targets,
    from_logits=from_logits,
    activation=activation,
    include_background=include_background,
    reduction=reduction,
    spacing=spacing,
    where=where,
    ignore_index=ignore_index,
  )
  p, g, w = _dense.probabilities_and_targets(
    predictions, targets, activation, include_background, where, ignore_index
  )
  phi = _dense.per_class_maps(
    g > 0.5,
    lambda m: _distance._signed_distance(m, spacing),  # pylint: disable=protected-access
  )
  spatial = tuple(range(1, p.ndim - 1))
  per_class = _dense.masked_mean(p * phi.astype(p.dtype), w, spatial)
  return _dense.reduce(per_class, reduction)

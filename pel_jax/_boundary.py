"""The boundary loss (Kervadec et al. 2019) on `signed_distance` maps."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _core
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
  reduction: str = "mean",
) -> jax.Array:
  r"""Boundary loss: probabilities weighted by the targets' signed distance.

  Kervadec et al., "Boundary loss for highly unbalanced segmentation"
  (MIDL 2019), as their reference ``BoundaryLoss``: per sample and class
  :math:`c`, the mean over the :math:`P` pixels

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
  _checks.check_predictions(predictions)
  _checks.check_targets(predictions, targets, None)
  from_logits = _checks.check_flag("from_logits", from_logits)
  include_background = _checks.check_flag(
    "include_background", include_background
  )
  _checks.check_options(predictions, reduction, include_background)
  activation = _checks.resolve_activation(predictions, from_logits, activation)
  shape = np.shape(predictions)
  spacing = _distance.check_spacing(
    spacing, len(shape) - 2, f"`predictions` {shape} ([B, *spatial, C])"
  )
  return _boundary_loss(
    predictions, targets, activation, include_background, spacing, reduction
  )


def _boundary_loss(
  predictions, targets, activation, include_background, spacing, reduction
):
  x = jnp.asarray(predictions)
  x = x.astype(_core.compute_dtype(x.dtype))
  if activation == "sigmoid":
    p = jax.nn.sigmoid(x)
  elif activation == "softmax":
    p = jax.nn.softmax(x, axis=-1)
  else:
    p = x
  targets = jnp.asarray(targets)
  if jnp.issubdtype(targets.dtype, jnp.integer):
    masks = _core._is_label(targets, x.shape[-1])  # pylint: disable=protected-access
  else:
    masks = targets.astype(p.dtype) > 0.5
  if not include_background:
    p, masks = p[..., 1:], masks[..., 1:]
  # Classes join the batch axis: one transform for all of them.
  classes_first = jnp.moveaxis(masks, -1, 1)
  flat = classes_first.reshape((-1,) + classes_first.shape[2:])
  phi = _distance._signed_distance(flat, spacing)  # pylint: disable=protected-access
  phi = jnp.moveaxis(phi.reshape(classes_first.shape), 1, -1)
  spatial = tuple(range(1, p.ndim - 1))
  per_class = jnp.mean(p * phi.astype(p.dtype), axis=spatial)
  if reduction == "none":
    return per_class
  if reduction == "sum":
    return jnp.sum(per_class)
  return jnp.mean(per_class)

"""Shared argument handling of the losses on dense per-class maps.

`boundary_loss`, `hausdorff_dt_loss` and the clDice losses take the same
predictions, targets and options; they all need the probabilities and the
targets as two channels-last arrays, and the per-class masks as one batch of
masks for the distance transforms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _core
from pel_jax import _distance


def check_inputs(
  predictions,
  targets,
  *,
  from_logits,
  activation,
  include_background,
  reduction,
  spacing=False,
):
  """The trace-time checks common to the dense losses.

  Returns ``(activation, include_background, spacing)``: the activation to
  apply (None for probabilities), the flag as a bool, and ``spacing`` as a
  tuple of floats (None where the loss takes no ``spacing``: pass
  ``spacing=False``).
  """
  _checks.check_predictions(predictions)
  _checks.check_targets(predictions, targets, None)
  from_logits = _checks.check_flag("from_logits", from_logits)
  include_background = _checks.check_flag(
    "include_background", include_background
  )
  _checks.check_options(predictions, reduction, include_background)
  activation = _checks.resolve_activation(predictions, from_logits, activation)
  if spacing is not False:
    shape = np.shape(predictions)
    spacing = _distance.check_spacing(
      spacing, len(shape) - 2, f"`predictions` {shape} ([B, *spatial, C])"
    )
  else:
    spacing = None
  return activation, include_background, spacing


def probabilities_and_targets(
  predictions, targets, activation, include_background
):
  """``(p, g)``, both ``[B, *S, C']`` in the compute dtype.

  Integer ids become one-hot (with one channel, id 1 is the foreground);
  float and bool targets are kept as they are (soft targets stay soft).
  """
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
    g = _core._is_label(targets, x.shape[-1])  # pylint: disable=protected-access
  else:
    g = targets
  g = g.astype(p.dtype)
  if not include_background:
    p, g = p[..., 1:], g[..., 1:]
  return p, g


def per_class_maps(masks, transform):
  """``transform`` (bool ``[N, *S]`` -> ``[N, *S]``) of each class of bool
  ``[B, *S, C]`` masks, as ``[B, *S, C]``.

  The classes join the batch axis: one transform for all of them, so its
  loop stops at the largest distance of the whole batch once.
  """
  classes_first = jnp.moveaxis(masks, -1, 1)
  flat = classes_first.reshape((-1,) + classes_first.shape[2:])
  maps = transform(flat).reshape(classes_first.shape)
  return jnp.moveaxis(maps, 1, -1)


def reduce(per_class, reduction):
  """``reduction`` ("mean", "sum", "none") of per-sample, per-class values."""
  if reduction == "none":
    return per_class
  if reduction == "sum":
    return jnp.sum(per_class)
  return jnp.mean(per_class)

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
from pel_jax import _distance
from pel_jax import _global_sum
from pel_jax import _numerics
from pel_jax import _sums


def check_inputs(
  predictions,
  targets,
  *,
  from_logits,
  activation,
  include_background,
  reduction,
  spacing=False,
  where=None,
  ignore_index=None,
):
  """The trace-time checks common to the dense losses.

  Returns ``(activation, include_background, spacing)``: the activation to
  apply (None for probabilities), the flag as a bool, and ``spacing`` as a
  tuple of floats (None where the loss takes no ``spacing``: pass
  ``spacing=False``). ``where`` and ``ignore_index`` are checked as for
  `pel_loss`.
  """
  _checks.check_predictions(predictions)
  _checks.check_targets(predictions, targets, ignore_index)
  _checks.check_mask(predictions, where)
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
  predictions,
  targets,
  activation,
  include_background,
  where=None,
  ignore_index=None,
):
  """``(p, g, w)``: ``p`` and ``g`` ``[B, *S, C']`` in the compute dtype,
  ``w`` the kept pixels, bool ``[B, *S, 1]``, or None when all are kept.

  Integer ids become one-hot (with one channel, id 1 is the foreground);
  float and bool targets are kept as they are (soft targets stay soft). A
  pixel whose id is ``ignore_index`` belongs to no class (all of its ``g``
  are 0) and is left out by ``w``, as a pixel where ``where`` is False.
  """
  x = jnp.asarray(predictions)
  x = x.astype(_numerics.compute_dtype(x.dtype))
  if activation == "sigmoid":
    p = jax.nn.sigmoid(x)
  elif activation == "softmax":
    p = jax.nn.softmax(x, axis=-1)
  else:
    p = x
  targets = jnp.asarray(targets)
  w = None if where is None else jnp.asarray(where)[..., None]
  if jnp.issubdtype(targets.dtype, jnp.integer):
    g = _sums._is_label(targets, x.shape[-1])  # pylint: disable=protected-access
    if ignore_index is not None:
      kept = (targets != ignore_index)[..., None]
      g = g & kept
      w = kept if w is None else w & kept
  else:
    g = targets
  g = g.astype(p.dtype)
  if not include_background:
    p, g = p[..., 1:], g[..., 1:]
  return p, g, w


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


def masked_mean(values, w, axes):
  """The mean of ``values`` over ``axes``, over the pixels kept by ``w``
  (bool, broadcastable; None keeps all): 0 where no pixel is kept."""
  if w is None:
    return jnp.mean(values, axis=axes)
  w = w.astype(values.dtype)
  count = jnp.maximum(jnp.sum(w, axis=axes), 1)
  return jnp.sum(values * w, axis=axes) / count


def reduce(per_class, reduction):
  """``reduction`` ("mean", "sum", "none") of per-sample, per-class values."""
  if reduction == "none":
    return per_class
  if reduction == "sum":
    return jnp.sum(per_class)
  return jnp.mean(per_class)


def pixel_sums(x, w, batch, axis_name):
  """Sums of ``[B, *S, K]`` over the kept pixels: ``[B, K]``, or ``[K]``
  with ``batch`` (global over ``axis_name``, with `global_sum`'s gradient).

  Such sums add over batches and devices, so a loss computed from them alone
  is exact under accumulation and data parallelism.
  """
  if w is not None:
    x = jnp.where(w, x, 0)
  sums = jnp.sum(x, tuple(range(0 if batch else 1, x.ndim - 1)))
  if axis_name is not None:
    sums = _global_sum.global_sum(sums, axis_name)
  return sums


def check_axis_name(axis_name, batch) -> None:
  """`axis_name` sums over the devices, so it needs the batch's sums."""
  if axis_name is not None and not batch:
    raise ValueError(
      f"`axis_name={axis_name!r}` sums the statistics over the devices,"
      " which needs `batch=True` (per-sample statistics are local)."
    )

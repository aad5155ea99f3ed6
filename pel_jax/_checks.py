"""Static (trace-time) argument checks: shapes, dtypes and static values.

None of them reads a traced array; `class_weights` are checked by value
when they are concrete (a list, a NumPy array, an array closed over).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("mean", "sum", "none")
ACTIVATIONS = ("sigmoid", "softmax")


def _describe(x) -> str:
  return f"shape {tuple(np.shape(x))} and dtype {jnp.result_type(x)}"


def layout_hint(p_shape, t_shape=None) -> str:
  """A sentence on a likely layout mistake behind a shape error, or "".

  Only appended to errors that fire anyway: a shape like [B, C, H, W] with a
  small C is legal channels-last input (C = W classes), so it is never
  refused on its own.
  """
  hints = []
  small = len(p_shape) >= 4 and 0 < p_shape[1] <= 16
  if small and p_shape[-1] >= 4 * p_shape[1]:
    hints.append(
      f" `predictions` {tuple(p_shape)} look channels-first ([B, C, *spatial]"
      f" with C = {p_shape[1]}): pel_jax takes the class axis last; use"
      " `jnp.moveaxis(predictions, 1, -1)`."
    )
  if (
    t_shape is not None
    and len(t_shape) == len(p_shape) + 1
    and tuple(t_shape[:-1]) == tuple(p_shape)
  ):
    hints.append(
      f" `predictions` {tuple(p_shape)} seem to lack the class axis that"
      f" `targets` {tuple(t_shape)} have: for one binary channel use"
      " `predictions[..., None]`."
    )
  return "".join(hints)


def check_predictions(predictions) -> None:
  dtype = jnp.result_type(predictions)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
      "`predictions` must be floating point (probabilities or logits), got"
      f" {_describe(predictions)}."
    )
  shape = np.shape(predictions)
  if len(shape) < 3:
    raise ValueError(
      "`predictions` must have shape [batch, *spatial, num_classes] with at"
      f" least one spatial axis, got {_describe(predictions)}."
      " A binary output without a class axis takes one:"
      " `predictions[..., None]`."
    )
  if shape[-1] == 0:
    raise ValueError(
      f"`predictions` {shape} have no class (the last axis, num_classes, is"
      f" 0); they must be [batch, *spatial, num_classes].{layout_hint(shape)}"
    )
  if shape[0] == 0:
    raise ValueError(
      f"`predictions` {shape} have an empty batch (axis 0): the loss of no"
      " sample is undefined (a mean over nothing). Skip the call, or pad"
      " the batch and leave the padding out with `where`."
    )


def check_targets(predictions, targets, ignore_index) -> None:
  """Checks `targets` (integer ids or float labels) against `predictions`."""
  p_shape, t_shape = np.shape(predictions), np.shape(targets)
  dtype = jnp.result_type(targets)
  integer = jnp.issubdtype(dtype, jnp.integer)
  if integer:
    if t_shape != p_shape[:-1]:
      hint = layout_hint(p_shape, t_shape)
      if t_shape == p_shape[:-1] + (1,):
        hint += (
          f" `targets` {t_shape} ({dtype}) look like an integer mask with a"
          " trailing channel axis of size 1; class ids take none: squeeze"
          " the last axis (`targets[..., 0]`)."
        )
      elif t_shape == p_shape:
        hint += (
          f" Integer ({dtype}) targets of the predictions' shape look like"
          " one-hot labels stored as integers: pass them as float, or pass"
          " the ids `[batch, *spatial]`. If both are one binary map per"
          " sample without a class axis (optax's binary Dice layout), add"
          " it to the predictions: `predictions[..., None]` (ids stay"
          " `[batch, *spatial]`; 1 is the foreground)."
        )
      elif t_shape == p_shape[:1] + p_shape[2:] and not hint:
        hint = (
          " They match `predictions` without axis 1: predictions are"
          " probably channels-first; move the class axis last."
        )
      raise ValueError(
        f"Integer class-id `targets` ({dtype}) must have shape"
        f" [batch, *spatial] = {p_shape[:-1]} (predictions {p_shape} without"
        f" the class axis), got {t_shape}.{hint}"
      )
  elif jnp.issubdtype(dtype, jnp.floating) or dtype == jnp.bool_:
    kind = "Bool" if dtype == jnp.bool_ else "Float"
    if ignore_index is not None:
      raise ValueError(
        "`ignore_index` needs integer class-id targets; got"
        f" {kind.lower()} targets of {_describe(targets)}. Use `where` to"
        f" mask {kind.lower()} targets."
      )
    if len(t_shape) == len(p_shape) and t_shape[:-1] == p_shape[:-1]:
      if t_shape[-1] != p_shape[-1]:
        raise ValueError(
          f"Class-count mismatch: `predictions` {p_shape} has {p_shape[-1]}"
          f" classes but {kind.lower()} ({dtype}) `targets` {t_shape} has"
          f" {t_shape[-1]}."
        )
    elif t_shape != p_shape:
      hint = layout_hint(p_shape, t_shape)
      if len(t_shape) == len(p_shape) and t_shape == (
        p_shape[:1] + p_shape[-1:] + p_shape[1:-1]
      ):
        hint += (
          " `targets` are `predictions` with the class axis first"
          " (channels-first): use `jnp.moveaxis(targets, 1, -1)`."
        )
      elif t_shape == p_shape[:-1]:
        hint += (
          " Without a class axis they look like class ids or a mask: pass"
          " ids as integers, or a one-channel mask as `targets[..., None]`."
        )
      raise ValueError(
        f"{kind} ({dtype}) `targets` must have the shape of `predictions`"
        f" {p_shape} (one-hot, multi-hot or soft labels), got {t_shape}."
        f" Integer class ids take shape [batch, *spatial].{hint}"
      )
  else:
    raise TypeError(
      f"`targets` must be float, bool or integer, got {_describe(targets)}."
    )
  check_ignore_index(dtype if integer else None, ignore_index)
  check_plausible_layout(p_shape, float_targets=not integer)


# Shapes that are legal but almost certainly a layout mistake (refused by
# `check_plausible_layout`). Images are at least this many pixels a side.
_IMAGE_SIDE = 64
# At most this many times longer than wide: an image, not batch x length.
_IMAGE_ASPECT = 4
# At most this many channels on a channels-first axis 1.
_FEW_CHANNELS = 16


def _image_like(a: int, b: int) -> bool:
  return min(a, b) >= _IMAGE_SIDE and max(a, b) <= _IMAGE_ASPECT * min(a, b)


def check_plausible_layout(p_shape, *, float_targets: bool) -> None:
  """Refuses legal shapes that are almost certainly a layout mistake.

  Shapes alone cannot tell [batch, length, C] 1-D data from one image
  [H, W, C] without its batch axis, so the rules are narrow and each error
  names a reshape that keeps the loss value and passes the check:

  * rank 3, axes 0 and 1 both >= 64 and within 4x of each other: one
    channels-last image [H, W, C] (read as H signals, one loss per row);
  * rank 3, axis 0 <= 16, axes 1 and 2 both >= 64 and within 4x: one
    channels-first image [C, H, W];
  * rank >= 4 with float or bool targets (of the same shape, as checked
    before), axis 1 <= 16 and every later axis >= 32 and
    >= 8x axis 1: channels-first [B, C, *spatial] on both sides (read as
    W classes over spatial axes (C, H, ...)).

  Real 1-D data of that size passes as [batch, length, 1, C]; channels-last
  data with a short first spatial axis passes with that axis moved after
  the other spatial axes. Both only reorder or add spatial axes, which the
  losses and metrics sum over alike.
  """
  p_shape = tuple(p_shape)
  one_d = (
    " If they really are a batch of one-dimensional signals [batch, length,"
    " C], pass them as [batch, length, 1, C] (`x[:, :, None]` on predictions"
    " and targets, `where` too): the value is the same and this check does"
    " not apply to rank 4. If they are a batch of binary maps [batch, H, W]"
    " without the class axis (optax's binary Dice layout), add it:"
    " `predictions[..., None]` (float targets too; integer ids stay"
    " [batch, H, W])."
  )
  if len(p_shape) == 3 and _image_like(p_shape[0], p_shape[1]):
    raise ValueError(
      f"`predictions` {p_shape} look like one image [H, W, C] without a"
      " batch axis: rank-3 input is read as [batch, length, C], i.e. one"
      f" loss per image row ({p_shape[0]} of them). Add the batch axis:"
      " `predictions[None]`, `targets[None]` (and `where[None]`)." + one_d
    )
  if (
    len(p_shape) == 3
    and p_shape[0] <= _FEW_CHANNELS
    and _image_like(p_shape[1], p_shape[2])
  ):
    raise ValueError(
      f"`predictions` {p_shape} look like one channels-first image"
      f" [C, H, W] (C = {p_shape[0]}) without a batch axis: rank-3 input is"
      f" read as [batch, length, C] with {p_shape[2]} classes. pel_jax takes"
      " [batch, *spatial, C]: use `jnp.moveaxis(predictions, 0, -1)[None]`"
      " (targets likewise)." + one_d
    )
  if not float_targets or len(p_shape) < 4:
    return
  channels = p_shape[1]
  if 0 < channels <= _FEW_CHANNELS and all(
    n >= max(32, 8 * channels) for n in p_shape[2:]
  ):
    raise ValueError(
      f"`predictions` and `targets` {p_shape} look channels-first"
      f" ([B, C, *spatial] with C = {channels}): pel_jax takes the class"
      f" axis last, so this is read as {p_shape[-1]} classes over spatial"
      f" axes {p_shape[1:-1]}. Use `jnp.moveaxis(x, 1, -1)` on both. If"
      f" axis 1 really is a short spatial axis ({channels} pixels) of"
      " channels-last data, move it after the other spatial axes"
      " (`jnp.moveaxis(x, 1, -2)` on both, and `where`; `spacing` in the"
      " same order): the value is the same and this check does not apply."
    )


def check_ignore_index(dtype, ignore_index) -> None:
  """`ignore_index`: None or a Python int that ids of `dtype` can hold."""
  if ignore_index is None:
    return
  if not isinstance(ignore_index, numbers.Integral) or isinstance(
    ignore_index, bool
  ):
    raise TypeError(
      f"`ignore_index` must be a Python int or None, got {ignore_index!r}."
    )
  if dtype is not None:
    info = np.iinfo(dtype)
    if not info.min <= ignore_index <= info.max:
      raise ValueError(
        f"`ignore_index={ignore_index}` cannot occur in `targets` of dtype"
        f" {dtype} (range [{info.min}, {info.max}]): it would ignore nothing."
      )


def check_label_args(targets, num_classes, ignore_index) -> int:
  """Static arguments of `check_labels`; returns the number of valid ids.

  One class is the binary mode of `pel_loss` (one channel, id 1 the
  foreground): its valid ids are 0 and 1.
  """
  dtype = jnp.result_type(targets)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`targets` must be integer ids, got {_describe(targets)}.")
  if (
    not isinstance(num_classes, numbers.Integral)
    or isinstance(num_classes, bool)
    or num_classes < 1
  ):
    raise ValueError(
      "`num_classes` must be a Python int >= 1 (the class axis of the"
      f" predictions; 1 is binary, ids 0 and 1), got {num_classes!r}."
    )
  check_ignore_index(dtype, ignore_index)
  return max(int(num_classes), 2)


_STATIC_HOW = (
  " Under `jax.jit`, mark it static (`jax.jit(f, static_argnames=(...))`)"
  " or close over it (`functools.partial`) instead of passing it as a"
  " traced argument."
)


def check_number(name: str, value, *, positive: bool = False) -> float:
  """A static hyperparameter: a real Python/NumPy number, >= 0 (or > 0)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(
      f"`{name}` must be a Python number (it is static: changing it"
      f" recompiles), got {type(value).__name__} {value!r}.{_STATIC_HOW}"
    )
  value = float(value)
  if not np.isfinite(value) or value < 0 or (positive and value == 0):
    bound = "> 0" if positive else ">= 0"
    raise ValueError(f"`{name}` must be finite and {bound}, got {value}.")
  return value


def check_representable(predictions, compute_dtype, **values: float) -> None:
  """Hyperparameters must keep the loss finite in its compute dtype.

  A smoothing of 1e39 is inf in float32, and inf / inf is NaN; a weight of
  1e38 times a sum over pixels overflows too. Every value but the exponent
  (p^n stays in [0, 1]) is bounded by max / (4 * predictions.size), which
  keeps every weighted sum of [0, 1] terms finite.
  """
  bound = _representable_limit(predictions, compute_dtype)
  for name, value in values.items():
    limit = float(jnp.finfo(compute_dtype).max) if name == "exponent" else bound
    if value > limit:
      raise ValueError(
        f"`{name}={value}` would overflow {jnp.dtype(compute_dtype).name},"
        " the dtype the loss is computed in for `predictions` of"
        f" {_describe(predictions)}: it must be <= {limit:.3g}."
      )


def _representable_limit(predictions, compute_dtype) -> float:
  return float(jnp.finfo(compute_dtype).max) / (
    4 * max(np.size(predictions), 1)
  )


def check_flag(name: str, value) -> bool:
  """A static switch: a Python (or NumPy) bool, never a traced array."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if hasattr(value, "shape") or not isinstance(value, numbers.Integral):
    raise TypeError(
      f"`{name}` must be a static Python bool (it selects the"
      f" computation), got {type(value).__name__} {value!r}.{_STATIC_HOW}"
    )
  return bool(value)


def check_mask(predictions, where) -> None:
  if where is None:
    return
  want = np.shape(predictions)[:-1]
  if np.shape(where) != want:
    raise ValueError(
      f"`where` must have shape [batch, *spatial] = {want} (predictions"
      f" {np.shape(predictions)} without the class axis), got"
      f" {np.shape(where)}.{layout_hint(np.shape(predictions))}"
    )
  if jnp.result_type(where) != jnp.bool_:
    raise TypeError(f"`where` must be a bool array, got {_describe(where)}.")


def check_class_weights(predictions, class_weights, compute_dtype) -> None:
  if class_weights is None:
    return
  num_classes = np.shape(predictions)[-1]
  if np.shape(class_weights) != (num_classes,):
    raise ValueError(
      f"`class_weights` must have shape ({num_classes},), one weight per"
      " class of `predictions` (background included), got shape"
      f" {np.shape(class_weights)}.{layout_hint(np.shape(predictions))}"
    )
  if not jnp.issubdtype(jnp.result_type(class_weights), jnp.number):
    raise TypeError(
      f"`class_weights` must be numeric, got {_describe(class_weights)}."
    )
  if isinstance(class_weights, jax.core.Tracer):
    return  # Traced weights have no values at trace time to check.
  values = np.asarray(class_weights, np.float64)
  limit = _representable_limit(predictions, compute_dtype)
  bad = ~np.isfinite(values) | (values < 0) | (values > limit)
  if np.any(bad):
    raise ValueError(
      f"`class_weights` must be finite, >= 0 and <= {limit:.3g} (larger"
      f" overflows {jnp.dtype(compute_dtype).name}, the dtype the loss is"
      f" computed in for `predictions` of {_describe(predictions)}); got"
      f" {values[bad].tolist()} at class(es) {np.flatnonzero(bad).tolist()}."
    )


def resolve_activation(predictions, from_logits: bool, activation):
  """The activation to apply: None for probabilities, else its name."""
  num_classes = np.shape(predictions)[-1]
  if activation is not None and activation not in ACTIVATIONS:
    raise ValueError(
      f"`activation` must be one of {ACTIVATIONS} or None, got {activation!r}."
    )
  if not from_logits:
    if activation is not None:
      raise ValueError(
        f"`activation={activation!r}` applies to logits: pass"
        " `from_logits=True` too."
      )
    return None
  if activation is None:
    activation = "sigmoid" if num_classes == 1 else "softmax"
  if activation == "softmax" and num_classes == 1:
    raise ValueError(
      "`activation='softmax'` over a single class is constant; predictions"
      f" {np.shape(predictions)} need 'sigmoid' or >= 2 classes."
    )
  return activation


def check_options(predictions, reduction, include_background) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(
      f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}."
    )
  if not include_background and np.shape(predictions)[-1] < 2:
    raise ValueError(
      "`include_background=False` drops class 0, which leaves no class for"
      f" predictions of shape {np.shape(predictions)}."
    )


GENERALIZED = (None, "square", "simple", "uniform")
AVERAGES = ("macro", "micro")
ABSENT_CLASSES = ("count", "exclude", "exclude_per_sample")


def check_family(
  *,
  scale: float,
  class_weights,
  generalized,
  average,
  absent_classes,
  focal_gamma,
  log_loss: bool,
) -> float | None:
  """Checks the Dice-family options together; returns `focal_gamma` as float.

  Refuses combinations that have no meaning: `log_loss` or `focal_gamma`
  with `scale != 1` (1 - sR or the log of sR is not a per-class loss in
  [0, 1] then), both at once, and per-class options (`class_weights`,
  `absent_classes` other than "count") with a single ratio over the classes
  (`generalized`, `average="micro"`).
  """
  for name, value, allowed in (
    ("generalized", generalized, GENERALIZED),
    ("average", average, AVERAGES),
    ("absent_classes", absent_classes, ABSENT_CLASSES),
  ):
    if value not in allowed:
      raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
  if generalized is not None and average == "micro":
    raise ValueError(
      f"`generalized={generalized!r}` and `average='micro'` both define"
      " the single ratio over classes; micro is `generalized='uniform'`."
      " Pass one of them."
    )
  single = (
    f"generalized={generalized!r}"
    if generalized is not None
    else "average='micro'"
    if average == "micro"
    else None
  )
  if single is not None and class_weights is not None:
    raise ValueError(
      f"`class_weights` weight per-class losses; `{single}` computes one"
      " ratio over all classes, so there is no per-class loss to weight."
    )
  if single is not None and absent_classes != "count":
    raise ValueError(
      f"`absent_classes={absent_classes!r}` leaves classes out of the"
      f" mean over classes; `{single}` has no such mean (absent classes"
      " add nothing to its sums)."
    )
  if focal_gamma is not None:
    focal_gamma = check_number("focal_gamma", focal_gamma, positive=True)
  for name, on in (("log_loss", log_loss), ("focal_gamma", focal_gamma)):
    if on is not None and on is not False and scale != 1:
      raise ValueError(
        f"`{name}` needs `scale=1` (the per-class ratio then lies in"
        f" [0, 1]); got scale={scale}."
      )
  if log_loss and focal_gamma is not None:
    raise ValueError(
      "`log_loss=True` and `focal_gamma` are two different per-class"
      " transforms of the ratio; pass one of them."
    )
  return focal_gamma


def check_cross_entropy(
  ce_weight: float, activation, reduction, label_smoothing: float = 0.0
) -> None:
  """`ce_weight > 0` needs logits (CE from log-probabilities) and a reduction.

  `ce_label_smoothing` lies in [0, 1) (eps = 1 would leave no label in the
  targets) and smooths the CE term only, so it needs `ce_weight > 0`.
  """
  if label_smoothing >= 1:
    raise ValueError(
      "`ce_label_smoothing` must lie in [0, 1) (the CE targets are"
      f" (1 - eps) g + eps / K), got {label_smoothing}."
    )
  if label_smoothing and not ce_weight:
    raise ValueError(
      f"`ce_label_smoothing={label_smoothing}` smooths the cross-entropy"
      f" term, but `ce_weight={ce_weight}` adds none: pass `ce_weight > 0`"
      " or leave `ce_label_smoothing` at 0."
    )
  if not ce_weight:
    return
  if activation is None:
    raise ValueError(
      f"`ce_weight={ce_weight}` computes the cross-entropy from the"
      " log-probabilities of logits: pass logits with `from_logits=True`"
      " (log of probabilities is not finite at p = 0)."
    )
  if reduction == "none":
    raise ValueError(
      f"`ce_weight={ce_weight}` adds one cross-entropy mean to the reduced"
      " loss; `reduction='none'` has no single value to add it to. Use"
      " 'mean' or 'sum'."
    )


def check_soft_labels(soft_labels: bool, squared: bool) -> None:
  """`soft_labels` (the L1 TP) has no meaning over squared sums."""
  if soft_labels and squared:
    raise ValueError(
      "`soft_labels=True` cannot be combined with `squared=True`: the L1"
      " TP sum min(p, g) over the denominator sum p^2 + sum g^2 makes the"
      " loss negative at p = g. With squared sums the soft-label form is"
      " MONAI's L2 one, TP = (sum p^2 + sum g^2 - sum (p - g)^2) / 2 ="
      " sum p g: pass `squared=True` alone (for exponent 1 and Dice weights"
      " its minimum is exactly at p = g)."
    )

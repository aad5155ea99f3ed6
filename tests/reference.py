"""Independent references for the pel_jax tests.

Written from the PEL formula, not from the library code:

  TP = sum w p g,  FP = sum w p (1 - g),  FN = sum w (1 - p) g,
  N = sum w p^n g,
  L_c = 1 - scale (N + smooth_nr) / (TP + fp_weight FP + fn_weight FN
                                      + smooth_dr)

summed over the spatial axes (and the batch axis with ``batch=True``), then
multiplied by class weights, background dropped, and reduced.

* `pel_numpy`: float64 NumPy oracle for values (explicit one-hot from ids).
* `pel_jnp`: plain `jax.numpy` transcription, differentiated by ordinary
  autodiff; the oracle for the custom VJP's gradients.
* `seed_*`: the three historical PEL formulas, written out literally.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------
# NumPy float64 oracle.
# ----------------------------------------------------------------------------


def np_sigmoid(x: np.ndarray) -> np.ndarray:
  """Overflow-free logistic function in float64."""
  x = np.asarray(x, np.float64)
  e = np.exp(-np.abs(x))
  return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def np_softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  e = np.exp(x - np.max(x, axis=-1, keepdims=True))
  return e / np.sum(e, axis=-1, keepdims=True)


def np_probabilities(predictions, from_logits=False, activation=None):
  x = np.asarray(predictions).astype(np.float64)  # Exact for any float dtype.
  if not from_logits:
    return x
  if activation is None:
    activation = "sigmoid" if x.shape[-1] == 1 else "softmax"
  return np_sigmoid(x) if activation == "sigmoid" else np_softmax(x)


def np_targets(targets, num_classes, ignore_index=None):
  """Returns `(g [..., C] float64, keep [...] bool)` from ids or float targets."""
  t = np.asarray(targets)
  if np.issubdtype(t.dtype, np.integer):
    g = np.zeros(t.shape + (num_classes,), np.float64)
    for c in range(num_classes):  # Explicit one-hot; other ids: no class.
      g[..., c] = t == c
    if num_classes == 1:  # Binary: id 1 is the one channel's class.
      g[..., 0] = t == 1
    keep = np.ones(t.shape, bool)
    if ignore_index is not None:
      keep = t != ignore_index
    return g, keep
  g = t.astype(np.float64)
  return g, np.ones(g.shape[:-1], bool)


def np_reduce(losses, reduction):
  if reduction == "mean":
    return np.mean(losses)
  if reduction == "sum":
    return np.sum(losses)
  assert reduction == "none"
  return losses


def pel_numpy(
  predictions,
  targets,
  *,
  exponent=3.0,
  scale=1.0,
  fp_weight=1.0,
  fn_weight=1.0,
  smooth_nr=1e-5,
  smooth_dr=1e-5,
  from_logits=False,
  activation=None,
  class_weights=None,
  include_background=True,
  where=None,
  ignore_index=None,
  batch=False,
  reduction="mean",
):
  """float64 NumPy PEL; per-sample `[B, C]` (or `[C]`) losses, then reduced."""
  p = np_probabilities(predictions, from_logits, activation)
  num_classes = p.shape[-1]
  g, keep = np_targets(targets, num_classes, ignore_index)
  if where is not None:
    keep = keep & np.asarray(where, bool)
  w = keep[..., None].astype(np.float64)
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  tp = np.sum(w * p * g, axis=axes)
  fp = np.sum(w * p * (1.0 - g), axis=axes)
  fn = np.sum(w * (1.0 - p) * g, axis=axes)
  numer = np.sum(w * p**exponent * g, axis=axes)
  denom = tp + fp_weight * fp + fn_weight * fn + smooth_dr
  empty = denom == 0
  ratio = np.where(
    empty, 1.0, (numer + smooth_nr) / np.where(empty, 1.0, denom)
  )
  losses = 1.0 - scale * ratio
  if class_weights is not None:
    losses = losses * np.asarray(class_weights, np.float64)
  if not include_background:
    losses = losses[..., 1:]
  return np_reduce(losses, reduction)


# ----------------------------------------------------------------------------
# Plain jax.numpy transcription (the autodiff oracle for gradients).
# ----------------------------------------------------------------------------


def pel_jnp(
  predictions,
  targets,
  *,
  exponent=3.0,
  scale=1.0,
  fp_weight=1.0,
  fn_weight=1.0,
  smooth_nr=1e-5,
  smooth_dr=1e-5,
  from_logits=False,
  activation=None,
  class_weights=None,
  include_background=True,
  where=None,
  ignore_index=None,
  batch=False,
  reduction="mean",
):
  """The same formula with `jnp`, differentiable by plain autodiff.

  Valid for probabilities in (0, 1) (p^n with n < 1 has an infinite slope
  at 0, which autodiff reports as inf/nan).
  """
  x = jnp.asarray(predictions)
  num_classes = x.shape[-1]
  if from_logits:
    if activation is None:
      activation = "sigmoid" if num_classes == 1 else "softmax"
    if activation == "sigmoid":
      p = 1.0 / (1.0 + jnp.exp(-x))
    else:
      e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
      p = e / jnp.sum(e, axis=-1, keepdims=True)
  else:
    p = x
  t = jnp.asarray(targets)
  if jnp.issubdtype(t.dtype, jnp.integer):
    ids = range(num_classes) if num_classes > 1 else (1,)  # Binary: id 1.
    g = jnp.stack([(t == c) for c in ids], -1).astype(p.dtype)
    keep = jnp.ones(t.shape, bool)
    if ignore_index is not None:
      keep = t != ignore_index
  else:
    g = t
    keep = jnp.ones(t.shape[:-1], bool)
  if where is not None:
    keep = keep & where
  w = keep[..., None].astype(p.dtype)
  axes = tuple(range(0 if batch else 1, x.ndim - 1))
  tp = jnp.sum(w * p * g, axis=axes)
  fp = jnp.sum(w * p * (1.0 - g), axis=axes)
  fn = jnp.sum(w * (1.0 - p) * g, axis=axes)
  numer = jnp.sum(w * p**exponent * g, axis=axes)
  denom = tp + fp_weight * fp + fn_weight * fn + smooth_dr
  losses = 1.0 - scale * (numer + smooth_nr) / denom
  if class_weights is not None:
    losses = losses * jnp.asarray(class_weights, losses.dtype)
  if not include_background:
    losses = losses[..., 1:]
  if reduction == "mean":
    return jnp.mean(losses)
  if reduction == "sum":
    return jnp.sum(losses)
  return losses


# ----------------------------------------------------------------------------
# The three historical formulas (hard labels, probabilities), written out.
# ----------------------------------------------------------------------------


def seed_readme(p, g, n):
  """README: 1 - sum p^n g / (sum p g + sum p (1-g) + sum (1-p) g), [B, C]."""
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  axes = tuple(range(1, p.ndim - 1))
  s = lambda f: np.sum(f, axis=axes)
  return 1.0 - s(p**n * g) / (s(p * g) + s(p * (1 - g)) + s((1 - p) * g))


def seed_vectorized(p, g, n):
  """Vectorized: 1 - sum p^n g / (sum p + sum g), [B, C]."""
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  axes = tuple(range(1, p.ndim - 1))
  return 1.0 - np.sum(p**n * g, axis=axes) / (
    np.sum(p, axis=axes) + np.sum(g, axis=axes)
  )


def seed_authors(p, g):
  """Authors' code: 1 - 20 sum (p g)^3 / (sum p + sum g) per channel, [C]."""
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  num_classes = p.shape[-1]
  out = []
  for c in range(num_classes):  # Whole batch per channel.
    pc, gc = p[..., c].ravel(), g[..., c].ravel()
    out.append(1.0 - 20.0 * np.sum((pc * gc) ** 3) / (np.sum(pc) + np.sum(gc)))
  return np.array(out)


# ----------------------------------------------------------------------------
# Random test inputs (NumPy, seeded).
# ----------------------------------------------------------------------------


def make_predictions(rng, shape, kind="probs", dtype=np.float32):
  """`kind`: "probs" (in [0.05, 0.95]), or logits ("sigmoid"/"softmax")."""
  if kind == "probs":
    x = rng.uniform(0.05, 0.95, shape)
  else:
    x = 2.0 * rng.standard_normal(shape)
  return np.asarray(x, dtype)


def make_targets(rng, shape, kind="int", dtype=np.float32):
  """Targets for predictions of `shape` [B, *S, C].

  kind: "int" (ids [B, *S]; a 0/1 mask for C = 1), "onehot", "multihot",
  "soft" or "bool".
  """
  num_classes = shape[-1]
  ids = rng.integers(0, max(num_classes, 2), shape[:-1])  # C = 1: 0/1 mask.
  if kind == "int":
    return ids.astype(np.int32)
  if kind == "onehot":
    return np.eye(num_classes, dtype=dtype)[ids % num_classes]
  if kind == "multihot":
    return (rng.uniform(size=shape) < 0.4).astype(dtype)
  if kind == "bool":
    return rng.uniform(size=shape) < 0.4
  assert kind == "soft"
  return rng.uniform(0.0, 1.0, shape).astype(dtype)


def make_mask(rng, shape, fraction=0.7):
  """A bool `where` of shape [B, *S] (shape without the class axis)."""
  return rng.uniform(size=shape[:-1]) < fraction


def central_differences(f, x, h=1e-6):
  """The gradient of scalar `f` at float64 `x`, entry by entry, by central
  differences with step `h`: a reference that does not differentiate."""
  grad = np.zeros(x.shape)
  for i in np.ndindex(x.shape):
    step = np.zeros(x.shape)
    step[i] = h
    grad[i] = (f(x + step) - f(x - step)) / (2 * h)
  return grad

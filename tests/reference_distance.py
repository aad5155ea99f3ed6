"""SciPy references of the distance maps (test-only: SciPy is no dependency)."""

import numpy as np
from scipy import ndimage


def one_hot2dist(mask, spacing=None):
  """Kervadec et al.'s reference `one_hot2dist` (LIVIAETS/boundary-loss),
  one class: bool `[B, *spatial]` -> float64 maps, per sample."""
  out = np.zeros(mask.shape)
  for b, pos in enumerate(mask):
    if pos.any():
      neg = ~pos
      outside = ndimage.distance_transform_edt(neg, sampling=spacing)
      inside = ndimage.distance_transform_edt(pos, sampling=spacing)
      out[b] = outside * neg - (inside - 1) * pos
  return out


def softmax(x):
  """Float64 softmax over the last (class) axis."""
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def blob_case(shape, classes, seed, scale=1.0):
  """Normal logits `shape + (classes,)` and blob-shaped ids `shape`
  (smoothed noise, arg-max over the classes), from one seeded generator."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, scale, size=shape + (classes,))
  sigma = (0,) + (1.5,) * (len(shape) - 1) + (0,)
  ids = np.argmax(ndimage.gaussian_filter(rng.random(logits.shape), sigma), -1)
  return logits, ids

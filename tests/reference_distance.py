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

"""Writes surface_values.json: MONAI 1.6.1's surface-distance metrics run on
seeded masks with B > 1, C > 1 and anisotropic spacing.

tests/surface_test.py checks pel_jax's `hausdorff_distance`,
`average_surface_distance` and `surface_dice` against them without
importing torch or MONAI. Each case stores the integer class ids of the
prediction and the target (`[B, *spatial]`, one-hot encoded channels-first
for MONAI here), the number of classes, the options, and MONAI's
`compute_hausdorff_distance` (max and 95th percentile, symmetric and
directed), `compute_average_surface_distance(symmetric=True)` and
`compute_surface_dice` (`use_subvoxels=False`), each `[B, C']`; NaN and inf
are written as JSON's NaN and Infinity.

Run it in a virtual environment outside the repository:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 scipy numpy
  /tmp/peers/bin/python tests/peer_values/make_surface_values.py

It refuses MONAI versions other than 1.6.1.
"""

from __future__ import annotations

import json
import pathlib
import sys
import warnings

import monai
from monai import metrics
import numpy as np
from scipy import ndimage
import torch

OUT = pathlib.Path(__file__).with_name("surface_values.json")


def _ids(rng, shape, classes, sigma):
  """Blob-shaped ids: smoothed noise, arg-max over the classes."""
  noise = rng.random(shape + (classes,))
  sigmas = (0,) + (sigma,) * (len(shape) - 1) + (0,)
  return np.argmax(ndimage.gaussian_filter(noise, sigmas), -1)


def _cases(rng):
  """(name, prediction ids, target ids, classes, spacing, background,
  tolerances)."""
  t2 = _ids(rng, (3, 24, 20), 3, 2.0)
  p2 = _ids(rng, (3, 24, 20), 3, 2.0)
  t2[0][t2[0] == 2] = 0  # class 2 only in the prediction
  p2[1][p2[1] == 1] = 0  # class 1 only in the target
  t2[2][t2[2] == 2] = 1  # class 2 in neither
  p2[2][p2[2] == 2] = 1
  t3 = _ids(rng, (2, 10, 12, 9), 3, 1.5)
  p3 = _ids(rng, (2, 10, 12, 9), 3, 1.5)
  return [
    ("2d_spacing", p2, t2, 3, [1.5, 0.7], True, [1.0, 1.0, 2.5]),
    ("2d_no_background", p2, t2, 3, None, False, [1.2, 2.0]),
    ("3d_spacing", p3, t3, 3, [2.0, 1.0, 0.5], True, [1.0, 1.5, 2.0]),
  ]


def _one_hot(ids, classes):
  """Channels-first float one-hot `[B, C, *spatial]`, MONAI's layout."""
  return torch.from_numpy(np.moveaxis(np.eye(classes)[ids], -1, 1))


def _plain(x):
  return x.double().numpy().tolist()


def main():
  if monai.__version__ != "1.6.1":
    sys.exit(f"MONAI {monai.__version__}: this file records 1.6.1.")
  rng = np.random.default_rng(23)
  cases = []
  for name, p, t, classes, spacing, background, taus in _cases(rng):
    yp, y = _one_hot(p, classes), _one_hot(t, classes)
    common = {"include_background": background, "spacing": spacing}
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # MONAI warns on the empty classes
      hd = metrics.compute_hausdorff_distance(yp, y, **common)
      hd95 = metrics.compute_hausdorff_distance(yp, y, percentile=95, **common)
      hd_directed = metrics.compute_hausdorff_distance(
        yp, y, directed=True, **common
      )
      asd = metrics.compute_average_surface_distance(
        yp, y, symmetric=True, **common
      )
      nsd = metrics.compute_surface_dice(yp, y, class_thresholds=taus, **common)
    cases.append(
      {
        "name": name,
        "predictions": p.tolist(),
        "targets": t.tolist(),
        "num_classes": classes,
        "spacing": spacing,
        "include_background": background,
        "tolerance": taus,
        "hausdorff": _plain(hd),
        "hausdorff95": _plain(hd95),
        "hausdorff_directed": _plain(hd_directed),
        "average_surface_distance": _plain(asd),
        "surface_dice": _plain(nsd),
      }
    )
  stored = {
    "monai": monai.__version__,
    "torch": torch.__version__,
    "cases": cases,
  }
  OUT.write_text(json.dumps(stored) + "\n")
  print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
  main()

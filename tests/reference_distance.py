"""SciPy references of the distance maps (test-only: SciPy is no dependency)."""

import json
import pathlib

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


_PEERS = pathlib.Path(__file__).parent / "peer_values" / "hausdorff_values.json"


def monai_run_cases(classes):
  """The cases of peer_values/hausdorff_values.json (MONAI 1.6.1 run by
  make_hausdorff_values.py) for the MONAI loss `classes`: dicts with the
  inputs as arrays (`x`, `targets`: int32 ids or float64), the pel_jax
  keywords and MONAI's `loss` and `grad`."""
  stored = json.loads(_PEERS.read_text())
  if stored["monai"] != "1.6.1":
    raise ValueError(f"peer values of MONAI {stored['monai']}, not 1.6.1")
  cases = []
  for case in stored["cases"]:
    if case["monai_class"] in classes:
      dtype = np.int32 if case["targets_are_ids"] else np.float64
      cases.append(
        {
          "name": case["name"],
          "monai_class": case["monai_class"],
          "x": np.asarray(case["input"]),
          "targets": np.asarray(case["targets"], dtype),
          "kwargs": case["pel_jax_kwargs"],
          "loss": np.asarray(case["loss"]),
          "grad": np.asarray(case["grad"]),
        }
      )
  return cases


def surface_metrics(pred, target, spacing=None, percentile=None, tau=None):
  """MONAI's surface metrics of one pair of bool `[*spatial]` masks, in
  float64 with SciPy: `(hd, directed hd, assd, nsd)`. Surfaces are each
  mask minus its `binary_erosion` (cross, outside False); the distances
  from one surface to the other are SciPy's exact EDT of the other's
  complement; the percentile is NumPy's linear one. Empty: both -> NaN,
  one -> inf (NSD: 0)."""
  ep = pred & ~ndimage.binary_erosion(pred)
  eg = target & ~ndimage.binary_erosion(target)
  if not ep.any() and not eg.any():
    return (np.nan,) * 4
  if not ep.any() or not eg.any():
    return np.inf, np.inf, np.inf, 0.0
  pg = ndimage.distance_transform_edt(~eg, sampling=spacing)[ep]
  gp = ndimage.distance_transform_edt(~ep, sampling=spacing)[eg]
  q = 100 if percentile is None else percentile
  directed = np.percentile(pg, q)
  hd = max(directed, np.percentile(gp, q))
  both = np.concatenate([pg, gp])
  nsd = np.nan if tau is None else np.mean(both <= tau)
  return hd, directed, both.mean(), nsd

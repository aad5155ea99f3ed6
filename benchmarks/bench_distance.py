"""pel_jax.distance_transform against scipy.ndimage.distance_transform_edt.

Run from the repository root:

    python benchmarks/bench_distance.py                # ~40 s on 2 loaded cores
    python benchmarks/bench_distance.py --sizes 1x256x256 --masks blobs

Both in this process, float32 on the CPU: SciPy loops over the batch (as
every peer does), pel_jax runs one jitted call on the whole batch. The
masks (True = foreground, measured to the nearest False pixel):

  blobs   smoothed noise thresholded at its median: segmentation-like
          regions, largest distance about a tenth of the side;
  ball    one ball of radius 0.4 side at the centre: one large organ,
          largest distance 0.4 side inside, 0.3 side in the corners;
  noise   1% False pixels at random: distances of a few pixels;
  corner  one False pixel in a corner: the largest distance is the whole
          diagonal, pel_jax's worst case (its cost grows with it).

Prints a markdown table: medians over `--repeats` timed calls of each,
interleaved (SciPy, pel_jax, SciPy, ...), and the largest difference
between the two maps.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from scipy import ndimage

import pel_jax

SIZES = ("1x256x256", "8x256x256", "1x512x512", "8x512x512", "1x128x128x128")
MASKS = ("blobs", "ball", "noise", "corner")


def make_mask(kind: str, shape, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if kind == "blobs":
    sigma = (0,) + (shape[1] / 32,) * (len(shape) - 1)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.median(field)
  if kind == "ball":
    axes = [np.arange(n) - (n - 1) / 2 for n in shape[1:]]
    r2 = sum(a**2 for a in np.meshgrid(*axes, indexing="ij"))
    return np.broadcast_to(r2 < (0.4 * shape[1]) ** 2, shape)
  if kind == "noise":
    return rng.random(shape) > 0.01
  if kind == "corner":
    mask = np.ones(shape, bool)
    mask[(slice(None),) + (0,) * (len(shape) - 1)] = False
    return mask
  raise ValueError(f"unknown mask {kind!r}; pick from {MASKS}")


def scipy_edt(mask: np.ndarray) -> np.ndarray:
  return np.stack([ndimage.distance_transform_edt(m) for m in mask])


def _timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def run(kind: str, shape, repeats: int) -> dict:
  mask = make_mask(kind, shape)
  ours = jax.jit(pel_jax.distance_transform)
  device_mask = jax.device_put(mask)
  diff = float(np.max(np.abs(np.asarray(ours(device_mask)) - scipy_edt(mask))))
  ours_s, scipy_s = [], []
  for _ in range(repeats):
    scipy_s.append(_timed(scipy_edt, mask))
    ours_s.append(_timed(ours, device_mask))
  scipy_ms = 1e3 * float(np.median(scipy_s))
  ours_ms = 1e3 * float(np.median(ours_s))
  return dict(
    shape="x".join(map(str, shape)),
    mask=kind,
    scipy_ms=scipy_ms,
    ours_ms=ours_ms,
    speedup=scipy_ms / ours_ms,
    max_diff=diff,
  )


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", nargs="+", default=SIZES)
  parser.add_argument("--masks", nargs="+", default=MASKS, choices=MASKS)
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  print(
    "| shape [B, *S] | mask | SciPy ms | pel_jax ms | SciPy / pel_jax |"
    " max abs diff |"
  )
  print("|---|---|---:|---:|---:|---:|")
  for size in args.sizes:
    shape = tuple(int(n) for n in size.split("x"))
    for kind in args.masks:
      r = run(kind, shape, args.repeats)
      print(
        f"| {r['shape']} | {r['mask']} | {r['scipy_ms']:.1f} |"
        f" {r['ours_ms']:.1f} | {r['speedup']:.2f} | {r['max_diff']:.1e} |",
        flush=True,
      )


if __name__ == "__main__":
  main()

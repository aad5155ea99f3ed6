"""Surface metrics: pel_jax against MONAI (torch CPU) and SciPy, side by side.

Run from the repository root:

    python benchmarks/bench_surface.py              # ~2 min on 2 loaded cores
    python benchmarks/bench_surface.py --sizes 2x256x256 --repeats 3

Each row times the three metrics of one batch, HD95, ASSD and surface Dice
at 1.5 pixels, per sample and foreground class (`[B, C - 1]`), of blob-shaped
class ids (`make_pair`: a prediction `near` the target, or `far` from it):

  pel_jax  one jitted call computing all three (`hausdorff_distance(...,
           percentile=95)`, `average_surface_distance`, `surface_dice`);
  SciPy    a Python loop over samples and classes: `binary_erosion` for the
           surfaces, `distance_transform_edt` of each surface's complement,
           `numpy.percentile` (tests/reference_distance.py's method);
  MONAI    `compute_hausdorff_distance(percentile=95)`,
           `compute_average_surface_distance(symmetric=True)` and
           `compute_surface_dice` on one-hot float tensors, run by
           `--peers-python` (a virtual environment with torch and MONAI
           1.6.1; the column is left out without one) in a subprocess on
           the same masks, timed there.

Prints a markdown table: medians over `--repeats` timed calls, and the
largest difference of pel_jax's values from MONAI's and SciPy's (finite
entries; the non-finite ones must match).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import tempfile
import time

import jax
import numpy as np
from scipy import ndimage

import pel_jax

SIZES = ("2x256x256", "2x512x512", "2x64x64x64")
PAIRS = ("near", "far")
CLASSES = 3
TOLERANCE = 1.5

# Run by the peers' Python: times MONAI's three metrics on the saved masks
# and prints their median time and values as JSON.
_MONAI = """
import json, sys, time, warnings
import numpy as np, torch
from monai import metrics
data = np.load(sys.argv[1])
repeats, classes, tol = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def one_hot(ids):
  return torch.from_numpy(np.moveaxis(np.eye(classes)[ids], -1, 1))
yp, y = one_hot(data["pred"]), one_hot(data["target"])
def three():
  return (
    metrics.compute_hausdorff_distance(yp, y, percentile=95),
    metrics.compute_average_surface_distance(yp, y, symmetric=True),
    metrics.compute_surface_dice(yp, y, class_thresholds=[tol] * (classes - 1)),
  )
times = []
with warnings.catch_warnings():
  warnings.simplefilter("ignore")
  for _ in range(repeats):
    start = time.perf_counter()
    values = three()
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1e3 * float(np.median(times)),
                  "values": [v.double().numpy().tolist() for v in values]}))
"""


def make_pair(shape, kind: str, seed: int = 0):
  """Class ids `shape` of a prediction and a target: arg-max over the
  classes of smoothed noise (blobs about a sixteenth of the side); the
  target from one draw, the prediction from `near`: the same draw plus a
  weaker independent one (boundaries moved by a few pixels, a decent
  model), or `far`: an independent draw (Hausdorff distances of a fifth
  of the side, the transform's slow case)."""
  rng = np.random.default_rng(seed)
  sigma = (0,) + (shape[1] / 32,) * (len(shape) - 1) + (0,)

  def field():
    noise = ndimage.gaussian_filter(rng.random(shape + (CLASSES,)), sigma)
    return (noise - noise.mean()) / noise.std()

  target = field()
  other = field()
  pred = target + 0.3 * other if kind == "near" else other
  return (
    np.argmax(pred, -1).astype(np.int32),
    np.argmax(target, -1).astype(np.int32),
  )


def scipy_metrics(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """`[3, B, C - 1]`: HD95, ASSD and NSD of each sample and foreground
  class, in a Python loop as the peers do."""
  out = np.empty((3, pred.shape[0], CLASSES - 1))
  edt = ndimage.distance_transform_edt
  for b in range(pred.shape[0]):
    for c in range(1, CLASSES):
      p, g = pred[b] == c, target[b] == c
      ep = p & ~ndimage.binary_erosion(p)
      eg = g & ~ndimage.binary_erosion(g)
      pg, gp = edt(~eg)[ep], edt(~ep)[eg]
      both = np.concatenate([pg, gp])
      out[:, b, c - 1] = (
        max(np.percentile(pg, 95), np.percentile(gp, 95)),
        both.mean(),
        np.mean(both <= TOLERANCE),
      )
  return out


@jax.jit
def pel_jax_metrics(pred, target):
  kw = {"num_classes": CLASSES, "include_background": False}
  return jax.numpy.stack(
    [
      pel_jax.hausdorff_distance(pred, target, percentile=95, **kw),
      pel_jax.average_surface_distance(pred, target, **kw),
      pel_jax.surface_dice(pred, target, tolerance=TOLERANCE, **kw),
    ]
  )


def _median_ms(fn, *args, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def _max_diff(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  finite = np.isfinite(theirs)
  if not np.array_equal(np.isfinite(ours), finite):
    return float("nan")
  return float(np.max(np.abs(ours - theirs)[finite], initial=0.0))


def monai(pred, target, python: str, repeats: int) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "masks.npz"
    np.savez(path, pred=pred, target=target)
    args = [python, "-c", _MONAI, str(path), str(repeats), str(CLASSES)]
    done = subprocess.run(
      args + [str(TOLERANCE)], capture_output=True, text=True, check=True
    )
  return json.loads(done.stdout.splitlines()[-1])


def run(shape, kind: str, repeats: int, peers_python: str | None) -> dict:
  pred, target = make_pair(shape, kind)
  ours = np.asarray(pel_jax_metrics(pred, target))  # compiles
  row = {
    "shape": "x".join(map(str, shape)),
    "masks": kind,
    "scipy_ms": _median_ms(scipy_metrics, pred, target, repeats=repeats),
    "ours_ms": _median_ms(pel_jax_metrics, pred, target, repeats=repeats),
    "diff_scipy": _max_diff(ours, scipy_metrics(pred, target)),
  }
  if peers_python:
    result = monai(pred, target, peers_python, repeats)
    row["monai_ms"] = result["ms"]
    # MONAI's distances are float32, like pel_jax's here.
    row["diff_monai"] = _max_diff(ours, result["values"])
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", nargs="+", default=SIZES)
  parser.add_argument("--pairs", nargs="+", default=PAIRS, choices=PAIRS)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--peers-python",
    default="/work/peers-venv/bin/python",
    help="a Python with torch and MONAI 1.6.1; '' leaves MONAI out",
  )
  args = parser.parse_args(argv)
  peers = args.peers_python
  if peers and not pathlib.Path(peers).exists():
    peers = None
  head = "| shape [B, *S] | masks | SciPy ms | pel_jax ms | SciPy / pel_jax |"
  rule = "|---|---|---:|---:|---:|"
  if peers:
    head += " MONAI ms | MONAI / pel_jax |"
    rule += "---:|---:|"
  print(head + " max diff vs SciPy | max diff vs MONAI |")
  print(rule + "---:|---:|")
  for size in args.sizes:
    shape = tuple(int(n) for n in size.split("x"))
    for kind in args.pairs:
      r = run(shape, kind, args.repeats, peers)
      line = (
        f"| {r['shape']} | {kind} | {r['scipy_ms']:.1f} | {r['ours_ms']:.1f} |"
        f" {r['scipy_ms'] / r['ours_ms']:.2f} |"
      )
      if peers:
        line += f" {r['monai_ms']:.1f} | {r['monai_ms'] / r['ours_ms']:.2f} |"
      diff_monai = f"{r['diff_monai']:.1e}" if peers else "-"
      print(f"{line} {r['diff_scipy']:.1e} | {diff_monai} |", flush=True)


if __name__ == "__main__":
  main()

"""Segmentation metrics: IoU and Dice of a confusion matrix (pel_jax), boundary
F1, and the surface metrics HD95 and surface Dice (pel_jax, on the device)."""

from __future__ import annotations

import functools

import jax
import numpy as np

import pel_jax


def confusion_matrix(
  pred: np.ndarray, target: np.ndarray, num_classes: int
) -> np.ndarray:
  """`cm[t, p]` = number of pixels with target t predicted as p."""
  flat = target.astype(np.int64).ravel() * num_classes + pred.ravel()
  return np.bincount(flat, minlength=num_classes**2).reshape(
    num_classes, num_classes
  )


def _shift_max(x: np.ndarray, r: int) -> np.ndarray:
  """Max over a (2r+1)^2 square window (binary dilation), per image."""
  for axis in (-2, -1):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad)
    x = np.max(
      [
        np.take(xp, np.arange(i, i + x.shape[axis]), axis=axis)
        for i in range(2 * r + 1)
      ],
      axis=0,
    )
  return x


def _boundary(m: np.ndarray) -> np.ndarray:
  """Pixels of `m` with a 4-neighbour outside `m` (image borders don't count)."""
  p = np.pad(m, [(0, 0), (1, 1), (1, 1)], mode="edge")
  inner = p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
  return m & ~inner


def boundary_counts(
  pred: np.ndarray, target: np.ndarray, num_classes: int, tolerance: int = 2
) -> np.ndarray:
  """Per class `[matched_pred, pred, matched_true, true]` boundary pixels.

  A predicted boundary pixel is matched if a true boundary pixel lies within
  `tolerance` pixels (Chebyshev), and vice versa. `pred`, `target`: `[B, H, W]`.
  """
  counts = np.zeros((num_classes, 4), np.int64)
  for c in range(num_classes):
    bp, bt = _boundary(pred == c), _boundary(target == c)
    counts[c] = [
      (bp & _shift_max(bt, tolerance)).sum(),
      bp.sum(),
      (bt & _shift_max(bp, tolerance)).sum(),
      bt.sum(),
    ]
  return counts


def summarize(cm: np.ndarray, bcounts: np.ndarray) -> dict:
  """Per-class IoU, Dice and boundary F1, and the headline numbers.

  `val_iou`, `val_dice` and `val_bf1` average the foreground classes
  1..C-1 (for binary data: the foreground class); `*_all` include class 0.
  A class absent from both prediction and target scores 1.
  """
  tp = np.diag(cm).astype(np.float64)
  fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
  # pel_jax's per-class metrics of the confusion-matrix sums, in float64 as
  # the counts; zero_division=1: a class in neither prediction nor target
  # scores 1 (MONAI's ignore_empty=False).
  with jax.enable_x64(True):
    per_class = pel_jax.segmentation_metrics(
      (tp, fp, fn, cm.sum() - tp - fp - fn), average="none", zero_division=1.0
    )
  iou, dice = np.asarray(per_class.iou), np.asarray(per_class.dice)
  # Boundary precision and recall count different matches (predicted vs
  # true boundary pixels), not one TP of the same sums.
  with np.errstate(invalid="ignore", divide="ignore"):
    prec = np.where(bcounts[:, 1] > 0, bcounts[:, 0] / bcounts[:, 1], 1.0)
    rec = np.where(bcounts[:, 3] > 0, bcounts[:, 2] / bcounts[:, 3], 1.0)
    bf1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
  fg = slice(1, None)
  return {
    "val_iou": float(iou[fg].mean()),
    "val_dice": float(dice[fg].mean()),
    "val_bf1": float(bf1[fg].mean()),
    "val_iou_all": float(iou.mean()),
    "pixel_accuracy": float(tp.sum() / cm.sum()),
    "per_class": {
      str(c): {
        "iou": float(iou[c]),
        "dice": float(dice[c]),
        "bf1": float(bf1[c]),
        "pixels": int(cm[c].sum()),
      }
      for c in range(len(tp))
    },
  }


# How `surface_values` and `surface_summary` treat a class missing from an
# image's prediction or target; saved beside the numbers in metrics.json.
SURFACE_DEFINITION = (
  "HD95 (95th percentile Hausdorff distance, pixels) and surface Dice at"
  " surface_tolerance pixels, per image and class (pel_jax, MONAI's"
  " surfaces), then the mean over the images; val_hd95/val_nsd average the"
  " foreground classes. A class in neither the prediction nor the target of"
  " an image is left out of its mean; one in only one of them counts as"
  " surface Dice 0 and HD95 = the image diagonal (MONAI: +inf)"
)


@functools.partial(jax.jit, static_argnames=("num_classes", "tolerance"))
def _surface(pred, target, num_classes: int, tolerance: float):
  kw = dict(num_classes=num_classes)
  return (
    pel_jax.hausdorff_distance(pred, target, percentile=95, **kw)[0],
    pel_jax.surface_dice(pred, target, tolerance=tolerance, **kw)[0],
  )


def surface_values(
  pred: np.ndarray, target: np.ndarray, num_classes: int, tolerance: float
) -> np.ndarray:
  """Per class `[HD95, surface Dice]` of one image's ids `[H, W]`: `[C, 2]`.

  The empty-class policy of `SURFACE_DEFINITION`: NaN for a class in
  neither map, HD95 = the diagonal sqrt((H-1)^2 + (W-1)^2) where MONAI's is
  +inf (the class in only one map; the surface Dice is 0 there).
  """
  hd, nsd = _surface(
    pred[None], target[None], num_classes=num_classes, tolerance=tolerance
  )
  diagonal = np.hypot(*(np.asarray(pred.shape) - 1))
  hd = np.asarray(hd, np.float64)
  return np.stack([np.where(np.isinf(hd), diagonal, hd), nsd], -1)


def surface_summary(values: list[np.ndarray]) -> dict:
  """The mean over images of `surface_values`, NaN entries left out.

  Returns `val_hd95` and `val_nsd` (foreground classes averaged, None if
  no image has one) and per class `hd95`, `nsd`, `surface_images` (the
  images counted).
  """
  v = np.stack(values)  # [images, C, 2]
  counted = ~np.isnan(v[..., 0])
  with np.errstate(invalid="ignore"):
    mean = np.nansum(v, 0) / counted.sum(0)[:, None]  # NaN: no image

  def number(x):
    return None if np.isnan(x) else float(x)

  with np.errstate(invalid="ignore"):
    fg = [
      number(np.nanmean(mean[1:, k])) if counted[:, 1:].any() else None
      for k in (0, 1)
    ]
  return {
    "val_hd95": fg[0],
    "val_nsd": fg[1],
    "surface_definition": SURFACE_DEFINITION,
    "per_class": {
      str(c): {
        "hd95": number(mean[c, 0]),
        "nsd": number(mean[c, 1]),
        "surface_images": int(counted[:, c].sum()),
      }
      for c in range(v.shape[1])
    },
  }


def surface_line(summary: dict, tolerance: float) -> str:
  """One line of the foreground HD95 and surface Dice."""

  def show(x):
    return "n/a" if x is None else f"{x:.4f}"

  return (
    f"surfaces: HD95 {show(summary['val_hd95'])} px  surface Dice"
    f" ({tolerance:g} px) {show(summary['val_nsd'])}"
  )


def table(summary: dict) -> str:
  rows = [f"{'class':>6} {'IoU':>7} {'Dice':>7} {'BF1':>7} {'pixels':>10}"]
  for c, m in summary["per_class"].items():
    rows.append(
      f"{c:>6} {m['iou']:7.4f} {m['dice']:7.4f} {m['bf1']:7.4f}"
      f" {m['pixels']:>10d}"
    )
  rows.append(
    f"{'fg':>6} {summary['val_iou']:7.4f} {summary['val_dice']:7.4f}"
    f" {summary['val_bf1']:7.4f}"
  )
  return "\n".join(rows)

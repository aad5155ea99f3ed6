"""Overlay figure: one evaluation image as segmented by the base and each arm."""

from __future__ import annotations

import numpy as np

# Pixel outcome colours (RGB): correct nucleus, wrong nucleus class, false
# positive, missed nucleus. Correct background is left as the image.
COLOURS = {
  "correct": (0.1, 0.8, 0.1),
  "wrong class": (1.0, 0.85, 0.0),
  "false positive": (0.95, 0.1, 0.1),
  "missed": (0.1, 0.3, 1.0),
}


def outcome(pred: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
  """Boolean maps of `COLOURS`' outcomes for class-id maps `pred`, `mask`."""
  fg_p, fg_t = pred > 0, mask > 0
  return {
    "correct": fg_p & fg_t & (pred == mask),
    "wrong class": fg_p & fg_t & (pred != mask),
    "false positive": fg_p & ~fg_t,
    "missed": ~fg_p & fg_t,
  }


def blend(
  image: np.ndarray, pred: np.ndarray, mask: np.ndarray, alpha: float = 0.45
) -> np.ndarray:
  """RGB image with each outcome's colour blended in at `alpha`."""
  rgb = np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]
  rgb = rgb.astype(np.float64).copy()
  for name, where in outcome(pred, mask).items():
    rgb[where] = (1 - alpha) * rgb[where] + alpha * np.array(COLOURS[name])
  return np.clip(rgb, 0, 1)


def overlays(
  path,
  image: np.ndarray,
  mask: np.ndarray,
  preds: dict[str, np.ndarray],
  title: str,
) -> None:
  """Image, truth and one panel per prediction in `preds` (name -> class ids)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  n = len(preds) + 2
  cols = min(n, 4)
  rows = -(-n // cols)
  fig, axes = plt.subplots(
    rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False
  )
  rgb = np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]
  panels = [("image", rgb), ("truth", blend(image, mask, mask))]
  panels += [(name, blend(image, p, mask)) for name, p in preds.items()]
  for ax, (name, im) in zip(axes.ravel(), panels):
    ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
    ax.set_title(name, fontsize=9)
  for ax in axes.ravel():
    ax.axis("off")
  fig.legend(
    handles=[Patch(color=c, label=k) for k, c in COLOURS.items()],
    loc="lower center",
    ncol=4,
    fontsize=8,
  )
  fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, 0.05, 1, 0.97))
  fig.savefig(path, dpi=80)
  plt.close(fig)

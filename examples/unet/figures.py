"""Diagnostic figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import pathlib

import jax
import matplotlib
from matplotlib import colors
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

import pel_jax

from . import data
from . import losses


def weight_maps(
  logits: np.ndarray, mask: np.ndarray, cfg
) -> tuple[np.ndarray, np.ndarray]:
  """Per-pixel |dL/dlogits| of PEL (with the run's n, s, weights) and of Dice.

  Taken w.r.t. the logits, so the softmax Jacobian is included: the maps
  show where each loss actually pushes the network for this prediction.
  """
  z, g = logits[None], mask[None]
  pel = pel_jax.weight_map(
    z, g, loss_fn=losses.region_loss_fn("pel", cfg), from_logits=True
  )
  dice = pel_jax.weight_map(z, g, loss_fn=pel_jax.dice_loss, from_logits=True)
  return np.asarray(pel[0]), np.asarray(dice[0])


WEIGHT_LABEL = "Σ_c |∂L/∂z_c| per pixel (log scale)"


def sample_figure(
  image: np.ndarray,
  mask: np.ndarray,
  logits: np.ndarray,
  cfg,
  num_classes: int,
  title: str = "",
):
  """image | truth | prediction | |p - g| | PEL weight | Dice weight.

  The image is shown contrast-stretched (`data.stretch`: dim fluorescence
  would look black). The two weight maps share one logarithmic colour scale (one colorbar,
  labelled with the quantity), so their colours compare directly: PEL's
  weights are about `scale` times larger. Panels grow with the image, up to
  640 pixels, and wrap to two rows when large.
  """
  c = num_classes
  probs = np.asarray(jax.nn.softmax(logits, -1))
  deviation = 0.5 * np.abs(probs - np.eye(c)[mask]).sum(-1)
  pel, dice = weight_maps(logits, mask, cfg)
  top = max(float(pel.max()), float(dice.max()), 1e-30)
  weights = colors.LogNorm(vmin=top * 1e-4, vmax=top, clip=True)
  shown = data.stretch(image)
  panels = [
    (
      "image (contrast-stretched)",
      shown if shown.shape[-1] == 3 else shown[..., 0],
      dict(cmap="gray", vmin=0, vmax=1),
    ),
    ("ground truth", mask, dict(cmap="viridis", vmin=0, vmax=c - 1)),
    ("prediction", probs.argmax(-1), dict(cmap="viridis", vmin=0, vmax=c - 1)),
    ("|p - g|", deviation, dict(cmap="magma", vmin=0, vmax=1)),
    (
      f"PEL weight (n={cfg.exponent:g}), max {pel.max():.1e}",
      pel,
      dict(cmap="magma", norm=weights),
    ),
    (
      f"Dice weight, max {dice.max():.1e}",
      dice,
      dict(cmap="magma", norm=weights),
    ),
  ]
  panel = min(6.4, max(2.6, max(mask.shape) / 100))  # inches at dpi 100
  rows = 1 if panel <= 3.2 else 2
  cols = len(panels) // rows
  fig, axes = plt.subplots(
    rows,
    cols,
    figsize=(panel * cols * 1.1, panel * rows + 0.4),
    squeeze=False,
    layout="constrained",
  )
  for ax, (name, arr, kw) in zip(axes.ravel(), panels):
    im = ax.imshow(arr, interpolation="nearest", **kw)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
    if name == "|p - g|":
      fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(
        "½ Σ_c |p_c − g_c|", fontsize=7
      )
  bar = fig.colorbar(im, ax=axes.ravel()[-2:].tolist(), fraction=0.03, pad=0.02)
  bar.set_label(WEIGHT_LABEL, fontsize=7)
  for bar_ax in fig.axes[len(panels) :]:
    bar_ax.tick_params(labelsize=6)
  fig.suptitle(title, fontsize=9)
  return fig


def samples(folder: pathlib.Path, ds, logits: list[np.ndarray], cfg) -> None:
  """`sample_<i>.png` for the first `cfg.figures` examples (`sample_figure`)."""
  folder.mkdir(parents=True, exist_ok=True)
  for i in range(min(cfg.figures, len(ds.images))):
    fig = sample_figure(
      ds.images[i], ds.masks[i], logits[i], cfg, ds.num_classes, ds.names[i]
    )
    fig.savefig(folder / f"sample_{i}.png", dpi=100)
    plt.close(fig)


def curve(path: pathlib.Path, rows: list[dict]) -> None:
  """Training loss and batch IoU against step."""
  if not rows:
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  step = [r["step"] for r in rows]
  fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
  a.plot(step, [r["loss"] for r in rows])
  a.set(xlabel="step", title="training loss")
  b.plot(step, [r["train_iou"] for r in rows])
  b.set(xlabel="step", title="training batch IoU (foreground)", ylim=(0, 1))
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)

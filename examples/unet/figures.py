"""Diagnostic figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import pathlib

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

import pel_jax  # noqa: E402


def weight_maps(logits: np.ndarray, mask: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
  """Per-pixel |dL/dlogits| of PEL (with the run's n, s, weights) and of Dice.

  Taken w.r.t. the logits, so the softmax Jacobian is included: the maps
  show where each loss actually pushes the network for this prediction.
  """
  from .train import region_loss_fn  # pylint: disable=import-outside-toplevel
  z, g = logits[None], mask[None]
  pel = pel_jax.weight_map(z, g, loss_fn=region_loss_fn("pel", cfg),
                           from_logits=True)
  dice = pel_jax.weight_map(z, g, loss_fn=pel_jax.dice_loss, from_logits=True)
  return np.asarray(pel[0]), np.asarray(dice[0])


def samples(folder: pathlib.Path, ds, logits: list[np.ndarray], cfg) -> None:
  """`sample_<i>.png`: image | truth | prediction | |p - g| | PEL / Dice weights."""
  folder.mkdir(parents=True, exist_ok=True)
  c = ds.num_classes
  for i in range(min(cfg.figures, len(ds.images))):
    image, mask = ds.images[i], ds.masks[i]
    probs = np.asarray(jax.nn.softmax(logits[i], -1))
    deviation = 0.5 * np.abs(probs - np.eye(c)[mask]).sum(-1)
    pel, dice = weight_maps(logits[i], mask, cfg)
    panels = [
        ("image", image if image.shape[-1] == 3 else image[..., 0], "gray"),
        ("ground truth", mask, "viridis"), ("prediction", probs.argmax(-1), "viridis"),
        ("|p - g|", deviation, "magma"),
        (f"PEL weight (n={cfg.exponent:g})", pel, "magma"),
        ("Dice weight", dice, "magma")]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, arr, cmap) in zip(axes, panels):
      kw = {"vmin": 0, "vmax": c - 1} if cmap == "viridis" else {}
      im = ax.imshow(arr, cmap=cmap, interpolation="nearest", **kw)
      ax.set_title(title, fontsize=9)
      ax.axis("off")
      if cmap == "magma":
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    fig.suptitle(ds.names[i], fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / f"sample_{i}.png", dpi=80)
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

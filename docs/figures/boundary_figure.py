"""The README's boundary-loss figure: a mask, its signed distance map, and
the gradient of `pel_jax.boundary_loss` with respect to the logits.

  python docs/figures/boundary_figure.py   # writes docs/figures/boundary_loss.png

Deterministic: the mask and the prediction are drawn from formulas.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
import pel_jax

OUT = pathlib.Path(__file__).with_name("boundary_loss.png")


def _discs(size: int, discs) -> np.ndarray:
  """max over discs (cy, cx, r) of r - distance to the centre, `[size, size]`."""
  y, x = np.mgrid[:size, :size]
  return np.max([r - np.hypot(y - cy, x - cx) for cy, cx, r in discs], axis=0)


def panels(size: int = 96):
  """(target ids, logits, signed distance, d loss / d foreground logit).

  Two nuclei-like objects; the prediction is shifted, too large on one and
  too small on the other, with soft edges (a logit of 1 per 2 px).
  """
  s = size / 96
  ids = _discs(size, [(40 * s, 38 * s, 22 * s), (72 * s, 70 * s, 12 * s)]) >= 0
  fg = _discs(size, [(45 * s, 44 * s, 24 * s), (72 * s, 68 * s, 7 * s)]) / 2
  logits = np.stack([np.zeros_like(fg), fg], -1)[None].astype(np.float32)
  ids = ids[None].astype(np.int32)
  phi = pel_jax.signed_distance(jnp.asarray(ids == 1))

  def loss(z):
    return pel_jax.boundary_loss(
      z, ids, from_logits=True, include_background=False
    )

  grad = jax.grad(loss)(jnp.asarray(logits))[0, ..., 1]
  return ids[0], logits[0], np.asarray(phi[0]), np.asarray(grad)


def draw(path=OUT) -> pathlib.Path:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import colors  # pylint: disable=import-outside-toplevel
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  ids, logits, phi, grad = panels()
  p = 1 / (1 + np.exp(logits[..., 0] - logits[..., 1]))
  fig, axes = plt.subplots(1, 3, figsize=(9, 3.2), dpi=90)
  axes[0].imshow(ids, cmap="gray", vmin=0, vmax=1.6)
  axes[0].contour(p, [0.5], colors="tab:orange", linewidths=1.5)
  axes[0].set_title("mask, prediction p = 0.5 (orange)", fontsize=9)
  lim = np.abs(phi).max()
  im = axes[1].imshow(phi, cmap="RdBu_r", norm=colors.CenteredNorm(0, lim))
  axes[1].contour(ids, [0.5], colors="k", linewidths=0.8)
  axes[1].set_title("signed_distance(mask): + outside", fontsize=9)
  fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
  g = grad * grad.size  # per pixel, times the pixel count P
  lim = np.abs(g).max()
  im = axes[2].imshow(g, cmap="RdBu_r", norm=colors.CenteredNorm(0, lim))
  axes[2].contour(ids, [0.5], colors="k", linewidths=0.8)
  axes[2].contour(p, [0.5], colors="tab:orange", linewidths=1.0)
  axes[2].set_title("P · ∂boundary_loss/∂z_fg = φ p (1 − p)", fontsize=9)
  fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.03)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, metadata={"Software": None})
  plt.close(fig)
  return path


if __name__ == "__main__":
  out = draw()
  print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")

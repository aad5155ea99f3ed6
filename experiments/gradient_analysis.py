r"""Where PEL's gradient goes: closed forms and measurements on a trained UNet.

Closed form (hard labels, mask 1). For one class c with sums over the
pixels (and the batch with ``batch=True``)

  TP = Σ p g,  FP = Σ p (1-g),  FN = Σ (1-p) g,  N = Σ pⁿ g,
  D  = TP + α FP + β FN + ε_dr,  R = (N + ε_nr) / D,  L = 1 - s R,

the derivative with respect to one pixel's probability is

  ∂L/∂p_i = -(s / D) [ n p_i^{n-1} g_i - R ((1 - α - β) g_i + α) ]

  g_i = 1:  ∂L/∂p_i = -(s / D) [ n p_i^{n-1} - R (1 - β) ]
  g_i = 0:  ∂L/∂p_i = s R α / D          (the same for every such pixel)

With a two-class softmax (logit difference z, p = σ(z) the foreground
probability), both class channels and the mean over the two classes,

  ∂L/∂x_1 = -∂L/∂x_0 = ½ (f_1(p, g) - f_0(1-p, 1-g)) p (1-p),

where f_c is the per-channel ∂L_c/∂p above. `weight_map`-style weights are
Σ_c |∂L/∂x_c|.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
import pel_jax

# The losses compared (on the 2-class softmax, both channels, batch sums).
_PEL = {k: v for k, v in common.AUTHORS.items() if k != "batch"}
LOSSES = {
  "dice": dict(exponent=1.0, scale=1.0, fp_weight=0.5, fn_weight=0.5),
  "pel_n0.5": dict(exponent=0.5, **_PEL),
  "pel_n2": dict(exponent=2.0, **_PEL),
  "pel_n3": dict(exponent=3.0, **_PEL),
}
SMOOTH = 1e-5


# ---------------------------------------------------------------- closed form
def channel_sums(p, g, *, n, alpha, beta, smooth_nr=SMOOTH, smooth_dr=SMOOTH):
  """(D, R) of one class channel; p, g: arrays of any shape (summed all over)."""
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  tp, fp, fn = (p * g).sum(), (p * (1 - g)).sum(), ((1 - p) * g).sum()
  d = tp + alpha * fp + beta * fn + smooth_dr
  return d, ((p**n * g).sum() + smooth_nr) / d


def dl_dp(p, g, *, n, s, alpha, beta, d, r):
  """Closed-form ∂L_c/∂p_i of one channel given its sums (D, R)."""
  p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
  pn1 = np.where(g > 0, n * np.power(np.maximum(p, 1e-30), n - 1), 0.0)
  return -(s / d) * (pn1 * g - r * ((1 - alpha - beta) * g + alpha))


def binary_softmax_grads(p1, g1, *, n, s, alpha, beta, sums=None):
  """Closed-form gradients of the 2-class softmax loss (mean over 2 classes).

  `p1`: foreground probabilities, `g1`: 0/1 labels (any shape; the sums run
  over everything, i.e. ``batch=True``). `sums`: the channels' (D, R) pairs,
  computed from p1, g1 when None (pass them to evaluate curves on a grid).
  Returns (dL/dp1, dL/dp0, dL/dx1) per pixel; dL/dx0 = -dL/dx1.
  """
  p1, g1 = np.asarray(p1, np.float64), np.asarray(g1, np.float64)
  kw = dict(n=n, alpha=alpha, beta=beta)
  if sums is None:
    sums = (channel_sums(1 - p1, 1 - g1, **kw), channel_sums(p1, g1, **kw))
  (d0, r0), (d1, r1) = sums
  f1 = 0.5 * dl_dp(p1, g1, s=s, d=d1, r=r1, **kw)
  f0 = 0.5 * dl_dp(1 - p1, 1 - g1, s=s, d=d0, r=r0, **kw)
  return f1, f0, (f1 - f0) * p1 * (1 - p1)


# ---------------------------------------------------------------- measurement
def loss_fn(name: str, from_logits: bool):
  """x [B,H,W,2] (logits or probabilities), y int [B,H,W] -> scalar."""
  if name == "ce":
    if from_logits:
      return lambda x, y: optax.softmax_cross_entropy_with_integer_labels(
        x, y
      ).mean()
    return lambda x, y: (
      -jnp.mean(jnp.log(jnp.take_along_axis(x, y[..., None], -1)))
    )
  kw = LOSSES[name]
  return lambda x, y: pel_jax.pel_loss(
    x, y, from_logits=from_logits, batch=True, **kw
  )


def grad_weights(x, y, fn):
  """Σ_c |∂fn/∂x_c| per pixel, `[B, H, W]` (as `pel_jax.weight_map`)."""
  return np.asarray(
    jnp.abs(jax.grad(fn)(jnp.asarray(x), jnp.asarray(y))).sum(-1), np.float64
  )


def edge_pixels(mask: np.ndarray) -> np.ndarray:
  """Pixels with a 4-neighbour of another class (both sides of every edge)."""
  p = np.pad(mask, [(0, 0), (1, 1), (1, 1)], mode="edge")
  c = p[:, 1:-1, 1:-1]
  return (
    (p[:, :-2, 1:-1] != c)
    | (p[:, 2:, 1:-1] != c)
    | (p[:, 1:-1, :-2] != c)
    | (p[:, 1:-1, 2:] != c)
  )


def top_fraction(dev: np.ndarray, frac: float) -> np.ndarray:
  """Boolean mask of the `frac` pixels with the largest `dev` (stable ties)."""
  flat = dev.ravel()
  k = max(1, int(np.ceil(frac * flat.size)))
  order = np.argsort(-flat, kind="stable")[:k]
  out = np.zeros(flat.size, bool)
  out[order] = True
  return out.reshape(dev.shape)


def shares(
  logits: np.ndarray,
  labels: np.ndarray,
  names=("dice", "pel_n0.5", "pel_n2", "pel_n3", "ce"),
) -> dict:
  """Share of each loss's gradient L1 mass on hard/edge pixels.

  For each loss and for gradients w.r.t. the logits and the probabilities:
  the share on the 10% of pixels with the largest |p - g| (foreground
  probability vs label), on edge pixels, and on misclassified pixels
  (|p - g| > 0.5). `uniform` gives those pixel fractions (an unweighted loss).
  """
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
  dev = np.abs(probs[..., 1] - labels)
  regions = {
    "top10_dev": top_fraction(dev, 0.10),
    "edge": edge_pixels(labels),
    "wrong": dev > 0.5,
  }
  out = {"uniform": {k: float(v.mean()) for k, v in regions.items()}}
  for name in names:
    for wrt, x in (("logits", logits), ("probs", probs)):
      w = grad_weights(x, labels, loss_fn(name, wrt == "logits"))
      out.setdefault(name, {})[wrt] = {
        k: float(w[v].sum() / w.sum()) for k, v in regions.items()
      }
  return out


# -------------------------------------------------------------------- figures
def plot_curves(
  logits, labels, path, names=("dice", "pel_n0.5", "pel_n2", "pel_n3")
):
  """Per-pixel gradient weight vs foreground probability, normalised to
  the median pixel weight of that loss, for g = 1 and g = 0 pixels, w.r.t.
  probabilities and logits; lines: closed form at the model's sums; dots:
  jax.grad on a sample of the model's own pixels."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
  p1, g1 = probs[..., 1].astype(np.float64), labels.astype(np.float64)
  grid = np.linspace(1e-3, 1 - 1e-3, 400)
  rng = np.random.default_rng(0)
  sample = rng.choice(p1.size, min(3000, p1.size), replace=False)
  fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True)
  colors = dict(zip(names, ["k", "tab:blue", "tab:orange", "tab:red"]))
  for name in names:
    kw = dict(
      n=LOSSES[name]["exponent"],
      s=LOSSES[name]["scale"],
      alpha=LOSSES[name]["fp_weight"],
      beta=LOSSES[name]["fn_weight"],
    )
    c = dict(n=kw["n"], alpha=kw["alpha"], beta=kw["beta"])
    sums = (channel_sums(1 - p1, 1 - g1, **c), channel_sums(p1, g1, **c))
    f1, f0, dz = binary_softmax_grads(p1, g1, sums=sums, **kw)
    w_p, w_z = np.abs(f1) + np.abs(f0), 2 * np.abs(dz)
    for row, (w, lab) in enumerate(((w_p, "∂/∂p"), (w_z, "∂/∂logits"))):
      median = np.median(w)
      for col, g in enumerate((1.0, 0.0)):
        gg = np.full_like(grid, g)
        a1, a0, az = binary_softmax_grads(grid, gg, sums=sums, **kw)
        curve = (np.abs(a1) + np.abs(a0)) if row == 0 else 2 * np.abs(az)
        ax = axes[row, col]
        ax.plot(
          grid,
          curve / median,
          color=colors[name],
          label=f"{name} (n={kw['n']:g})",
        )
        sel = sample[g1.ravel()[sample] == g]
        ax.scatter(
          p1.ravel()[sel],
          (w.ravel()[sel]) / median,
          s=3,
          color=colors[name],
          alpha=0.25,
        )
        ax.set_yscale("log")
        ax.set_title(
          f"{'foreground' if g else 'background'} pixels (g={g:g})"
          f", weight {lab}"
        )
  for ax in axes[1]:
    ax.set_xlabel("predicted foreground probability p")
  for ax in axes[:, 0]:
    ax.set_ylabel("|gradient| / median pixel |gradient|")
  axes[0, 0].legend(fontsize=8)
  fig.suptitle(
    "Gradient weight vs p (lines: closed form at the base model's "
    "sums; dots: jax.grad on its validation pixels; a dip to 0 is "
    "a sign change)",
    fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_maps(
  images, logits, labels, path, index=0, names=("dice", "pel_n0.5", "pel_n3")
):
  """Image, label, deviation |p - g| and the logit weight maps of one image."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
  dev = np.abs(probs[..., 1] - labels)[index]
  panels = [
    ("image", images[index][..., 0], "gray", None),
    ("label", labels[index], "gray", None),
    ("deviation |p-g|", dev, "magma", None),
  ]
  for name in names:
    w = grad_weights(logits, labels, loss_fn(name, True))[index]
    panels.append(
      (
        f"{name} weight (log10, logits)",
        np.log10(w / w.max() + 1e-8),
        "viridis",
        (-6, 0),
      )
    )
  fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
  for ax, (title, im, cmap, lim) in zip(axes, panels):
    kw = {} if lim is None else dict(vmin=lim[0], vmax=lim[1])
    ax.imshow(im, cmap=cmap, **kw)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def analyse(graphdef, params, val, depth: int, out_dir, max_images: int = 32):
  """Shares, curves and maps of the model's validation predictions.

  Writes gradient_shares.json, gradient_curves.png, weight_maps.png into
  `out_dir`; returns the shares dict.
  """
  out_dir = pathlib.Path(out_dir)
  images = val.images[:max_images]
  logits = common.predict_logits(graphdef, params, images, depth)
  # Folder data may mix sizes: analyse the common top-left crop (the sums
  # then run over these crops, as one batch).
  h = min(im.shape[0] for im in images)
  w = min(im.shape[1] for im in images)
  images = [im[:h, :w] for im in images]
  logits = np.stack([lg[:h, :w] for lg in logits])
  labels = np.stack([m[:h, :w] for m in val.masks[:max_images]]).astype(
    np.int32
  )
  result = shares(logits, labels)
  (out_dir / "gradient_shares.json").write_text(json.dumps(result, indent=1))
  plot_curves(logits, labels, out_dir / "gradient_curves.png")
  plot_maps(images, logits, labels, out_dir / "weight_maps.png")
  return result


def shares_table(result: dict) -> str:
  rows = [
    "| loss | top-10% \\|p−g\\| (logits) | edge (logits) | misclassified"
    " (logits) | top-10% \\|p−g\\| (probs) | edge (probs) |",
    "|---|---|---|---|---|---|",
  ]
  u = result["uniform"]
  rows.append(
    f"| uniform (pixel share) | {u['top10_dev']:.3f} | {u['edge']:.3f}"
    f" | {u['wrong']:.3f} | {u['top10_dev']:.3f} | {u['edge']:.3f} |"
  )
  for name, r in result.items():
    if name == "uniform":
      continue
    lg, pr = r["logits"], r["probs"]
    rows.append(
      f"| {name} | {lg['top10_dev']:.3f} | {lg['edge']:.3f} |"
      f" {lg['wrong']:.3f} | {pr['top10_dev']:.3f} | {pr['edge']:.3f} |"
    )
  return "\n".join(rows)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--study",
    required=True,
    help="a finetune_study output folder (uses its base.pkl)",
  )
  ap.add_argument("--out", default=None, help="default: the study folder")
  args = ap.parse_args(argv)
  study = pathlib.Path(args.study)
  cfg = json.loads((study / "config.json").read_text())
  classes = cfg.get("classes", 2)
  _, val, _ = common.make_data(
    cfg["data"],
    cfg["image_size"],
    cfg["n_train"],
    cfg["n_val"],
    classes=classes,
  )
  graphdef, like = common.make_model(
    val.in_channels, cfg["width"], cfg["depth"], classes=classes
  )
  params = common.load_params(study / "base.pkl", like)
  out = pathlib.Path(args.out or study)
  out.mkdir(parents=True, exist_ok=True)
  print(shares_table(analyse(graphdef, params, val, cfg["depth"], out)))


if __name__ == "__main__":
  main()

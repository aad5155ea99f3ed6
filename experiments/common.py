"""Shared pieces of the PEL study: data, model, losses, a training loop, eval.

Reuses the example's UNet (`examples.unet.models`), data
(`examples.unet.data`) and evaluation (`examples.unet.inference.evaluate`); the
loop is a compact optax/NNX one so every arm is a pure function of
(checkpoint, loss, seed): no dropout, no BatchNorm, batches from
`train_batch(ds, seed, step)`.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.unet import data as data_lib
from examples.unet import inference
from examples.unet import losses as example_losses
from examples.unet import models
import pel_jax

# The authors' setting without its exponent (each arm sets n).
AUTHORS = {
  k: v for k, v in example_losses.AUTHORS_PEL.items() if k != "exponent"
}


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A training loss: `kind` in dice|pel|ce, plus optional CE."""

  kind: str
  exponent: float = 1.0
  ce: bool = False

  def name(self) -> str:
    base = "dice" if self.kind == "dice" else f"pel_n{self.exponent:g}"
    return base + ("+ce" if self.ce else "")


def region_loss(logits, labels, spec: LossSpec):
  """The Dice or PEL term on logits `[B,H,W,C]`, int labels `[B,H,W]`."""
  if spec.kind == "dice":
    return pel_jax.dice_loss(logits, labels, from_logits=True, batch=True)
  if spec.kind == "pel":
    return pel_jax.pel_loss(
      logits, labels, from_logits=True, exponent=spec.exponent, **AUTHORS
    )
  raise ValueError(spec.kind)


def total_loss(logits, labels, spec: LossSpec):
  loss = region_loss(logits, labels, spec)
  if spec.ce:
    loss = (
      loss
      + optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    )
  return loss


# ---------------------------------------------------------------- data/model
def make_data(
  data_dir: str | None,
  image_size: int,
  n_train: int,
  n_val: int,
  data_seed: int = 0,
  classes: int = 2,
):
  """(train, val, test) datasets; test is None unless the folder has one.

  `data_dir` unset: the example's synthetic set (binary). A folder with
  `train/` (the layout `examples.unet.main fetch` writes): its train/, val/
  and, if present, test/ subfolders. Any other folder: images/ + masks/,
  split 75/25 into train/val. Masks are class ids in [0, classes); with
  `classes=2`, any mask value > 0 is foreground.
  """
  binary = classes == 2
  if data_dir and (pathlib.Path(data_dir) / "train").is_dir():
    root = pathlib.Path(data_dir)
    load = lambda s: data_lib.load_folder(root / s, classes, binary)
    return (
      load("train"),
      load("val"),
      load("test") if (root / "test").is_dir() else None,
    )
  if data_dir:
    ds = data_lib.load_folder(data_dir, classes, binary=binary)
    return (*data_lib.split(ds, 0.25, data_seed), None)
  train = data_lib.synthetic(data_seed, n_train, image_size, 2)
  val = data_lib.synthetic(data_seed, n_val, image_size, 2, start=n_train)
  return train, val, None


def make_model(
  in_channels: int, width: int, depth: int, seed: int = 0, classes: int = 2
):
  model = models.UNet(
    in_channels,
    classes,
    width=width,
    depth=depth,
    norm="group",
    # The committed results were trained with the transposed convolution;
    # the example's default became "resize" after them.
    upsample="transpose",
    rngs=nnx.Rngs(seed),
  )
  return nnx.split(model)  # (graphdef, state): state is all parameters


# ------------------------------------------------------------------ training
@functools.cache
def _train_step(graphdef, spec: LossSpec, lr: float):
  tx = optax.adam(lr)

  @jax.jit
  def step(params, opt_state, x, y):
    def f(p):
      return total_loss(nnx.merge(graphdef, p)(x), y, spec)

    loss, grads = jax.value_and_grad(f)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, step


def train(
  graphdef,
  params,
  ds,
  spec: LossSpec,
  *,
  steps: int,
  lr: float,
  seed: int,
  batch_size: int,
  patch: int,
  start_step: int = 0,
  opt_state=None,
  eval_fn=None,
  eval_every: int = 0,
):
  """`steps` Adam steps on batches `train_batch(ds, seed, k)`.

  Returns (params, opt_state, history); `eval_fn(params) -> dict` is called
  every `eval_every` steps when given.
  """
  tx, step = _train_step(graphdef, spec, lr)
  if opt_state is None:
    opt_state = tx.init(params)
  history = []
  for k in range(start_step, start_step + steps):
    b = data_lib.train_batch(ds, seed, k, batch_size, patch)
    params, opt_state, loss = step(params, opt_state, b["image"], b["mask"])
    if eval_fn and eval_every and (k + 1) % eval_every == 0:
      history.append({"step": k + 1, "loss": float(loss), **eval_fn(params)})
  return params, opt_state, history


# ---------------------------------------------------------------- evaluation
# The example's own evaluation (padding, batching, metrics), on merged params.
def predict_logits(graphdef, params, images, depth: int):
  """Logits for a list of `[H, W, C]` images of any size."""
  del depth  # the model knows it
  return inference.predict_logits(nnx.merge(graphdef, params), images)


METRICS = ("iou", "dice", "bf1", "object_f1", "aji")


def evaluate(graphdef, params, ds, depth: int, with_logits: bool = False):
  """Foreground IoU, Dice and boundary F1 (tolerance 2 px, each the mean over
  the foreground classes) over `ds`; with instance masks also the nucleus
  detection F1 (IoU >= 0.5) and AJI. With `with_logits`: (metrics, logits).
  """
  del depth  # the model knows it
  summary, logits = inference.evaluate(nnx.merge(graphdef, params), ds)
  out = {k: summary[f"val_{k}"] for k in METRICS if f"val_{k}" in summary}
  return (out, logits) if with_logits else out


class Timer:
  def __init__(self):
    self.t0 = time.perf_counter()

  def __call__(self) -> float:
    return time.perf_counter() - self.t0


# --------------------------------------------------------------- base model
def save_params(path, params) -> None:
  import pickle  # pylint: disable=import-outside-toplevel

  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(params))
  with open(path, "wb") as f:
    pickle.dump(pure, f)


def load_params(path, like):
  import pickle  # pylint: disable=import-outside-toplevel

  with open(path, "rb") as f:
    pure = pickle.load(f)
  params = jax.tree.map(lambda x: x, like)
  nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, pure))
  return params


def train_until_plateau(
  graphdef,
  params,
  ds,
  val,
  spec: LossSpec,
  *,
  max_steps: int,
  lr: float,
  seed: int,
  batch_size: int,
  patch: int,
  depth: int,
  eval_every: int,
  patience: int = 3,
  min_delta: float = 0.003,
  log=print,
):
  """Trains until validation IoU has not improved by `min_delta` for
  `patience` evaluations (or `max_steps`); returns the last parameters.

  Deterministic: the stopping rule only reads deterministic metrics.
  """
  tx, _ = _train_step(graphdef, spec, lr)
  opt_state, history, best, since = tx.init(params), [], -1.0, 0
  step = 0
  while step < max_steps:
    n = min(eval_every, max_steps - step)
    params, opt_state, _ = train(
      graphdef,
      params,
      ds,
      spec,
      steps=n,
      lr=lr,
      seed=seed,
      batch_size=batch_size,
      patch=patch,
      start_step=step,
      opt_state=opt_state,
    )
    step += n
    m = evaluate(graphdef, params, val, depth)
    history.append({"step": step, **m})
    log(
      f"  base step {step}: IoU {m['iou']:.4f} Dice {m['dice']:.4f}"
      f" BF1 {m['bf1']:.4f}"
    )
    if m["iou"] > best + min_delta:
      best, since = m["iou"], 0
    else:
      since += 1
      if since >= patience:
        break
  return params, history

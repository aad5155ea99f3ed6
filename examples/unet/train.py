"""Training and evaluation: `train_and_evaluate(config, workdir)`.

Data parallel over every device with a `jax.sharding.Mesh` + `nnx.jit`
(batch sharded on 'data', parameters replicated; GSPMD makes the PEL sums
global), or over the local devices with `jax.pmap` (`--pmap`), where the
losses take `axis_name` and the gradients are summed, not averaged.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import pathlib
import contextlib
import re
import signal
import sys
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import pel_jax

from . import checkpoint, data, metrics, models, object_metrics

AXIS = "data"


def _opt(default, help_):  # a config field with its --help text
  return dataclasses.field(default=default, metadata={"help": help_})


@dataclasses.dataclass
class Config:
  """Every command-line flag of `main.py train` (`--image-size` etc.)."""
  # data
  data: str | None = _opt(None, "folder with images/ and masks/; unset: the built-in synthetic set")
  val_data: str | None = _opt(None, "separate validation folder; unset: a deterministic split of --data")
  classes: int = _opt(2, "number of classes incl. background (synthetic: 2 = binary, 3 = blobs + curves)")
  binary: bool = _opt(False, "collapse mask values > 0 (e.g. instance labels) to foreground 1")
  image_size: int = _opt(64, "synthetic image size")
  num_train: int = _opt(256, "synthetic training images")
  num_val: int = _opt(32, "synthetic validation images")
  val_fraction: float = _opt(0.1, "validation fraction of --data without --val-data")
  patch_size: int | None = _opt(None, "training crop size; unset: the synthetic image size, or 128 capped by the smallest image")
  # model
  width: int = _opt(8, "channels of the first UNet level (doubles per level)")
  depth: int = _opt(3, "number of poolings")
  norm: str = _opt("group", "group | layer | batch | none")
  bf16: bool = _opt(False, "mixed precision: bf16 compute, f32 params and loss")
  # optimisation
  steps: int = _opt(300, "training steps")
  batch_size: int = _opt(8, "global batch size (divisible by the device count)")
  lr: float = _opt(3e-3, "peak learning rate (AdamW, linear warmup + cosine decay)")
  warmup: int = _opt(50, "warmup steps")
  weight_decay: float = _opt(1e-4, "AdamW weight decay")
  clip: float = _opt(1.0, "gradient clipping by global norm")
  loss: str = _opt("pel+ce", "sum of weighted terms among dice, jaccard, tversky, pel, ce, e.g. 'pel+ce', '0.5*dice+ce'")
  exponent: float = _opt(3.0, "PEL exponent n")
  scale: float = _opt(10.0, "PEL scale")
  fp_weight: float | None = _opt(None, "FP weight of pel/tversky; unset: 0.5 for pel, 0.3 for tversky")
  fn_weight: float | None = _opt(None, "FN weight of pel/tversky; unset: 0.5 for pel, 0.7 for tversky")
  batch_dice: bool = _opt(True, "region losses sum over the whole (global) batch, as the PEL authors")
  # run
  seed: int = _opt(0, "seed of data, initialisation and augmentation")
  ckpt_every: int = _opt(100, "checkpoint every N steps (and at the end)")
  eval_every: int = _opt(0, "validate every N steps (0: only at the end)")
  log_every: int = _opt(10, "progress and CSV row every N steps")
  resume: bool = _opt(False, "continue from the latest checkpoint in --out")
  init_from: str | None = _opt(None, "initialise the model from this checkpoint (phase-2 fine-tuning)")
  pmap: bool = _opt(False, "use jax.pmap over local devices instead of a jit-sharded step")
  figures: int = _opt(4, "validation examples to draw in figures/")


def get_config(**overrides) -> Config:
  return Config(**overrides)


# --------------------------------------------------------------------- losses
def parse_loss(spec: str) -> tuple[tuple[float, str], ...]:
  """'pel+0.5*ce' -> ((1.0, 'pel'), (0.5, 'ce'))."""
  terms = []
  for term in spec.replace(" ", "").split("+"):
    m = re.fullmatch(r"(?:([0-9.eE-]+)\*)?(dice|jaccard|tversky|pel|ce)", term)
    if not m:
      raise ValueError(f"bad --loss term {term!r} in {spec!r}: use dice,"
                       " jaccard, tversky, pel, ce, optionally 'w*' weighted")
    terms.append((float(m.group(1) or 1.0), m.group(2)))
  return tuple(terms)


def region_loss_fn(name: str, cfg: Config) -> Callable[..., jax.Array]:
  """The pel_jax loss `name` with the config's hyperparameters bound."""
  if name == "pel":
    return functools.partial(
        pel_jax.pel_loss, exponent=cfg.exponent, scale=cfg.scale,
        fp_weight=0.5 if cfg.fp_weight is None else cfg.fp_weight,
        fn_weight=0.5 if cfg.fn_weight is None else cfg.fn_weight)
  if name == "tversky":
    kw = {k: v for k, v in (("fp_weight", cfg.fp_weight),
                            ("fn_weight", cfg.fn_weight)) if v is not None}
    return functools.partial(pel_jax.tversky_loss, **kw)
  return {"dice": pel_jax.dice_loss, "jaccard": pel_jax.jaccard_loss}[name]


def make_loss(cfg: Config) -> Callable[..., jax.Array]:
  """`loss(logits, labels, axis_name=None)` for the weighted sum in --loss.

  Under pmap (`axis_name`), every term is the global-batch value: pel_jax
  sums its per-class counts across devices, and CE is the global mean whose
  gradient is this shard's part, so summed gradients equal one device's.
  """
  terms = [(w, name, None if name == "ce" else region_loss_fn(name, cfg))
           for w, name in parse_loss(cfg.loss)]

  def loss(logits, labels, axis_name=None):
    logits = logits.astype(jnp.float32)
    total = 0.0
    for w, name, fn in terms:
      if fn is None:
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        if axis_name is None:
          value = ce.mean()
        else:
          # Global mean as value; as gradient, only this shard's part (the
          # autodiff transpose of psum would psum the cotangent: N-fold).
          value = pel_jax.global_sum(ce.sum(), axis_name) / (
              ce.size * lax.axis_size(axis_name))
      else:
        value = fn(logits, labels, from_logits=True, batch=cfg.batch_dice,
                   axis_name=axis_name)
      total = total + w * value
    return total

  return loss


# ---------------------------------------------------------------- train steps
def make_model(cfg: Config, in_channels: int, axis_name=None) -> models.UNet:
  return models.UNet(in_channels, cfg.classes, width=cfg.width,
                     depth=cfg.depth, norm=cfg.norm,
                     dtype=jnp.bfloat16 if cfg.bf16 else jnp.float32,
                     axis_name=axis_name, rngs=nnx.Rngs(cfg.seed))


def make_optimizer(cfg: Config, model: nnx.Module) -> nnx.Optimizer:
  warmup = min(cfg.warmup, cfg.steps // 2)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, warmup, max(cfg.steps, warmup + 1), end_value=cfg.lr * 0.01)
  tx = optax.chain(optax.clip_by_global_norm(cfg.clip),
                   optax.adamw(schedule, weight_decay=cfg.weight_decay))
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _update(model, optimizer, batch, loss_fn, num_classes, axis_name=None):
  """One optimizer step in place; returns (loss, confusion matrix)."""

  def objective(model):
    logits = model(batch["image"])
    return loss_fn(logits, batch["mask"], axis_name), logits

  (loss, logits), grads = nnx.value_and_grad(objective, has_aux=True)(model)
  pred = jnp.argmax(logits, -1)
  cm = jnp.bincount((batch["mask"] * num_classes + pred).ravel(),
                    length=num_classes**2).reshape(num_classes, num_classes)
  if axis_name is not None:
    # The loss is already global on every device and its gradient is this
    # shard's slice of the global gradient: sum the slices (psum, not pmean).
    grads = lax.psum(grads, axis_name)
    cm = lax.psum(cm, axis_name)
  optimizer.update(model, grads)
  return loss, cm


class Stepper:
  """Runs training steps; the model/optimizer hold the state after `sync()`."""

  def __init__(self, model, optimizer, loss_fn, cfg: Config, use_pmap: bool):
    self.model, self.optimizer, self.pmap = model, optimizer, use_pmap
    self.mesh = Mesh(np.array(jax.devices()), (AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    update = functools.partial(_update, loss_fn=loss_fn,
                               num_classes=cfg.classes)
    if not use_pmap:
      self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
      # Parameters replicated over the global mesh, the batch sharded.
      state = nnx.state((model, optimizer))
      nnx.update((model, optimizer), jax.tree.map(self.put, state))
      self._step = nnx.jit(update, donate_argnames=("model", "optimizer"))
      return
    graphdef, state = nnx.split((model, optimizer))
    self.graphdef, self.n = graphdef, jax.local_device_count()

    def pstep(state, batch):
      model, optimizer = nnx.merge(graphdef, state)
      out = update(model, optimizer, batch, axis_name=AXIS)
      return nnx.state((model, optimizer)), out

    self._pstep = jax.pmap(pstep, axis_name=AXIS, donate_argnums=0)
    self.state = jax.tree.map(
        lambda x: np.broadcast_to(np.asarray(x), (self.n,) + x.shape), state)

  def put(self, x):
    """Host array (identical on every host) -> global replicated array."""
    return jax.make_array_from_process_local_data(self.replicated,
                                                  np.asarray(x))

  def __call__(self, local_batch: dict) -> tuple[jax.Array, jax.Array]:
    if not self.pmap:
      batch = {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
               for k, v in local_batch.items()}
      return self._step(self.model, self.optimizer, batch)
    batch = {k: v.reshape(self.n, -1, *v.shape[1:])
             for k, v in local_batch.items()}
    self.state, (loss, cm) = self._pstep(self.state, batch)
    return loss[0], cm[0]

  def sync(self) -> None:
    if self.pmap:
      nnx.update((self.model, self.optimizer),
                 jax.tree.map(lambda x: x[0], self.state))


def to_host(x) -> np.ndarray:
  """A replicated (possibly multi-host) array as numpy."""
  return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x


# ------------------------------------------------------------------ evaluation
@nnx.jit
def _logits(model, images):
  return nnx.view(model, use_running_average=True,
                  raise_if_not_found=False)(images)


def predict_logits(model, images: list[np.ndarray], depth: int,
                   put=np.asarray, batch_size: int = 16) -> list[np.ndarray]:
  """Logits for images of any size: edge-padded to a multiple of 2**depth,
  batched by shape, cropped back."""
  m = 2**depth
  out: list[np.ndarray | None] = [None] * len(images)
  by_shape: dict[tuple, list[int]] = {}
  for i, im in enumerate(images):
    by_shape.setdefault(im.shape, []).append(i)
  for (h, w, _), idx in by_shape.items():
    for s in range(0, len(idx), batch_size):
      chunk = idx[s:s + batch_size]
      x = np.stack([images[i] for i in chunk])
      x = np.pad(x, [(0, 0), (0, -h % m), (0, -w % m), (0, 0)], mode="edge")
      logits = to_host(_logits(model, put(x)))[:, :h, :w]
      for i, lg in zip(chunk, logits):
        out[i] = lg
  return out


def evaluate(model, ds: data.Dataset, depth: int, put=np.asarray):
  """(summary dict, list of logits) over a dataset.

  With instance masks (`ds.instances`), also the object metrics of the
  predicted foreground (any class > 0): `val_object_f1`, `val_aji`, ...
  """
  logits = predict_logits(model, ds.images, depth, put)
  cm = np.zeros((ds.num_classes,) * 2, np.int64)
  bc = np.zeros((ds.num_classes, 4), np.int64)
  objects = None
  for i, (lg, mask) in enumerate(zip(logits, ds.masks)):
    pred = lg.argmax(-1)
    cm += metrics.confusion_matrix(pred, mask, ds.num_classes)
    bc += metrics.boundary_counts(pred[None], mask[None], ds.num_classes)
    if ds.instances is not None:
      objects = object_metrics.add(
          objects, object_metrics.image_counts(ds.instances[i], pred > 0))
  summary = metrics.summarize(cm, bc)
  if objects is not None:
    summary.update({f"val_{k}": v for k, v in
                    object_metrics.summarize(objects).items()})
  return summary, logits


# ----------------------------------------------------------------------- data
def load_data(cfg: Config) -> tuple[data.Dataset, data.Dataset, int]:
  """(train, val, patch size); raises DataError before anything is written."""
  if cfg.data is None:
    train = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
    val = data.synthetic(cfg.seed, cfg.num_val, cfg.image_size, cfg.classes,
                         start=cfg.num_train)
  else:
    train = data.load_folder(cfg.data, cfg.classes, cfg.binary)
    if cfg.val_data:
      val = data.load_folder(cfg.val_data, cfg.classes, cfg.binary)
    else:
      train, val = data.split(train, cfg.val_fraction, cfg.seed)
    if val.in_channels != train.in_channels:
      raise data.DataError(f"{cfg.val_data}: {val.in_channels} channels, but"
                           f" the training images have {train.in_channels}")
  patch = cfg.patch_size
  if patch is None:
    smallest = min(min(im.shape[:2]) for im in train.images)
    patch = cfg.image_size if cfg.data is None else min(128, smallest)
    patch -= patch % 2**cfg.depth
  if patch % 2**cfg.depth or patch <= 0:
    raise ValueError(f"--patch-size {patch} must be a positive multiple of"
                     f" 2**depth = {2**cfg.depth}")
  data.check_patch(train, patch)
  return train, val, patch


# ---------------------------------------------------------------- the program
MODEL_KEYS = ("classes", "width", "depth", "norm")


def _progress(step, total, loss, iou, rate):
  filled = int(30 * step / total)
  sys.stdout.write(f"\rstep {step:>6}/{total} |{'#' * filled}{'.' * (30 - filled)}|"
                   f" loss {loss:8.4f}  iou {iou:.3f}  {rate:6.2f} steps/s")
  sys.stdout.flush()


@contextlib.contextmanager
def _deferred_sigint():
  """Turns Ctrl-C into a flag checked between steps.

  A KeyboardInterrupt raised inside JAX dispatch or compilation can leave the
  runtime unable to shut down cleanly; stopping at a step boundary makes the
  checkpoint and exit clean. A second Ctrl-C interrupts at once.
  """
  flag: list[bool] = []
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = signal.getsignal(signal.SIGINT)

  def handler(signum, frame):
    del signum, frame
    flag.append(True)
    signal.signal(signal.SIGINT, previous)

  signal.signal(signal.SIGINT, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGINT, previous)


def _fg_iou(cm: np.ndarray) -> float:
  tp = np.diag(cm)[1:]
  denom = cm.sum(0)[1:] + cm.sum(1)[1:] - tp
  return float(np.mean(np.where(denom > 0, tp / np.maximum(denom, 1), 1.0)))


def train_and_evaluate(cfg: Config, workdir: str | pathlib.Path,
                       quiet: bool = False) -> dict:
  """Trains, checkpoints, evaluates and writes `workdir`; returns metrics.json."""
  t0 = time.time()
  if cfg.batch_size % jax.device_count():
    raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the"
                     f" {jax.device_count()} devices")
  train_ds, val_ds, patch = load_data(cfg)  # validates data before writing
  workdir = pathlib.Path(workdir)
  main_host = jax.process_index() == 0
  say = (lambda *a: None) if quiet or not main_host else print

  model = make_model(cfg, train_ds.in_channels, AXIS if cfg.pmap else None)
  optimizer = make_optimizer(cfg, model)
  ckpts = checkpoint.Checkpoints(workdir / "checkpoints")
  model_meta = {k: getattr(cfg, k) for k in MODEL_KEYS}
  model_meta["in_channels"] = train_ds.in_channels
  start = 0
  if cfg.resume and ckpts.latest_step() is not None:
    start = _load(ckpts, None, model, optimizer, model_meta)
    say(f"resumed from {ckpts.directory / str(start)}")
  elif cfg.init_from:
    init = checkpoint.Checkpoints(cfg.init_from, create=False)
    _load(init, None, model, None, model_meta)
    say(f"initialised the model from {init.directory}")

  stepper = Stepper(model, optimizer, make_loss(cfg), cfg, cfg.pmap)
  put = np.asarray if cfg.pmap else stepper.put
  nproc, pid = jax.process_count(), jax.process_index()
  local = cfg.batch_size // nproc
  part = slice(pid * local, (pid + 1) * local)

  def save(step):
    stepper.sync()
    ckpts.save(step, nnx.state(model), nnx.state(optimizer),
               {"step": step, "seed": cfg.seed, "model": model_meta,
                "config": dataclasses.asdict(cfg)})

  curve_path = workdir / "train_curve.csv"
  rows = _read_curve(curve_path, start) if main_host else []
  say(f"training {cfg.steps} steps on {jax.device_count()} device(s)"
      f" ({'pmap' if cfg.pmap else 'jit + Mesh'}), {len(train_ds.images)}"
      f" train / {len(val_ds.images)} val images, patch {patch}, loss"
      f" {cfg.loss}")
  step, window_cm, tick, ticks = start, 0, time.time(), 0
  try:
    with _deferred_sigint() as stop:
      for step in range(start, cfg.steps):
        batch = data.train_batch(train_ds, cfg.seed, step, cfg.batch_size, patch,
                                 part)
        loss, cm = stepper(batch)
        window_cm = window_cm + cm
        ticks += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
          loss, window_cm = float(to_host(loss)), to_host(window_cm)
          rate = ticks / (time.time() - tick)
          rows.append({"step": done, "loss": loss, "train_iou": _fg_iou(window_cm),
                       "steps_per_s": rate, "time_s": time.time() - t0})
          if not quiet and main_host:
            _progress(done, cfg.steps, loss, rows[-1]["train_iou"], rate)
          window_cm, tick, ticks = 0, time.time(), 0
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
          stepper.sync()
          summary, _ = evaluate(model, val_ds, cfg.depth, put)
          say(f"\n  val iou {summary['val_iou']:.4f} dice {summary['val_dice']:.4f}")
        if done % cfg.ckpt_every == 0 and done < cfg.steps:
          save(done)
        step = done
        if stop:  # Ctrl-C: stop at this step boundary
          raise KeyboardInterrupt
  except KeyboardInterrupt:
    say(f"\ninterrupted: saving step {step} to {ckpts.directory}")
    save(step)
    ckpts.close()
    if main_host:
      _write_curve(curve_path, rows)
    raise
  say("")
  save(cfg.steps)
  ckpts.close()
  stepper.sync()

  summary, logits = evaluate(model, val_ds, cfg.depth, put)
  result = {**summary, "val_iou_definition": (
      "mean IoU over foreground classes 1..C-1 (binary: foreground IoU);"
      " val_iou_all includes background"),
            "steps": cfg.steps, "wall_time_s": time.time() - t0,
            "devices": jax.device_count(), "processes": nproc,
            "loss": cfg.loss, "config": dataclasses.asdict(cfg)}
  if main_host:
    _write_curve(curve_path, rows)
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2))
    from . import figures  # pylint: disable=import-outside-toplevel
    figures.samples(workdir / "figures", val_ds, logits, cfg)
    figures.curve(workdir / "figures" / "train_curve.png", rows)
  say(metrics.table(summary))
  if "val_aji" in summary:
    say(f"objects: detection F1 (IoU >= 0.5) {summary['val_object_f1']:.4f}"
        f"  AJI {summary['val_aji']:.4f}")
  say(f"val IoU {summary['val_iou']:.4f}  Dice {summary['val_dice']:.4f}  BF1"
      f" {summary['val_bf1']:.4f}  ({time.time() - t0:.0f} s) -> {workdir}")
  return result


def _load(ckpts, step, model, optimizer, model_meta) -> int:
  """Restores into model (and optimizer); checks the model matches."""
  step, meta = ckpts.meta(step)
  saved = meta.get("model", {})
  diff = {k: (saved.get(k), v) for k, v in model_meta.items()
          if saved.get(k) != v}
  if diff:
    raise checkpoint.CheckpointError(
        f"{ckpts.directory / str(step)}: incompatible checkpoint, saved vs"
        f" current: {diff}")
  targets = {"model": nnx.state(model)}
  if optimizer is not None:
    targets["optimizer"] = nnx.state(optimizer)
  got = ckpts.restore(step, targets)
  nnx.update(model, got["model"])
  if optimizer is not None:
    nnx.update(optimizer, got["optimizer"])
  return step


def _read_curve(path: pathlib.Path, start: int) -> list[dict]:
  if start == 0 or not path.exists():
    return []
  with path.open() as f:
    return [{k: int(v) if k == "step" else float(v) for k, v in r.items()}
            for r in csv.DictReader(f) if int(r["step"]) <= start]


def _write_curve(path: pathlib.Path, rows: list[dict]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as f:
    w = csv.DictWriter(f, ["step", "loss", "train_iou", "steps_per_s", "time_s"])
    w.writeheader()
    w.writerows(rows)

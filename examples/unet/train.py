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
import math
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
  overwrite: bool = _opt(False, "start afresh in a non-empty --out: its old contents move to <out>.previous-<k>")
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
    m = re.fullmatch(r"(?:([^*]+)\*)?(dice|jaccard|tversky|pel|ce)", term)
    if not m:
      raise ValueError(f"bad --loss term {term!r} in {spec!r}: use dice,"
                       " jaccard, tversky, pel, ce, optionally 'w*' weighted")
    try:
      weight = float(m.group(1) or 1.0)
    except ValueError:
      weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
      raise ValueError(f"bad --loss weight {m.group(1)!r} in {spec!r}: a"
                       " weight must be a finite number > 0")
    terms.append((weight, m.group(2)))
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
  """One optimizer step in place; returns (loss, confusion matrix, grad norm)."""

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
  return loss, cm, optax.tree.norm(grads)


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

  def __call__(self, local_batch: dict) -> tuple[jax.Array, ...]:
    if not self.pmap:
      batch = {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
               for k, v in local_batch.items()}
      return self._step(self.model, self.optimizer, batch)
    batch = {k: v.reshape(self.n, -1, *v.shape[1:])
             for k, v in local_batch.items()}
    self.state, out = self._pstep(self.state, batch)
    return tuple(x[0] for x in out)

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
    sides = [min(im.shape[:2]) for im in train.images]
    patch = cfg.image_size if cfg.data is None else min(128, min(sides))
    patch -= patch % 2**cfg.depth
    if patch <= 0:
      i = int(np.argmin(sides))
      raise data.DataError(
          f"{train.source(i)}: image size {train.images[i].shape[:2]} is"
          f" smaller than 2**depth = {2**cfg.depth}, the smallest training"
          " patch (remove the image, or lower --depth)")
  if patch % 2**cfg.depth or patch <= 0:
    raise ValueError(f"--patch-size {patch} must be a positive multiple of"
                     f" 2**depth = {2**cfg.depth}")
  data.check_patch(train, patch)
  return train, val, patch


# ---------------------------------------------------------------- the program
MODEL_KEYS = ("classes", "width", "depth", "norm")


def _on_terminal() -> bool:
  return sys.stdout.isatty()


def _progress(step, total, loss, iou, rate):
  """One progress bar redrawn in place on a terminal; plain lines in a log."""
  filled = int(30 * step / total)
  line = (f"step {step:>6}/{total} |{'#' * filled}{'.' * (30 - filled)}|"
          f" loss {loss:8.4f}  iou {iou:.3f}  {rate:6.2f} steps/s")
  sys.stdout.write(f"\r{line}" if _on_terminal() else f"{line}\n")
  sys.stdout.flush()


def _end_line() -> str:
  """What ends a progress bar before other output ('' in a log file)."""
  return "\n" if _on_terminal() else ""


class Interrupted(KeyboardInterrupt):
  """Ctrl-C or SIGTERM; `checkpoint` is the saved step's folder, or None."""

  def __init__(self, signum: int, checkpoint: pathlib.Path | None = None):
    super().__init__(signal.Signals(signum).name)
    self.signum, self.checkpoint = signum, checkpoint


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _deferred_stop():
  """Turns Ctrl-C and SIGTERM into a flag (the signal number) checked later.

  A KeyboardInterrupt raised inside JAX dispatch or compilation can crash the
  runtime (a segfault at start-up); stopping at a step boundary makes the
  checkpoint and exit clean. A second signal acts at once.
  """
  flag: list[int] = []
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

  def handler(signum, frame):
    del frame
    flag.append(signum)
    print(f"\n{signal.Signals(signum).name}: stopping at the next step"
          " boundary (send it again to stop at once)", file=sys.stderr)
    signal.signal(signum, previous[signum])

  for s in STOP_SIGNALS:
    signal.signal(s, handler)
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


class Diverged(RuntimeError):
  """The loss or gradient became NaN/inf; nothing after it was saved."""


class OutputError(ValueError):
  """`--out` cannot take this run; the message says why and what to do."""


def prepare_workdir(workdir: pathlib.Path, cfg: Config, main_host: bool,
                    say=print) -> None:
  """Refuses to mix a new run into an old one; with `overwrite`, moves it aside.

  Checkpoints are saved per step and never replaced, so a new run in an old
  folder would leave `predict`, `--init-from` and `--resume` loading the old
  model while metrics.json describes the new one. Nothing is deleted: an
  overwritten folder is renamed to the first free `<out>.previous-<k>`.
  """
  _barrier("pel_jax.unet.check_workdir")  # every host sees the folder unmoved
  if workdir.exists() and not workdir.is_dir():
    raise OutputError(f"--out {workdir}: exists and is not a directory")
  used = workdir.is_dir() and any(workdir.iterdir())
  if not used or cfg.resume:
    if cfg.resume and used and not (workdir / "checkpoints").is_dir():
      raise OutputError(f"--out {workdir}: --resume, but the folder holds no"
                        " checkpoints/ (use another --out, or --overwrite)")
    _check_writable(workdir)
    return
  if not cfg.overwrite:
    raise OutputError(
        f"--out {workdir}: not empty (an earlier run?). Continue it with"
        " --resume, start afresh with --overwrite (the old contents move to"
        f" {workdir}.previous-<k>), or choose another --out")
  if main_host:
    k = 1
    while workdir.with_name(f"{workdir.name}.previous-{k}").exists():
      k += 1
    aside = workdir.with_name(f"{workdir.name}.previous-{k}")
    workdir.rename(aside)
    say(f"--overwrite: moved the old contents of {workdir} to {aside}")
  _barrier("pel_jax.unet.moved_workdir")  # the others wait for the move
  _check_writable(workdir)


def _check_writable(workdir: pathlib.Path) -> None:
  probe = workdir / f".write_test_{jax.process_index()}"
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except OSError as e:
    raise OutputError(f"--out {workdir}: cannot write there ({e.strerror or e});"
                      " choose another --out") from e


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def _fg_iou(cm: np.ndarray) -> float:
  tp = np.diag(cm)[1:]
  denom = cm.sum(0)[1:] + cm.sum(1)[1:] - tp
  return float(np.mean(np.where(denom > 0, tp / np.maximum(denom, 1), 1.0)))


def train_and_evaluate(cfg: Config, workdir: str | pathlib.Path,
                       quiet: bool = False) -> dict:
  """Trains, checkpoints, evaluates and writes `workdir`; returns metrics.json.

  Ctrl-C or SIGTERM stops at the next step boundary, saves that step and
  raises `Interrupted` (before training starts: nothing is saved).
  """
  with _deferred_stop() as stop:  # first, so start-up is covered too
    return _train_and_evaluate(cfg, pathlib.Path(workdir), quiet, stop)


def _train_and_evaluate(cfg: Config, workdir: pathlib.Path, quiet: bool,
                        stop: list[int]) -> dict:
  t0 = time.time()
  if cfg.batch_size % jax.device_count():
    raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the"
                     f" {jax.device_count()} devices")
  main_host = jax.process_index() == 0
  say = (lambda *a, **k: None) if quiet or not main_host else print
  say("preparing data (reading and checking every file) ...", flush=True)
  train_ds, val_ds, patch = load_data(cfg)  # validates data before writing
  if stop:
    raise Interrupted(stop[0])
  prepare_workdir(workdir, cfg, main_host, say)

  model = make_model(cfg, train_ds.in_channels, AXIS if cfg.pmap else None)
  optimizer = make_optimizer(cfg, model)
  ckpts = checkpoint.Checkpoints(workdir / "checkpoints")
  model_meta = {k: getattr(cfg, k) for k in MODEL_KEYS}
  model_meta["in_channels"] = train_ds.in_channels
  start = 0
  if cfg.resume and (ckpts.latest_step() or 0) > cfg.steps:
    # The loop would not run and the later model would be saved as step S.
    raise ValueError(
        f"--resume --steps {cfg.steps}: the latest checkpoint in"
        f" {ckpts.directory} is already at step {ckpts.latest_step()}. Keep"
        " the run's --steps (it sets the learning-rate schedule), or use"
        " --init-from with a new --out to train a copy for fewer steps")
  if cfg.resume and ckpts.latest_step() is not None:
    start = _load(ckpts, None, model, optimizer, model_meta)
    say(f"resumed from {ckpts.directory / str(start)}")
  elif cfg.resume:
    say(f"--resume: no checkpoint in {ckpts.directory} yet, starting at step 0")
  elif cfg.init_from:
    init = checkpoint.Checkpoints(cfg.init_from, create=False)
    _load(init, None, model, None, model_meta)
    say(f"initialised the model from {init.directory}")

  stepper = Stepper(model, optimizer, make_loss(cfg), cfg, cfg.pmap)
  put = np.asarray if cfg.pmap else stepper.put
  nproc, pid = jax.process_count(), jax.process_index()
  local = cfg.batch_size // nproc
  part = slice(pid * local, (pid + 1) * local)

  pending: list[tuple[int, jax.Array, jax.Array]] = []  # (step, loss, |grad|)

  def check_finite():
    """Raises Diverged at the first NaN/inf loss or gradient since the last check."""
    for done, loss, gnorm in pending:
      if not (np.isfinite(to_host(loss)) and np.isfinite(to_host(gnorm))):
        latest = ckpts.latest_step()
        raise Diverged(
            f"non-finite loss or gradient at step {done}: stopped without"
            " saving. " + (f"The checkpoints in {ckpts.directory} (latest:"
                           f" step {latest}) are kept." if latest is not None
                           else "No checkpoint was written.")
            + " Lower --lr, or check the data and --init-from.")
    pending.clear()

  def save(step):
    check_finite()  # a diverged state never replaces or prunes a good one
    stepper.sync()
    ckpts.save(step, nnx.state(model), nnx.state(optimizer),
               {"step": step, "seed": cfg.seed, "model": model_meta,
                "config": dataclasses.asdict(cfg)})

  if stop:
    raise Interrupted(stop[0])
  curve = _Curve(workdir / "train_curve.csv", start, main_host)
  say(f"training {cfg.steps} steps on {jax.device_count()} device(s)"
      f" ({'pmap' if cfg.pmap else 'jit + Mesh'}), {len(train_ds.images)}"
      f" train / {len(val_ds.images)} val images, patch {patch}, loss"
      f" {cfg.loss}")
  step, window_cm, tick, ticks = start, 0, time.time(), 0
  try:
    for step in range(start, cfg.steps):
      batch = data.train_batch(train_ds, cfg.seed, step, cfg.batch_size, patch,
                               part)
      loss, cm, gnorm = stepper(batch)
      window_cm = window_cm + cm
      ticks += 1
      done = step + 1
      pending.append((done, loss, gnorm))
      if done % cfg.log_every == 0 or done == cfg.steps:
        check_finite()
        loss, window_cm = float(to_host(loss)), to_host(window_cm)
        rate = ticks / (time.time() - tick)
        curve.add({"step": done, "loss": loss, "train_iou": _fg_iou(window_cm),
                   "steps_per_s": rate, "time_s": time.time() - t0})
        if not quiet and main_host:
          _progress(done, cfg.steps, loss, curve.rows[-1]["train_iou"], rate)
        window_cm, tick, ticks = 0, time.time(), 0
      if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
        stepper.sync()
        summary, _ = evaluate(model, val_ds, cfg.depth, put)
        say(f"{_end_line()}  val iou {summary['val_iou']:.4f} dice {summary['val_dice']:.4f}")
      if done % cfg.ckpt_every == 0 and done < cfg.steps:
        save(done)
      step = done
      if stop:  # Ctrl-C / SIGTERM: stop at this step boundary
        raise Interrupted(stop[0])
  except KeyboardInterrupt as e:
    say(f"{_end_line()}interrupted: saving step {step} to {ckpts.directory}")
    try:
      save(step)
    finally:
      ckpts.close()
      curve.close()
    raise Interrupted(getattr(e, "signum", signal.SIGINT),
                      ckpts.directory / str(step)) from e
  except Diverged:
    ckpts.close()
    curve.close()
    raise
  say(_end_line(), end="")
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
  curve.close()
  if main_host:
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2))
    from . import figures  # pylint: disable=import-outside-toplevel
    figures.samples(workdir / "figures", val_ds, logits, cfg)
    figures.curve(workdir / "figures" / "train_curve.png", curve.rows)
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


class _Curve:
  """train_curve.csv, one row appended and flushed per log step.

  A run killed with no chance to clean up (kill -9) keeps every row written;
  a resumed run first drops the rows after its checkpoint, which it redoes.
  """

  FIELDS = ("step", "loss", "train_iou", "steps_per_s", "time_s")

  def __init__(self, path: pathlib.Path, start: int, active: bool):
    self.rows: list[dict] = []
    self.file = None
    if not active:
      return
    if start and path.exists():
      with path.open() as f:
        self.rows = [{k: int(v) if k == "step" else float(v)
                      for k, v in r.items()}
                     for r in csv.DictReader(f) if int(r["step"]) <= start]
    path.parent.mkdir(parents=True, exist_ok=True)
    self.file = path.open("w", newline="")
    self.writer = csv.DictWriter(self.file, self.FIELDS)
    self.writer.writeheader()
    self.writer.writerows(self.rows)
    self.file.flush()

  def add(self, row: dict) -> None:
    self.rows.append(row)
    if self.file is not None:
      self.writer.writerow(row)
      self.file.flush()

  def close(self) -> None:
    if self.file is not None:
      self.file.close()

"""Training: the run loop around `steps.DataParallel`.

`train_and_evaluate(cfg, workdir)` trains on every device of every host (the
step, the optimizer and the Mesh are in `steps`), logs, checkpoints, and
evaluates.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import signal
import sys
import time

from flax import nnx
import jax
import numpy as np

from . import accumulate
from . import checkpoint
from . import configs
from . import data
from . import inference
from . import interrupts
from . import losses
from . import metrics
from . import models
from . import rundir
from . import steps


class DivergenceError(RuntimeError):
  """The loss or gradient became NaN/inf; nothing after it was saved."""


# ------------------------------------------------------------------- the run
def _progress(step, total, loss, iou, rate):
  """One progress bar redrawn in place on a terminal; plain lines in a log."""
  filled = int(30 * step / total)
  line = (
    f"step {step:>6}/{total} |{'#' * filled}{'.' * (30 - filled)}|"
    f" loss {loss:8.4f}  iou {iou:.3f}  {rate:6.2f} steps/s"
  )
  sys.stdout.write(f"\r{line}" if sys.stdout.isatty() else f"{line}\n")
  sys.stdout.flush()


def _end_line() -> str:
  """What ends a progress bar before other output ('' in a log file)."""
  return "\n" if sys.stdout.isatty() else ""


def _fg_iou(cm: np.ndarray) -> float:
  tp = np.diag(cm)[1:]
  denom = cm.sum(0)[1:] + cm.sum(1)[1:] - tp
  return float(np.mean(np.where(denom > 0, tp / np.maximum(denom, 1), 1.0)))


def train_and_evaluate(
  cfg: configs.Config, workdir: str | pathlib.Path, quiet: bool = False
) -> dict:
  """Trains, checkpoints, evaluates and writes `workdir`; returns metrics.json.

  Ctrl-C or SIGTERM stops at the next step boundary, saves that step and
  raises `interrupts.Interrupted` (before training starts: nothing is saved).
  """
  with interrupts.deferred_stop() as stop:  # first: start-up is covered too
    return _run(cfg, pathlib.Path(workdir), quiet, stop)


def _start(cfg, ckpts, model, optimizer, arch, say) -> int:
  """The first step: restored with --resume, else 0 (maybe --init-from)."""
  latest = ckpts.latest_step()
  if cfg.resume and (latest or 0) > cfg.steps:
    # The loop would not run and the later model would be saved as step S.
    raise ValueError(
      f"--resume --steps {cfg.steps}: the latest checkpoint in"
      f" {ckpts.directory} is already at step {latest}. Keep the run's"
      " --steps (it sets the learning-rate schedule), or use --init-from"
      " with a new --out to train a copy for fewer steps"
    )
  if cfg.resume and latest is not None:
    checkpoint.check_resumable(cfg, ckpts, latest, say)
    start = checkpoint.restore(
      ckpts, model, architecture=arch, optimizer=optimizer
    )
    say(f"resumed from {ckpts.directory / str(start)}")
    return start
  if cfg.resume:
    say(f"--resume: no checkpoint in {ckpts.directory} yet, starting at step 0")
  elif cfg.init_from:
    init = checkpoint.Checkpoints(cfg.init_from, create=False)
    checkpoint.restore(init, model, architecture=arch)
    say(f"initialised the model from {init.directory}")
  return 0


def _run(
  cfg: configs.Config, workdir: pathlib.Path, quiet: bool, stop: list[int]
) -> dict:
  t0 = time.time()
  if cfg.batch_size % jax.device_count():
    raise ValueError(
      f"--batch-size {cfg.batch_size} is not divisible by the"
      f" {jax.device_count()} devices"
    )
  accumulate.check(cfg.batch_size, cfg.accumulate, jax.device_count())
  if cfg.accumulate > 1 and cfg.norm == "batch":
    raise ValueError(
      f"--accumulate {cfg.accumulate} with --norm batch: batch norm"
      " statistics would be those of each micro-batch, so the step would"
      " not be the whole batch's; use --norm group, layer or none"
    )
  main_host = jax.process_index() == 0
  say = (lambda *a, **k: None) if quiet or not main_host else print
  say("preparing data (reading and checking every file) ...", flush=True)
  train_ds, val_ds, patch = data.load(cfg)  # validates data before writing
  if stop:
    raise interrupts.Interrupted(stop[0])
  rundir.prepare(workdir, cfg, main_host, say)

  model = models.make_model(cfg, train_ds.in_channels)
  optimizer = steps.make_optimizer(cfg, model)
  ckpts = checkpoint.Checkpoints(workdir / "checkpoints")
  arch = models.architecture(cfg, train_ds.in_channels)
  start = _start(cfg, ckpts, model, optimizer, arch, say)
  parallel = steps.DataParallel(
    losses.make_loss(cfg),
    cfg.classes,
    micro=cfg.accumulate,
    stats_loss=losses.make_stats_loss(cfg),
    fused_head=cfg.fused_head,
  )
  parallel.replicate(model, optimizer)
  nproc, pid = jax.process_count(), jax.process_index()
  part = slice(
    pid * cfg.batch_size // nproc, (pid + 1) * cfg.batch_size // nproc
  )
  pending: list[tuple[int, jax.Array, jax.Array]] = []  # (step, loss, |grad|)

  def check_finite():
    """Raises DivergenceError at the first NaN/inf loss or gradient since the last check."""
    for done, loss, gnorm in pending:
      if not (
        np.isfinite(inference.to_host(loss))
        and np.isfinite(inference.to_host(gnorm))
      ):
        latest = ckpts.latest_step()
        raise DivergenceError(
          f"non-finite loss or gradient at step {done}: stopped without"
          " saving. "
          + (
            f"The checkpoints in {ckpts.directory} (latest:"
            f" step {latest}) are kept."
            if latest is not None
            else "No checkpoint was written."
          )
          + " Lower --lr, or check the data and --init-from."
        )
    pending.clear()

  def save(step):
    check_finite()  # a diverged state never replaces or prunes a good one
    ckpts.save(
      step,
      nnx.state(model),
      nnx.state(optimizer),
      {
        "step": step,
        "seed": cfg.seed,
        "model": arch,
        "config": dataclasses.asdict(cfg),
      },
    )

  if stop:
    raise interrupts.Interrupted(stop[0])
  curve = rundir.Curve(workdir / "train_curve.csv", start, main_host)
  say(
    f"training {cfg.steps} steps on {jax.device_count()} device(s)"
    f" (jit + Mesh), {len(train_ds.images)} train / {len(val_ds.images)}"
    f" val images, patch {patch}, loss {cfg.loss}"
    + (
      f", {cfg.accumulate} micro-batches per step" if cfg.accumulate > 1 else ""
    )
  )
  step, window_cm, tick, ticks = start, 0, time.time(), 0
  try:
    for step in range(start, cfg.steps):
      batch = data.train_batch(
        train_ds, cfg.seed, step, cfg.batch_size, patch, part
      )
      loss, cm, gnorm = parallel.step(model, optimizer, batch)
      window_cm = window_cm + cm
      ticks += 1
      done = step + 1
      pending.append((done, loss, gnorm))
      if done % cfg.log_every == 0 or done == cfg.steps:
        check_finite()
        loss, window_cm = (
          float(inference.to_host(loss)),
          inference.to_host(window_cm),
        )
        rate = ticks / (time.time() - tick)
        curve.add(
          {
            "step": done,
            "loss": loss,
            "train_iou": _fg_iou(window_cm),
            "steps_per_s": rate,
            "time_s": time.time() - t0,
          }
        )
        if not quiet and main_host:
          _progress(done, cfg.steps, loss, curve.rows[-1]["train_iou"], rate)
        window_cm, tick, ticks = 0, time.time(), 0
      if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
        summary, _ = inference.evaluate(
          model, val_ds, parallel.put, cfg.surface_tolerance
        )
        say(
          f"{_end_line()}  val iou {summary['val_iou']:.4f} dice"
          f" {summary['val_dice']:.4f}"
        )
      if done % cfg.ckpt_every == 0 and done < cfg.steps:
        save(done)
      step = done
      if stop:  # Ctrl-C / SIGTERM: stop at this step boundary
        raise interrupts.Interrupted(stop[0])
  except KeyboardInterrupt as e:
    say(f"{_end_line()}interrupted: saving step {step} to {ckpts.directory}")
    try:
      save(step)
    finally:
      ckpts.close()
      curve.close()
    raise interrupts.Interrupted(
      getattr(e, "signum", signal.SIGINT), ckpts.directory / str(step)
    ) from e
  except DivergenceError:
    ckpts.close()
    curve.close()
    raise
  say(_end_line(), end="")
  save(cfg.steps)
  ckpts.close()
  curve.close()
  summary, logits = inference.evaluate(
    model, val_ds, parallel.put, cfg.surface_tolerance
  )
  result = {
    **summary,
    "val_iou_definition": (
      "mean IoU over foreground classes 1..C-1 (binary: foreground IoU);"
      " val_iou_all includes background"
    ),
    "steps": cfg.steps,
    "wall_time_s": time.time() - t0,
    "devices": jax.device_count(),
    "processes": nproc,
    "loss": cfg.loss,
    "config": dataclasses.asdict(cfg),
  }
  if main_host:
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2))
    from . import figures  # pylint: disable=import-outside-toplevel  (matplotlib)

    figures.samples(workdir / "figures", val_ds, logits, cfg)
    figures.curve(workdir / "figures" / "train_curve.png", curve.rows)
  say(metrics.table(summary))
  say(metrics.surface_line(summary, cfg.surface_tolerance))
  if "val_aji" in summary:
    say(
      f"objects: detection F1 (IoU >= 0.5) {summary['val_object_f1']:.4f}"
      f"  AJI {summary['val_aji']:.4f}"
    )
  say(
    f"val IoU {summary['val_iou']:.4f}  Dice {summary['val_dice']:.4f}  BF1"
    f" {summary['val_bf1']:.4f}  ({result['wall_time_s']:.0f} s, saved as"
    f" wall_time_s) -> {workdir}"
  )
  return result

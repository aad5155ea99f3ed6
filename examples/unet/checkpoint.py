"""Orbax checkpoints: model state, optimizer state, and JSON metadata per step.

`restore` loads a checkpoint into a model (and optimizer) after checking the
architecture; `load_model` rebuilds a run's model from its metadata alone.

The metadata holds a SHA-256 of every saved array, checked on restore: Orbax
reads raw array bytes back without a checksum, so a flipped bit on disk would
otherwise come back as a silently different (e.g. NaN) parameter.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from . import configs
from . import models


class CheckpointError(RuntimeError):
  """A checkpoint is missing, corrupt, or does not fit the model."""


def resolve(path: str | pathlib.Path) -> pathlib.Path:
  """A run directory (holding `checkpoints/`) or a checkpoints directory."""
  path = pathlib.Path(path).absolute()
  return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def _abstract(tree):
  # Restore with the target's shapes, dtypes and shardings (e.g. replicated
  # over the mesh), so a restored run is laid out like a fresh one.
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def checksums(tree) -> dict[str, str]:
  """`{key path: sha256 of dtype, shape and bytes}` of every array leaf."""
  out = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if isinstance(x, jax.Array):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
      x = x.addressable_data(0)  # replicated: any shard is the whole array
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    out[jax.tree_util.keystr(path)] = h.hexdigest()
  return out


class Checkpoints:
  """Thin wrapper over `ocp.CheckpointManager` with clear errors."""

  def __init__(
    self,
    directory: str | pathlib.Path,
    max_to_keep: int = 3,
    create: bool = True,
  ):
    self.directory = resolve(directory)
    if not create and not self.directory.is_dir():
      raise CheckpointError(f"{self.directory}: no checkpoint directory")
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, model_state, opt_state, meta: dict) -> None:
    if step in self.manager.all_steps():  # e.g. Ctrl-C right after a save
      return
    meta = {
      **meta,
      "checksums": {
        "model": checksums(model_state),
        "optimizer": checksums(opt_state),
      },
    }
    self.manager.save(
      step,
      args=ocp.args.Composite(
        model=ocp.args.StandardSave(model_state),
        optimizer=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(meta),
      ),
      force=True,
    )

  def meta(self, step: int | None = None) -> tuple[int, dict]:
    step = self._step(step)
    try:
      got = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
      )
    except Exception as e:
      raise CheckpointError(
        f"{self.directory / str(step)}: unreadable checkpoint metadata"
        f" ({type(e).__name__}: {e})"
      ) from e
    return step, got["meta"]

  def restore(self, step: int | None, targets: dict[str, Any]) -> dict:
    """Restores the named items (`model`, `optimizer`) shaped like `targets`.

    Raises CheckpointError if an array differs from its checksum at save time.
    """
    step, meta = self.meta(step)
    path = self.directory / str(step)
    try:
      got = self.manager.restore(
        step,
        args=ocp.args.Composite(
          **{
            k: ocp.args.StandardRestore(_abstract(v))
            for k, v in targets.items()
          }
        ),
      )
    except Exception as e:
      raise CheckpointError(
        f"{path}: corrupt checkpoint, or one saved for a different model or"
        f" optimizer ({type(e).__name__}: {str(e)[:500]})"
      ) from e
    for k, v in targets.items():
      want = jax.tree.map(lambda x: (x.shape, x.dtype), v)
      have = jax.tree.map(lambda x: (x.shape, x.dtype), got[k])
      if want != have:
        raise CheckpointError(
          f"{path}: {k} shapes/dtypes do not match the current model"
        )
      saved = meta.get("checksums", {}).get(k)
      if saved is None:
        raise CheckpointError(
          f"{path}: no checksums of the {k} arrays in the"
          " metadata (a checkpoint from an older version?)"
        )
      bad = sorted(n for n, h in checksums(got[k]).items() if saved.get(n) != h)
      if bad:
        raise CheckpointError(
          f"{path}: corrupt checkpoint: {len(bad)} {k} array(s) differ from"
          f" their checksums at save time, e.g. {bad[0]}"
        )
    return dict(got)

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint found")
    return step

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# The flags that fix a run's schedules (learning rate, the boundary term's
# ramp) and batches: a resumed run that changes them is another run
# (refused without --force).
SCHEDULE = ("lr", "steps", "warmup", "batch_size", "seed", "boundary_ramp")


def check_resumable(cfg, ckpts: Checkpoints, latest: int, say) -> None:
  """Refuses a --resume (from step `latest`) that changes the schedule,
  unless `cfg.force`; says through `say` when the run is already done."""
  _, meta = ckpts.meta(latest)
  saved = meta.get("config", {})
  changed = [
    f"--{k.replace('_', '-')} {saved[k]} -> {getattr(cfg, k)}"
    for k in SCHEDULE
    if k in saved and saved[k] != getattr(cfg, k)
  ]
  if changed and not cfg.force:
    raise ValueError(
      f"--resume: {', '.join(changed)} differ from the run in"
      f" {ckpts.directory} (step {latest}); they set the schedules"
      " and the batches, so the result would match neither run."
      " Pass the run's values, or add --force to continue with the new ones"
    )
  if changed:
    say(f"--resume --force: continuing with {', '.join(changed)}")
  if latest == cfg.steps:
    say(
      f"--resume: the run in {ckpts.directory} is already finished (step"
      f" {latest} of {cfg.steps}); nothing to train, evaluating its final"
      " checkpoint again"
    )


def restore(
  ckpts: Checkpoints,
  model,
  *,
  architecture: dict,
  optimizer=None,
  step: int | None = None,
) -> int:
  """Restores step `step` (latest if None) into `model` (and `optimizer`).

  Raises CheckpointError if the saved architecture differs from
  `architecture` (`models.architecture`), or the arrays are corrupt.
  Returns the step.
  """
  step, meta = ckpts.meta(step)
  saved = {**models.LEGACY_ARCHITECTURE, **meta.get("model", {})}
  diff = {
    k: (saved.get(k), v) for k, v in architecture.items() if saved.get(k) != v
  }
  if diff:
    raise CheckpointError(
      f"{ckpts.directory / str(step)}: incompatible checkpoint, saved vs"
      f" current: {diff}"
    )
  targets = {"model": nnx.state(model)}
  if optimizer is not None:
    targets["optimizer"] = nnx.state(optimizer)
  got = ckpts.restore(step, targets)
  nnx.update(model, got["model"])
  if optimizer is not None:
    nnx.update(optimizer, got["optimizer"])
  return step


def load_model(path: str | pathlib.Path) -> tuple[models.UNet, configs.Config]:
  """The model of a run (its latest checkpoint), built from the metadata."""
  ckpts = Checkpoints(path, create=False)
  step, meta = ckpts.meta()
  fields = configs.Config.__dataclass_fields__
  saved = {**models.LEGACY_ARCHITECTURE, **meta.get("config", {})}
  cfg = configs.Config(**{k: v for k, v in saved.items() if k in fields})
  in_channels = meta.get("model", {}).get("in_channels")
  if in_channels is None:
    raise CheckpointError(
      f"{ckpts.directory / str(step)}: no model metadata in checkpoint"
    )
  model = models.make_model(cfg, in_channels)
  restore(
    ckpts, model, architecture=models.architecture(cfg, in_channels), step=step
  )
  ckpts.close()
  return model, cfg

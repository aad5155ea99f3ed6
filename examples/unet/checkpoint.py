"""Orbax checkpoints: model state, optimizer state, and JSON metadata per step."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


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


class Checkpoints:
  """Thin wrapper over `ocp.CheckpointManager` with clear errors."""

  def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 3,
               create: bool = True):
    self.directory = resolve(directory)
    if not create and not self.directory.is_dir():
      raise CheckpointError(f"{self.directory}: no checkpoint directory")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=create))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, model_state, opt_state, meta: dict) -> None:
    if step in self.manager.all_steps():  # e.g. Ctrl-C right after a save
      return
    self.manager.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(model_state),
        optimizer=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(meta)), force=True)

  def meta(self, step: int | None = None) -> tuple[int, dict]:
    step = self._step(step)
    try:
      got = self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(
          f"{self.directory / str(step)}: unreadable checkpoint metadata"
          f" ({type(e).__name__}: {e})") from e
    return step, got["meta"]

  def restore(self, step: int | None, targets: dict[str, Any]) -> dict:
    """Restores the named items (`model`, `optimizer`) shaped like `targets`."""
    step = self._step(step)
    path = self.directory / str(step)
    try:
      got = self.manager.restore(step, args=ocp.args.Composite(**{
          k: ocp.args.StandardRestore(_abstract(v)) for k, v in targets.items()}))
    except Exception as e:
      raise CheckpointError(
          f"{path}: corrupt checkpoint, or one saved for a different model or"
          f" optimizer ({type(e).__name__}: {str(e)[:500]})") from e
    for k, v in targets.items():
      want = jax.tree.map(lambda x: (x.shape, x.dtype), v)
      have = jax.tree.map(lambda x: (x.shape, x.dtype), got[k])
      if want != have:
        raise CheckpointError(f"{path}: {k} shapes/dtypes do not match the"
                              " current model")
    return dict(got)

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint found")
    return step

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

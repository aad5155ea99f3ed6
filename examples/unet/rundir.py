"""The output folder of a run: refusing to mix runs, and the training curve CSV."""

from __future__ import annotations

import csv
import pathlib

import jax


class OutputError(ValueError):
  """`--out` cannot take this run; the message says why and what to do."""


def prepare(workdir: pathlib.Path, cfg, main_host: bool, say=print) -> None:
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
      raise OutputError(
        f"--out {workdir}: --resume, but the folder holds no"
        " checkpoints/ (use another --out, or --overwrite)"
      )
    _check_writable(workdir)
    return
  if not cfg.overwrite:
    raise OutputError(
      f"--out {workdir}: not empty (an earlier run?). Continue it with"
      " --resume, start afresh with --overwrite (the old contents move to"
      f" {workdir}.previous-<k>), or choose another --out"
    )
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
    raise OutputError(
      f"--out {workdir}: cannot write there ({e.strerror or e});"
      " choose another --out"
    ) from e


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)


class Curve:
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
        self.rows = [
          {k: int(v) if k == "step" else float(v) for k, v in r.items()}
          for r in csv.DictReader(f)
          if int(r["step"]) <= start
        ]
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

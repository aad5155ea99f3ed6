"""Predict mode: a folder of images in, a folder of PNG class-id masks out."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from . import checkpoint, data, train


def load_model(path: str | pathlib.Path):
  """The model saved in a run (latest checkpoint), built from its metadata."""
  ckpts = checkpoint.Checkpoints(path, create=False)
  step, meta = ckpts.meta()
  saved = train.Config(**{k: v for k, v in meta.get("config", {}).items()
                          if k in train.Config.__dataclass_fields__})
  in_channels = meta.get("model", {}).get("in_channels")
  if in_channels is None:
    raise checkpoint.CheckpointError(
        f"{ckpts.directory / str(step)}: no model metadata in checkpoint")
  model = train.make_model(saved, in_channels)
  train._load(ckpts, step, model, None, meta["model"])  # pylint: disable=protected-access
  ckpts.close()
  return model, saved, in_channels


def predict_folder(checkpoint_path, input_dir, output_dir) -> list[pathlib.Path]:
  """Writes `<output_dir>/<stem>.png` (uint8 class ids; uint16 if > 256 classes)."""
  model, cfg, in_channels = load_model(checkpoint_path)
  images, names = data.load_images(input_dir)
  if images[0].shape[-1] != in_channels:
    # grayscale <-> RGB by replication / luminance mean, as the model expects
    images = [np.repeat(im, in_channels, -1) if im.shape[-1] == 1
              else im.mean(-1, keepdims=True) for im in images]
  logits = train.predict_logits(model, images, cfg.depth)
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  dtype = np.uint8 if cfg.classes <= 256 else np.uint16
  paths = []
  for name, lg in zip(names, logits):
    paths.append(out / f"{name}.png")
    Image.fromarray(lg.argmax(-1).astype(dtype)).save(paths[-1])
  print(f"wrote {len(paths)} masks to {out}")
  return paths

"""Predict mode: a folder of images in, a folder of PNG class-id masks out."""

from __future__ import annotations

import colorsys
import pathlib

import numpy as np
from PIL import Image

from . import checkpoint
from . import data
from . import inference


def palette(num_classes: int) -> list[int]:
  """RGB triples for class ids: 0 black, binary 1 white, else distinct hues."""
  if num_classes <= 2:
    return [0, 0, 0, 255, 255, 255]
  rgb = [(0.0, 0.0, 0.0)] + [
    colorsys.hsv_to_rgb((0.618 * i) % 1.0, 0.7, 1.0)
    for i in range(num_classes - 1)
  ]
  return [round(255 * v) for c in rgb for v in c]


def mask_image(ids: np.ndarray, num_classes: int) -> Image.Image:
  """Class ids as a palette PNG: the pixel values are the ids, shown in colour.

  A plain 0/1 PNG looks black in an image viewer; a palette ("P") image keeps
  the ids (`np.asarray(Image.open(f))` returns them) and displays them as
  colours. More than 256 classes: a 16-bit grayscale PNG of the ids.
  """
  if num_classes > 256:
    return Image.fromarray(ids.astype(np.uint16))
  im = Image.frombytes("P", ids.shape[::-1], ids.astype(np.uint8).tobytes())
  im.putpalette(palette(num_classes))
  return im


def predict_folder(
  checkpoint_path, input_dir, output_dir
) -> list[pathlib.Path]:
  """Writes `<output_dir>/<stem>.png`: class ids as a palette PNG (`mask_image`)."""
  model, cfg = checkpoint.load_model(checkpoint_path)
  in_channels = model.in_channels
  images, names = data.load_images(input_dir)
  if images[0].shape[-1] != in_channels:
    # grayscale <-> RGB by replication / luminance mean, as the model expects
    images = [
      np.repeat(im, in_channels, -1)
      if im.shape[-1] == 1
      else im.mean(-1, keepdims=True)
      for im in images
    ]
  logits = inference.predict_logits(model, images)
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, lg in zip(names, logits):
    paths.append(out / f"{name}.png")
    mask_image(lg.argmax(-1), cfg.classes).save(paths[-1])
  print(f"wrote {len(paths)} masks to {out}")
  return paths

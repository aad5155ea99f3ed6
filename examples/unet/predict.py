"""Predict mode: a folder of images in, PNG class-id masks and overlays out.

With a folder of true masks, also the metrics of the run's validation
(`metrics.json`, the same keys as a run's `val_*`).
"""

from __future__ import annotations

import colorsys
import json
import pathlib

import numpy as np
from PIL import Image

from . import checkpoint
from . import data
from . import inference
from . import metrics


def palette(num_classes: int) -> list[int]:
  """RGB triples for class ids: 0 black, binary 1 white, else distinct hues."""
  if num_classes <= 2:
    return [0, 0, 0, 255, 255, 255]
  rgb = [(0.0, 0.0, 0.0)] + [
    colorsys.hsv_to_rgb((0.618 * i) % 1.0, 0.7, 1.0)
    for i in range(num_classes - 1)
  ]
  return [round(255 * v) for c in rgb for v in c]


def _hues(num_classes: int) -> np.ndarray:
  return np.array(
    [(0.0, 0.0, 0.0)]
    + [
      colorsys.hsv_to_rgb((0.618 * i) % 1.0, 0.8, 1.0)
      for i in range(num_classes - 1)
    ]
  )


def overlay(image: np.ndarray, ids: np.ndarray, num_classes: int):
  """The contrast-stretched image, classes > 0 tinted and outlined in colour.

  The outline (pixels with a 4-neighbour of another id) shows where two
  touching objects of one class meet only as much as the ids allow: one
  class is one colour.
  """
  rgb = data.stretch(image)
  rgb = np.repeat(rgb, 3, -1) if rgb.shape[-1] == 1 else rgb
  colour = _hues(num_classes)[ids]
  fg = (ids > 0)[..., None]
  edge = np.zeros(ids.shape, bool)
  edge[1:] |= ids[1:] != ids[:-1]
  edge[:-1] |= ids[1:] != ids[:-1]
  edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
  edge[:, :-1] |= ids[:, 1:] != ids[:, :-1]
  edge = (edge & (ids > 0))[..., None]
  out = np.where(fg, 0.65 * rgb + 0.35 * colour, rgb)
  out = np.where(edge, colour, out)
  return Image.fromarray(np.round(255 * out).astype(np.uint8))


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
  checkpoint_path, input_dir, output_dir, masks_dir=None
) -> list[pathlib.Path]:
  """Writes `<output_dir>/<stem>.png` (class ids as a palette PNG, see
  `mask_image`) and `<output_dir>/overlays/<stem>.png` (`overlay`).

  With `masks_dir` (true masks with the images' file names, and instance
  ids in a sibling `instances/` folder if there is one), also writes
  `<output_dir>/metrics.json`: the run's validation metrics on these images.
  """
  model, cfg = checkpoint.load_model(checkpoint_path)
  if masks_dir is None:
    images, names = data.load_images(input_dir)
    truth = None
  else:
    masks_dir = pathlib.Path(masks_dir)
    truth = data.load_pairs(
      input_dir,
      masks_dir,
      cfg.classes,
      cfg.binary,
      instances=masks_dir.parent / "instances",
    )
    images, names = truth.images, truth.names
  images = _to_channels(images, model.in_channels)
  if truth is None:
    logits = inference.predict_logits(model, images)
  else:
    truth.images = images
    summary, logits = inference.evaluate(
      model, truth, tolerance=cfg.surface_tolerance
    )
  out = pathlib.Path(output_dir)
  (out / "overlays").mkdir(parents=True, exist_ok=True)
  paths = []
  for name, image, lg in zip(names, images, logits):
    paths.append(out / f"{name}.png")
    ids = lg.argmax(-1)
    mask_image(ids, cfg.classes).save(paths[-1])
    overlay(image, ids, cfg.classes).save(out / "overlays" / f"{name}.png")
  print(f"wrote {len(paths)} masks to {out} and overlays to {out / 'overlays'}")
  if truth is not None:
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(metrics.table(summary))
    print(metrics.surface_line(summary, cfg.surface_tolerance))
    print(f"metrics of {len(names)} images -> {out / 'metrics.json'}")
  return paths


def _to_channels(images: list[np.ndarray], channels: int) -> list[np.ndarray]:
  """Grayscale <-> RGB by replication / luminance mean, as the model expects."""
  if images[0].shape[-1] == channels:
    return images
  return [
    np.repeat(im, channels, -1)
    if im.shape[-1] == 1
    else im.mean(-1, keepdims=True)
    for im in images
  ]

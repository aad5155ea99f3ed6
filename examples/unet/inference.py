"""Inference: logits for images of any size, and validation metrics."""

from __future__ import annotations

from flax import nnx
import jax
import numpy as np

from . import data
from . import metrics
from . import object_metrics


def to_host(x) -> np.ndarray:
  """A replicated (possibly multi-host) array as numpy."""
  return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x


@nnx.jit
def _logits(model, images):
  return nnx.view(model, use_running_average=True, raise_if_not_found=False)(
    images
  )


def predict_logits(
  model, images: list[np.ndarray], put=np.asarray, batch_size: int = 16
) -> list[np.ndarray]:
  """Logits for images of any size: edge-padded to a multiple of
  `2**model.depth`, batched by shape, cropped back.

  `put` places a host batch for the model (e.g. replicated over a mesh).
  """
  m = 2**model.depth
  out: list[np.ndarray | None] = [None] * len(images)
  by_shape: dict[tuple, list[int]] = {}
  for i, im in enumerate(images):
    by_shape.setdefault(im.shape, []).append(i)
  for (h, w, _), idx in by_shape.items():
    for s in range(0, len(idx), batch_size):
      chunk = idx[s : s + batch_size]
      x = np.stack([images[i] for i in chunk])
      x = np.pad(x, [(0, 0), (0, -h % m), (0, -w % m), (0, 0)], mode="edge")
      logits = to_host(_logits(model, put(x)))[:, :h, :w]
      for i, lg in zip(chunk, logits):
        out[i] = lg
  return out


def evaluate(model, ds: data.Dataset, put=np.asarray, tolerance: float = 2.0):
  """(summary dict, list of logits) over a dataset (`metrics.summarize`).

  Also HD95 and surface Dice at `tolerance` pixels (`metrics.surface_summary`:
  `val_hd95`, `val_nsd`, per class). With instance masks (`ds.instances`),
  also the object metrics of the predicted foreground (any class > 0):
  `val_object_f1`, `val_aji`, ...
  """
  logits = predict_logits(model, ds.images, put)
  cm = np.zeros((ds.num_classes,) * 2, np.int64)
  bc = np.zeros((ds.num_classes, 4), np.int64)
  surfaces = []
  objects = None
  for i, (lg, mask) in enumerate(zip(logits, ds.masks)):
    pred = lg.argmax(-1)
    cm += metrics.confusion_matrix(pred, mask, ds.num_classes)
    bc += metrics.boundary_counts(pred[None], mask[None], ds.num_classes)
    surfaces.append(
      metrics.surface_values(pred, mask, ds.num_classes, tolerance)
    )
    if ds.instances is not None:
      objects = object_metrics.add(
        objects, object_metrics.image_counts(ds.instances[i], pred > 0)
      )
  summary = metrics.summarize(cm, bc)
  _add_surface(summary, metrics.surface_summary(surfaces))
  if objects is not None:
    summary.update(
      {f"val_{k}": v for k, v in object_metrics.summarize(objects).items()}
    )
  return summary, logits


def _add_surface(summary: dict, surface: dict) -> None:
  """Merges `metrics.surface_summary` into `summary`, per class too."""
  for c, m in surface.pop("per_class").items():
    summary["per_class"][c].update(m)
  summary.update(surface)

"""Writes lovasz_values.json: smp's and kornia's Lovász losses, float64.

tests/lovasz_test.py (`PeerRunTest`) checks `lovasz_softmax_loss` and
`lovasz_hinge_loss` against these values and input gradients without
importing torch, smp or kornia. Each case stores the peer's inputs (channels
first, as the peer takes them), the peer's settings, its loss and the
gradient of the loss with respect to its logits.

Run it in a virtual environment of its own, outside the repository:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch segmentation-models-pytorch==0.6.0 \
    kornia==0.9.0 numpy
  /tmp/peers/bin/python tests/peer_values/make_lovasz_values.py

The committed file was written with torch 2.14.1 (CPU), smp 0.6.0 and
kornia 0.9.0; the script refuses other smp and kornia versions. The inputs
come from a seeded NumPy generator, rounded to float32 (no ties among the
errors), so a rerun writes the same inputs; values may differ in the last
bits across torch builds. kornia runs in float64; smp 0.6.0 only runs in
float32 (its `_lovasz_grad` is float32 and `torch.dot` refuses a float64
partner), so its values carry float32 rounding.
"""

from __future__ import annotations

import json
import pathlib
import sys

import kornia
import numpy as np
import segmentation_models_pytorch as smp
import torch

VERSIONS = {"segmentation_models_pytorch": "0.6.0", "kornia": "0.9.0"}
OUT = pathlib.Path(__file__).with_name("lovasz_values.json")
IGNORE = 255


def _labels(rng):
  """`[3, 4, 5]` ids of 4 classes: all in image 0, no 2 in image 1."""
  labels = rng.integers(0, 4, (3, 4, 5))
  labels[0, 0, :4] = np.arange(4)
  labels[1] = np.where(labels[1] == 2, 3, labels[1])
  labels[2] = np.where(labels[2] == 3, 0, labels[2])  # No class 3.
  return labels


def _ignored(labels, every_pixel_of_image_2=False):
  labels = labels.copy()
  labels[0, 3, 1:] = IGNORE
  labels[1, :, 0] = IGNORE
  if every_pixel_of_image_2:
    labels[2] = IGNORE
  return labels


def _run(fn, logits, target, dtype):
  """`(value, d value / d logits)` of `fn(logits, target)`."""
  x = torch.tensor(logits, dtype=dtype, requires_grad=True)
  value = fn(x, torch.as_tensor(target))
  value.backward()
  return value.item(), x.grad.numpy().tolist()


def _case(name, peer, settings, fn, logits, target):
  # smp's `_lovasz_grad` casts to float32 and `torch.dot` then refuses
  # float64 errors, so smp runs in float32 on float32-exact inputs.
  dtype = torch.float32 if peer == "smp" else torch.float64
  logits = np.asarray(logits, np.float32).astype(np.float64)
  value, grad = _run(fn, logits, target, dtype)
  return {
    "name": name,
    "peer": peer,
    "settings": settings,
    "dtype": str(dtype).removeprefix("torch."),
    "logits": logits.tolist(),
    "targets": np.asarray(target).tolist(),
    "value": value,
    "grad": grad,
  }


def main():
  for module in (smp, kornia):
    want = VERSIONS[module.__name__]
    if module.__version__ != want:
      sys.exit(f"{module.__name__} {module.__version__}; this needs {want}.")
  rng = np.random.default_rng(22)
  logits = rng.normal(0, 2, (3, 4, 4, 5))
  labels = _labels(rng)
  binary_logits = rng.normal(0, 2, (3, 1, 4, 5))
  binary = (rng.random((3, 4, 5)) < 0.4).astype(np.int64)
  binary[0, 0, :2] = (0, 1)
  binary[1] = 0  # No foreground in image 1.
  multilabel_logits = rng.normal(0, 2, (3, 4, 4, 5))
  multilabel = (rng.random((3, 4, 4, 5)) < 0.3).astype(np.int64)
  multilabel[1, 2] = 0  # No channel-2 foreground in image 1.

  cases = []
  for per_image in (False, True):
    for ignore in (None, IGNORE):
      settings = {"per_image": per_image, "ignore_index": ignore}
      suffix = f"per_image={per_image}_ignore={ignore}"
      target = labels if ignore is None else _ignored(labels)
      loss = smp.losses.LovaszLoss("multiclass", **settings)
      cases.append(
        _case(f"smp_multiclass_{suffix}", "smp", settings, loss, logits, target)
      )
      target = binary if ignore is None else _ignored(binary)
      loss = smp.losses.LovaszLoss("binary", **settings)
      cases.append(
        _case(
          f"smp_binary_{suffix}", "smp", settings, loss, binary_logits, target
        )
      )
    settings = {"per_image": per_image, "ignore_index": None}
    loss = smp.losses.LovaszLoss("multilabel", **settings)
    cases.append(
      _case(
        f"smp_multilabel_per_image={per_image}",
        "smp",
        settings,
        loss,
        multilabel_logits,
        multilabel,
      )
    )
  settings = {"per_image": True, "ignore_index": IGNORE}
  cases.append(
    _case(
      "smp_binary_image_all_ignored",
      "smp",
      settings,
      smp.losses.LovaszLoss("binary", **settings),
      binary_logits,
      _ignored(binary, every_pixel_of_image_2=True),
    )
  )
  cases.append(
    _case(
      "kornia_lovasz_softmax_loss",
      "kornia",
      {},
      kornia.losses.lovasz_softmax_loss,
      logits,
      labels,
    )
  )
  cases.append(
    _case(
      "kornia_lovasz_hinge_loss",
      "kornia",
      {},
      kornia.losses.lovasz_hinge_loss,
      binary_logits,
      binary,
    )
  )
  versions = {
    "torch": torch.__version__,
    "segmentation_models_pytorch": smp.__version__,
    "kornia": kornia.__version__,
  }
  OUT.write_text(
    json.dumps({"versions": versions, "cases": cases}, indent=None) + "\n"
  )
  print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
  main()

"""Writes hausdorff_values.json: MONAI 1.6.1's HausdorffDTLoss,
LogHausdorffDTLoss, SoftclDiceLoss and SoftDiceclDiceLoss run on seeded
float64 inputs with B > 1 and C > 1, their values and input gradients.

tests/hausdorff_test.py and tests/cldice_test.py check pel_jax's losses
against them without importing torch or MONAI. Each case stores the inputs
in pel_jax's layout (channels last; integer `targets` are class ids that
the script one-hot encodes for MONAI), the MONAI class and keywords, the
pel_jax keywords that should match, MONAI's loss and the gradient of the
loss with respect to the input (channels last too).

Run it in a virtual environment outside the repository:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 scipy numpy
  /tmp/peers/bin/python tests/peer_values/make_hausdorff_values.py

It refuses MONAI versions other than 1.6.1 (SoftclDiceLoss changed in 1.6:
before it, one channel gave a zero loss). The inputs come from a seeded
NumPy generator; values may differ from the committed file in the last
bits across torch builds.
"""

from __future__ import annotations

import json
import pathlib
import sys

import monai
from monai import losses
import numpy as np
from scipy import ndimage
import torch

OUT = pathlib.Path(__file__).with_name("hausdorff_values.json")


def _ids(rng, shape, classes):
  """Blob-shaped ids: smoothed noise, arg-max over the classes."""
  noise = rng.random(shape + (classes,))
  sigma = (0,) + (1.5,) * (len(shape) - 1) + (0,)
  return np.argmax(ndimage.gaussian_filter(noise, sigma), -1)


def _cases(rng):
  """(name, MONAI class, MONAI kwargs, pel_jax kwargs, input, targets)."""
  ids_2d = _ids(rng, (2, 7, 6), 3)
  ids_2d[1][ids_2d[1] == 2] = 0  # class 2 absent from sample 1
  ids_3d = _ids(rng, (2, 5, 5, 4), 2)
  soft_3d = np.clip(
    np.eye(2)[ids_3d] + rng.normal(0, 0.2, ids_3d.shape + (2,)), 0, 1
  )
  ids_cl = _ids(rng, (2, 10, 9), 3)
  tube = np.zeros((2, 9, 10), np.int64)
  tube[:, 3:5, 1:9] = 1
  tube[1, 1:8, 6] = 1
  return [
    (
      "hausdorff_2d_softmax_none",
      "HausdorffDTLoss",
      {"softmax": True, "include_background": True, "reduction": "none"},
      {"from_logits": True, "include_background": True, "reduction": "none"},
      rng.normal(0, 2, (2, 7, 6, 3)),
      ids_2d,
    ),
    (
      "hausdorff_2d_sigmoid_nobg_alpha1_mean",
      "HausdorffDTLoss",
      {"sigmoid": True, "alpha": 1.0},
      {
        "from_logits": True,
        "activation": "sigmoid",
        "include_background": False,
        "alpha": 1.0,
      },
      rng.normal(0, 2, (2, 7, 6, 3)),
      ids_2d,
    ),
    (
      "log_hausdorff_2d_softmax_sum",
      "LogHausdorffDTLoss",
      {"softmax": True, "include_background": True, "reduction": "sum"},
      {"from_logits": True, "reduction": "sum", "log": True},
      rng.normal(0, 2, (2, 7, 6, 3)),
      ids_2d,
    ),
    (
      "hausdorff_3d_soft_targets_batch_sum",
      "HausdorffDTLoss",
      {"include_background": True, "batch": True, "reduction": "sum"},
      {"batch": True, "reduction": "sum"},
      rng.random((2, 5, 5, 4, 2)),
      soft_3d,
    ),
    (
      "cldice_2d_softmax_none",
      "SoftclDiceLoss",
      {"softmax": True, "reduction": "none"},
      {"from_logits": True, "reduction": "none"},
      rng.normal(0, 2, (2, 10, 9, 3)),
      ids_cl,
    ),
    (
      "cldice_2d_sigmoid_one_channel_iter5",
      "SoftclDiceLoss",
      {"sigmoid": True, "iter_": 5, "smooth_nr": 1e-5, "smooth_dr": 1e-5},
      {"from_logits": True, "iter_": 5, "smooth_nr": 1e-5, "smooth_dr": 1e-5},
      rng.normal(0, 2, (2, 9, 10, 1)),
      tube,
    ),
    (
      "cldice_3d_nobg_sum",
      "SoftclDiceLoss",
      {"include_background": False, "reduction": "sum", "iter_": 2},
      {"include_background": False, "reduction": "sum", "iter_": 2},
      rng.random((2, 5, 5, 4, 2)),
      ids_3d,
    ),
    (
      "dice_cldice_2d_softmax_mean",
      "SoftDiceclDiceLoss",
      {"softmax": True, "alpha": 0.3},
      {"from_logits": True, "alpha": 0.3},
      rng.normal(0, 2, (2, 10, 9, 3)),
      ids_cl,
    ),
    (
      "dice_cldice_2d_soft_targets_sum",
      "SoftDiceclDiceLoss",
      {"reduction": "sum", "include_background": False, "smooth_nr": 0.0},
      {"reduction": "sum", "include_background": False, "smooth_nr": 0.0},
      rng.random((2, 10, 9, 2)),
      np.clip(
        np.eye(2)[ids_cl.clip(0, 1)] + rng.normal(0, 0.2, (2, 10, 9, 2)), 0, 1
      ),
    ),
  ]


def _digits(x):
  """Ten significant digits: MONAI's float32 distance fields leave about 1e-7
  relative error in its float64 results anyway, and it keeps the file small."""
  return np.vectorize(lambda v: float(f"{v:.10g}"))(x).tolist()


def _channels_first(x):
  return np.moveaxis(x, -1, 1)


def main():
  if monai.__version__ != "1.6.1":
    sys.exit(f"needs MONAI 1.6.1, found {monai.__version__}")
  rng = np.random.default_rng(23)
  out = {"monai": monai.__version__, "torch": torch.__version__, "cases": []}
  for name, cls, kwargs, ours, x, targets in _cases(rng):
    # Inputs rounded before the run, so the stored ones are the ones run.
    x = np.round(np.asarray(x, np.float64), 4)
    if not np.issubdtype(targets.dtype, np.integer):
      targets = np.round(targets, 4)
    if np.issubdtype(targets.dtype, np.integer):
      classes = x.shape[-1]
      one_hot = (
        (targets == 1)[..., None] if classes == 1 else np.eye(classes)[targets]
      )
    else:
      one_hot = targets
    inp = torch.tensor(_channels_first(x), requires_grad=True)
    tgt = torch.tensor(_channels_first(np.asarray(one_hot, np.float64)))
    loss = getattr(losses, cls)(**kwargs)(inp, tgt)
    loss.sum().backward()
    value = loss.detach().numpy()
    if cls.startswith("Hausdorff") or cls.startswith("LogHausdorff"):
      value = value.reshape(value.shape[:2]) if value.ndim else value
    out["cases"].append(
      {
        "name": name,
        "monai_class": cls,
        "monai_kwargs": kwargs,
        "pel_jax_kwargs": ours,
        "input": x.tolist(),
        "targets": targets.tolist(),
        "targets_are_ids": bool(np.issubdtype(targets.dtype, np.integer)),
        "loss": value.tolist(),
        "grad": _digits(np.moveaxis(inp.grad.numpy(), 1, -1)),
      }
    )
  OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
  print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
  main()

"""Writes ce_values.json: torch's weighted cross-entropies and their users.

tests/cross_entropy_test.py checks `pel_jax.cross_entropy` and `pel_loss`'s
``ce_class_weights``/``ce_pos_weight`` against these values and their input
gradients without importing torch, MONAI or smp. Each case stores the
peer's inputs (channels first, as the peer takes them), its settings, its
loss and the gradient of the loss with respect to its first input.

Run it in a virtual environment of its own, outside the repository:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 \\
    segmentation-models-pytorch==0.6.0 numpy
  /tmp/peers/bin/python tests/peer_values/make_ce_values.py

The committed file was written with torch 2.14.1 (CPU), MONAI 1.6.1 and smp
0.6.0; the script refuses other MONAI and smp versions. Inputs come from a
seeded NumPy generator, rounded to float32; every peer runs in float64.
"""

from __future__ import annotations

import pathlib

import _peer_run  # beside this script
import monai
from monai.losses import DiceCELoss
import numpy as np
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.losses import SoftBCEWithLogitsLoss
from segmentation_models_pytorch.losses import SoftCrossEntropyLoss
import torch

VERSIONS = {"monai": "1.6.1", "segmentation_models_pytorch": "0.6.0"}
OUT = pathlib.Path(__file__).with_name("ce_values.json")


def _cases():
  rng = np.random.default_rng(2222)
  cases = []
  # Softmax CE: logits [B=2, C=3, 4, 5], ids with some 255 (ignored).
  logits = rng.normal(0, 2, (2, 3, 4, 5))
  ids = rng.integers(0, 3, (2, 4, 5))
  ignored = np.where(rng.random(ids.shape) < 0.2, 255, ids)
  weight = [0.2, 1.0, 3.0]
  for name, kw in (
    ("ce_weight", {"weight": weight}),
    ("ce_weight_ignore", {"weight": weight, "ignore_index": 255}),
    (
      "ce_weight_ignore_smooth",
      {"weight": weight, "ignore_index": 255, "label_smoothing": 0.1},
    ),
    ("ce_weight_sum", {"weight": weight, "reduction": "sum"}),
  ):
    t = ignored if "ignore_index" in kw else ids
    loss = torch.nn.CrossEntropyLoss(
      **{
        **kw,
        "weight": torch.tensor(weight, dtype=torch.float64),
      }
    )
    cases.append(_peer_run.case(name, "torch", kw, loss, logits, t))
  # Sigmoid BCE, multi-label [B=2, C=3, 4, 5], pos_weight and weight per class.
  multi = (rng.random(logits.shape) < 0.4).astype(np.float64)
  pos = [0.5, 2.0, 1.0]
  for name, kw in (
    ("bce_pos_weight", {"pos_weight": pos}),
    ("bce_pos_weight_weight", {"pos_weight": pos, "weight": weight}),
  ):
    tkw = {
      k: torch.tensor(v, dtype=torch.float64)[:, None, None]
      for k, v in kw.items()
    }
    loss = torch.nn.BCEWithLogitsLoss(**tkw)
    cases.append(_peer_run.case(name, "torch", kw, loss, logits, multi))
  # MONAI DiceCELoss: softmax, ids [B, 1, 4, 5], weight and smoothing.
  kw = {
    "softmax": True,
    "to_onehot_y": True,
    "include_background": False,
    "weight": weight,
    "label_smoothing": 0.1,
    "lambda_ce": 0.7,
  }
  loss = DiceCELoss(
    **{**kw, "weight": torch.tensor(weight, dtype=torch.float64)}
  )
  cases.append(
    _peer_run.case(
      "monai_dice_ce_weight", "monai", kw, loss, logits, ids[:, None]
    )
  )
  # One channel, sigmoid: the weight is the BCE's pos_weight.
  kw = {"sigmoid": True, "weight": [2.5]}
  loss = DiceCELoss(
    sigmoid=True, weight=torch.tensor([2.5], dtype=torch.float64)
  )
  binary = (ids == 1).astype(np.float64)[:, None]
  cases.append(
    _peer_run.case(
      "monai_dice_ce_pos_weight", "monai", kw, loss, logits[:, :1], binary
    )
  )
  # smp's label-smoothed CE and BCE with ignore_index (-100, their default).
  smp_ids = np.where(ignored == 255, -100, ignored)
  kw = {"smooth_factor": 0.1, "ignore_index": -100}
  cases.append(
    _peer_run.case(
      "smp_soft_ce", "smp", kw, SoftCrossEntropyLoss(**kw), logits, smp_ids
    )
  )
  smp_binary = np.where(smp_ids == -100, -100, (smp_ids == 1).astype(int))
  cases.append(
    _peer_run.case(
      "smp_soft_bce",
      "smp",
      kw,
      SoftBCEWithLogitsLoss(**kw),
      logits[:, 0],
      smp_binary.astype(np.float64),  # Float: smp smooths in its dtype.
    )
  )
  return cases


def main():
  _peer_run.write(OUT, VERSIONS, (monai, smp), _cases())


if __name__ == "__main__":
  main()

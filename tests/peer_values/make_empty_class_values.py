"""Writes empty_class_values.json: smp's absent-class rule, MONAI's masking.

tests/compat_test.py (`EmptyClassRulesTest`) checks pel_jax's mapping of
smp 0.6.0's `DiceLoss`/`JaccardLoss` (a class with no target pixel in the
batch has loss 0, the mean still divides by every class; ``class_weights``:
Σ w·L / Σ w) and of MONAI 1.6.1's `MaskedDiceLoss` (the activation first,
then the probabilities and the targets times the mask; with
``to_onehot_y`` a masked pixel becomes background) against these values
and their input gradients, without importing torch, MONAI or smp.

Run it in a virtual environment of its own, outside the repository:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 \\
    segmentation-models-pytorch==0.6.0 numpy
  /tmp/peers/bin/python tests/peer_values/make_empty_class_values.py

The committed file was written with torch 2.14.1 (CPU), MONAI 1.6.1 and smp
0.6.0; the script refuses other MONAI and smp versions. Inputs come from a
seeded NumPy generator, rounded to float32; every peer runs in float64.
"""

from __future__ import annotations

import pathlib

import _peer_run  # beside this script
import monai
from monai.losses import MaskedDiceLoss
import numpy as np
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.losses import DiceLoss
from segmentation_models_pytorch.losses import JaccardLoss

VERSIONS = {"monai": "1.6.1", "segmentation_models_pytorch": "0.6.0"}
OUT = pathlib.Path(__file__).with_name("empty_class_values.json")


def _cases():
  rng = np.random.default_rng(2223)
  cases = []
  # smp multiclass: logits [B=2, C=4, 4, 5], class 3 absent from the batch.
  logits = rng.normal(0, 2, (2, 4, 4, 5))
  ids = rng.integers(0, 3, (2, 4, 5))
  for name, loss, kw in (
    ("smp_dice_absent", DiceLoss, {}),
    ("smp_dice_absent_smooth_log", DiceLoss, {"smooth": 1.0, "log_loss": True}),
    (
      "smp_dice_absent_weights",
      DiceLoss,
      {"class_weights": [0.5, 2.0, 1.0, 4.0]},
    ),
    ("smp_jaccard_absent", JaccardLoss, {}),
  ):
    fn = loss("multiclass", **kw)
    cases.append(_peer_run.case(name, "smp", kw, fn, logits, ids))
  # smp multilabel: channel 1 empty.
  multi = (rng.random((2, 3, 4, 5)) < 0.4).astype(np.float64)
  multi[:, 1] = 0
  kw = {"class_weights": [1.0, 3.0, 0.5]}
  cases.append(
    _peer_run.case(
      "smp_dice_multilabel_absent",
      "smp",
      kw,
      DiceLoss("multilabel", **kw),
      logits[:, :3],
      multi,
    )
  )
  # MONAI 1.6.1 MaskedDiceLoss: float targets, and ids with to_onehot_y.
  mask = (rng.random((2, 1, 4, 5)) < 0.7).astype(np.float64)
  onehot = np.moveaxis(np.eye(3)[ids], -1, 1)
  kw = {"sigmoid": True, "smooth_nr": 1e-4, "smooth_dr": 1e-4}
  cases.append(
    _peer_run.case(
      "monai_masked_sigmoid",
      "monai",
      kw,
      MaskedDiceLoss(**kw),
      logits[:, :3],
      onehot,
      mask,
    )
  )
  for name, bg in (
    ("monai_masked_onehot", True),
    ("monai_masked_onehot_nobg", False),
  ):
    kw = {"softmax": True, "to_onehot_y": True, "include_background": bg}
    cases.append(
      _peer_run.case(
        name,
        "monai",
        kw,
        MaskedDiceLoss(**kw),
        logits[:, :3],
        ids[:, None].astype(np.float64),
        mask,
      )
    )
  return cases


def main():
  _peer_run.write(OUT, VERSIONS, (monai, smp), _cases())


if __name__ == "__main__":
  main()

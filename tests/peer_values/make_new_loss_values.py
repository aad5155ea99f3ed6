"""Writes new_loss_values.json: MONAI's GWDL, unified focal; smp's MCC, focal.

tests/new_losses_test.py checks `generalized_wasserstein_dice_loss`,
`unified_focal_loss`, `mcc_loss` and `focal_cross_entropy` against these values and their input
gradients without importing torch, MONAI or smp. Each case stores the
peer's inputs (channels first, as the peer takes them), its settings, its
loss and the gradient of the loss with respect to its first input.

Run it in a virtual environment of its own, outside the repository:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 \
    segmentation-models-pytorch==0.6.0 numpy
  /tmp/peers/bin/python tests/peer_values/make_new_loss_values.py

The committed file was written with torch 2.14 (CPU), MONAI 1.6.1 and smp
0.6.0; the script refuses other MONAI and smp versions. Inputs come from a
seeded NumPy generator, rounded to float32; every peer runs in float64.
"""

from __future__ import annotations

import pathlib

import _peer_run  # beside this script
import monai
from monai.losses import AsymmetricUnifiedFocalLoss
from monai.losses import GeneralizedWassersteinDiceLoss
import numpy as np
import segmentation_models_pytorch as smp
from segmentation_models_pytorch.losses import FocalLoss
from segmentation_models_pytorch.losses import MCCLoss
import torch

VERSIONS = {"monai": "1.6.1", "segmentation_models_pytorch": "0.6.0"}
OUT = pathlib.Path(__file__).with_name("new_loss_values.json")
DIST = [
  [0.0, 1.0, 1.0, 1.0],
  [1.0, 0.0, 0.6, 0.3],
  [1.0, 0.6, 0.0, 0.5],
  [1.0, 0.3, 0.5, 0.0],
]


def _cases():
  rng = np.random.default_rng(22)
  cases = []
  # GWDL: logits [B=3, C=4, 5, 6], ids [B, 5, 6] with one class absent in
  # sample 1 (the batch > 1 semantics: one loss per sample, then mean).
  logits = rng.normal(0, 2, (3, 4, 5, 6))
  ids = rng.integers(0, 4, (3, 5, 6))
  ids[1] = np.where(ids[1] == 2, 0, ids[1])
  for mode in ("default", "GDL"):
    for reduction in ("mean", "none"):
      loss = GeneralizedWassersteinDiceLoss(
        np.asarray(DIST), weighting_mode=mode, reduction=reduction
      )
      fn = (lambda f: lambda x, t: f(x, t).sum())(loss)
      cases.append(
        _peer_run.case(
          f"gwdl_{mode}_{reduction}",
          "monai",
          {
            "weighting_mode": mode,
            "reduction": reduction,
            "dist_matrix": DIST,
            "per_sample": loss(
              torch.tensor(np.asarray(logits, np.float32), dtype=torch.float64),
              torch.as_tensor(ids),
            )
            .detach()
            .numpy()
            .tolist(),
          },
          fn,
          logits,
          ids,
        )
      )
  # Unified focal: MONAI's is binary. Probabilities [B=2, 2, 4, 5] (softmax
  # of seeded logits) with one-hot targets; and one channel [B, 1, 4, 5].
  x = rng.normal(0, 1.5, (2, 2, 4, 5))
  probs = np.exp(x) / np.exp(x).sum(1, keepdims=True)
  ids = rng.integers(0, 2, (2, 4, 5))
  onehot = np.moveaxis(np.eye(2)[ids], -1, 1)
  for weight, gamma, delta in ((0.5, 0.5, 0.7), (0.3, 0.2, 0.6)):
    loss = AsymmetricUnifiedFocalLoss(weight=weight, gamma=gamma, delta=delta)
    settings = {"weight": weight, "gamma": gamma, "delta": delta}
    cases.append(
      _peer_run.case(
        f"aufl_2ch_w{weight}_g{gamma}_d{delta}",
        "monai",
        settings,
        loss,
        probs,
        onehot,
      )
    )
  loss = AsymmetricUnifiedFocalLoss()
  cases.append(
    _peer_run.case(
      "aufl_1ch_default",
      "monai",
      {"weight": 0.5, "gamma": 0.5, "delta": 0.7},
      loss,
      probs[:, 1:],
      ids[:, None].astype(np.float64),
    )
  )
  # smp MCC: soft probabilities [B=3, 1, 4, 5], binary targets.
  p = 1 / (1 + np.exp(-rng.normal(0, 1.5, (3, 1, 4, 5))))
  g = rng.integers(0, 2, (3, 1, 4, 5)).astype(np.float64)
  for eps in (1e-5, 0.1):
    cases.append(
      _peer_run.case(
        f"mcc_eps{eps}", "smp", {"eps": eps}, MCCLoss(eps=eps), p, g
      )
    )
  cases.extend(_focal_cases(rng))
  return cases


def _focal_cases(rng):
  """smp `FocalLoss` in its three modes on logits `[B=2, C, 4, 5]`."""
  cases = []
  ids = rng.integers(0, 3, (2, 4, 5))
  ignored = np.where(rng.random(ids.shape) < 0.2, 255, ids)
  logits = rng.normal(0, 2, (2, 3, 4, 5))
  binary = np.where(ignored == 2, 0, ignored)
  for name, mode, x, t, options in (
    (
      "binary",
      "binary",
      logits[:, :1],
      binary,
      {"alpha": 0.25, "gamma": 2.0, "ignore_index": 255},
    ),
    (
      "binary_float",
      "binary",
      logits[:, :1],
      (ids[:, None] == 1).astype(np.float64),
      {"gamma": 1.5},
    ),
    (
      "multiclass",
      "multiclass",
      logits,
      ignored,
      {"gamma": 2.0, "ignore_index": 255},
    ),
    (
      "multiclass_normalized",
      "multiclass",
      logits,
      ids,
      {"alpha": 0.6, "gamma": 2.0, "normalized": True},
    ),
    (
      "multiclass_reduced",
      "multiclass",
      logits,
      ids,
      {"gamma": 2.0, "reduced_threshold": 0.5},
    ),
    (
      "multiclass_weights",
      "multiclass",
      logits,
      ignored,
      {"gamma": 2.0, "ignore_index": 255, "class_weights": [1.0, 2.0, 0.5]},
    ),
    (
      "multilabel",
      "multilabel",
      logits,
      (rng.random(logits.shape) < 0.4).astype(np.float64),
      {"alpha": 0.3, "gamma": 0.5},
    ),
  ):
    loss = FocalLoss(mode, **options)
    cases.append(
      _peer_run.case(
        f"focal_{name}", "smp", {"mode": mode, **options}, loss, x, t
      )
    )
  return cases


def main():
  _peer_run.write(OUT, VERSIONS, (monai, smp), _cases())


if __name__ == "__main__":
  main()

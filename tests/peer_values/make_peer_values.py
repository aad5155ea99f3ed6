"""Writes peer_values.json: MONAI and kornia run on small inputs, float64.

The compat tests (tests/compat_test.py, `PeerRunTest`) check pel_jax's
README mappings against these values and input gradients without importing
torch, MONAI or kornia. Each case stores the peer's inputs (channels first,
as the peer takes them), its keywords, its loss and the gradient of the
loss with respect to its first input.

Run it in a virtual environment of its own, outside the repository, with
the peer versions the README table names:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 kornia==0.9.0 numpy
  /tmp/peers/bin/python tests/peer_values/make_peer_values.py

It refuses other versions of MONAI and kornia (their conventions are what
the table maps). The inputs are drawn from a seeded NumPy generator, so a
rerun writes the same inputs; the values may differ from a committed file
in the last bits across torch builds.
"""

from __future__ import annotations

import json
import pathlib
import sys

import kornia
import monai
from monai.losses import DiceCELoss
import numpy as np
import torch

VERSIONS = {"monai": "1.6.1", "kornia": "0.9.0"}
OUT = pathlib.Path(__file__).with_name("peer_values.json")


def _labels(rng):
  """`[3, 4, 5]` ids of 4 classes: all present; class 2 absent; only 0."""
  labels = rng.integers(0, 4, (3, 4, 5))
  labels[0, 0, :4] = np.arange(4)  # Every class in sample 0.
  labels[1] = np.where(labels[1] == 2, 3, labels[1])  # No class 2.
  labels[1, 0, :3] = (0, 1, 3)
  labels[2] = 0  # Background only: no non-background class.
  return labels


def _ignored(labels):
  """Some pixels of sample 1 and every pixel of sample 2 set to 255."""
  labels = labels.copy()
  labels[1, 3] = 255
  labels[2] = 255
  return labels


def _run(fn, logits, target):
  """`(value, d value / d logits)` of `fn(logits, target)`, float64."""
  x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
  value = fn(x, torch.as_tensor(target))
  value.backward()
  return float(value.detach()), x.grad.numpy()


def _case(peer, kwargs, logits, target, fn):
  value, grad = _run(fn, logits, target)
  return dict(
    peer=peer,
    kwargs=kwargs,
    logits=logits.tolist(),
    target=target.tolist(),
    value=value,
    grad=grad.tolist(),
  )


def kornia_cases(rng):
  logits = 2.0 * rng.standard_normal((3, 4, 4, 5))
  labels = _labels(rng)
  ignored = _ignored(labels)
  cases = {}
  for name, loss, kw, target in (
    ("dice_macro", "dice_loss", dict(average="macro", eps=1e-3), labels),
    ("dice_micro", "dice_loss", dict(average="micro", eps=1e-3), labels),
    (
      "dice_macro_ignore",
      "dice_loss",
      dict(average="macro", eps=1e-3, ignore_index=255),
      ignored,
    ),
    ("tversky", "tversky_loss", dict(alpha=0.3, beta=0.7, eps=1e-3), labels),
    (
      "tversky_ignore",
      "tversky_loss",
      dict(alpha=0.3, beta=0.7, eps=1e-3, ignore_index=255),
      ignored,
    ),
  ):
    fn = getattr(kornia.losses, loss)
    cases[f"kornia_{name}"] = _case(
      f"kornia.losses.{loss}",
      kw,
      logits,
      target,
      lambda x, t, fn=fn, kw=kw: fn(x, t, **kw),
    )
  return cases


def monai_cases(rng):
  binary_logits = 2.0 * rng.standard_normal((2, 1, 4, 4))
  binary = (rng.uniform(size=(2, 1, 4, 4)) < 0.4).astype(np.float64)
  logits = 2.0 * rng.standard_normal((2, 3, 4, 4))
  ids = rng.integers(0, 3, (2, 1, 4, 4))
  ids[1] = np.where(ids[1] == 2, 1, ids[1])  # Class 2 absent in sample 1.
  cases = {}
  for name, kw, x, y in (
    (
      "sigmoid_binary_smoothing",
      dict(sigmoid=True, label_smoothing=0.1, lambda_ce=0.5),
      binary_logits,
      binary,
    ),
    (
      "softmax_smoothing",
      dict(softmax=True, to_onehot_y=True, label_smoothing=0.1),
      logits,
      ids,
    ),
    (
      "sigmoid_multiclass_smoothing",
      dict(sigmoid=True, to_onehot_y=True, label_smoothing=0.1),
      logits,
      ids,
    ),
  ):
    loss = DiceCELoss(**kw)
    # MONAI's CE takes float one-hot or int64 ids; ids come as float64 here.
    cases[f"monai_DiceCELoss_{name}"] = _case(
      "monai.losses.DiceCELoss",
      kw,
      x,
      y,
      lambda x, t, loss=loss: loss(x, t.to(torch.float64)),
    )
  return cases


def main():
  got = {"monai": monai.__version__, "kornia": kornia.__version__}
  if got != VERSIONS:
    sys.exit(f"needs {VERSIONS}, found {got}")
  torch.set_default_dtype(torch.float64)
  rng = np.random.default_rng(20)
  cases = {**kornia_cases(rng), **monai_cases(rng)}
  versions = dict(got, torch=torch.__version__.split("+")[0])
  OUT.write_text(
    json.dumps(dict(versions=versions, cases=cases), indent=1) + "\n"
  )
  print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
  main()

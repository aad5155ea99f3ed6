"""Writes metric_values.json: MONAI's and torchmetrics' metrics on small inputs.

tests/metrics_test.py (`PeerRunTest`) checks `confusion_stats` and
`segmentation_metrics` against these values without importing torch, MONAI
or torchmetrics. Each case stores its inputs (channels last, as pel_jax
takes them: logits `[B, H, W, C]` rounded to 3 decimals, so argmax and
threshold see the same numbers here and there; integer target ids
`[B, H, W]` or multi-hot labels `[B, H, W, C]`), the peer call and the
value it returned; and the inputs of torchmetrics' docstring examples
(drawn with torch's generator), whose published values the tests hold.

Run it in a virtual environment of its own, outside the repository, with
the peer versions below:

  python3 -m venv /tmp/peers
  /tmp/peers/bin/pip install torch monai==1.6.1 torchmetrics==1.9.0 numpy
  /tmp/peers/bin/python tests/peer_values/make_metric_values.py

It refuses other versions of MONAI and torchmetrics (their absent-class
conventions are what the docstrings map). The inputs come from a seeded
NumPy generator, so a rerun writes the same file.
"""

from __future__ import annotations

import json
import pathlib
import sys

import monai
from monai.metrics import DiceMetric
from monai.metrics import MeanIoU
import numpy as np
import torch
import torchmetrics
from torchmetrics.functional import classification as tmc
from torchmetrics.functional.segmentation import dice_score
from torchmetrics.functional.segmentation import mean_iou

VERSIONS = {"monai": "1.6.1", "torchmetrics": "1.9.0"}
OUT = pathlib.Path(__file__).with_name("metric_values.json")
C = 4


def _multiclass(rng):
  """Logits `[3, 4, 5, 4]` and ids with absent classes.

  Sample 0 has every class in its target; sample 1 lacks class 2 in its
  target; sample 2's target is class 0 only and class 3 is never predicted
  there (absent from both).
  """
  logits = np.round(rng.normal(size=(3, 4, 5, C)), 3)
  ids = rng.integers(0, C, (3, 4, 5))
  ids[0, 0, :C] = np.arange(C)
  ids[1][ids[1] == 2] = 1
  ids[2] = 0
  logits[2, ..., 3] -= 10.0
  return logits, ids


def _multilabel(rng):
  """Logits and multi-hot labels `[2, 4, 5, 3]`; label 2 empty in sample 1."""
  logits = np.round(rng.normal(size=(2, 4, 5, 3)), 3)
  labels = (rng.random((2, 4, 5, 3)) < 0.4).astype(np.int64)
  labels[1, ..., 2] = 0
  logits[1, ..., 2] -= 10.0
  return logits, labels


def _chw(x):
  return torch.from_numpy(np.moveaxis(x, -1, 1).copy())


def _onehot(ids):
  return torch.nn.functional.one_hot(torch.from_numpy(ids), C).permute(
    0, 3, 1, 2
  )


def _list(t):
  return torch.as_tensor(t, dtype=torch.float64).tolist()


def _monai_cases(logits, ids):
  pred = _onehot(logits.argmax(-1)).double()
  target = _onehot(ids).double()
  cases = []
  for peer in (DiceMetric, MeanIoU):
    for ignore_empty in (True, False):
      for include_background in (True, False):
        kw = dict(
          ignore_empty=ignore_empty, include_background=include_background
        )
        metric = peer(reduction="none", **kw)
        metric(y_pred=pred, y=target)
        none = metric.aggregate()
        mean = peer(reduction="mean", **kw)
        mean(y_pred=pred, y=target)
        cases.append(
          dict(
            peer=f"monai.metrics.{peer.__name__}",
            kwargs=kw,
            none=_list(none),
            mean=_list(mean.aggregate()),
          )
        )
  return cases


def _torchmetrics_segmentation(logits, ids):
  pred = torch.from_numpy(logits.argmax(-1))
  target = torch.from_numpy(ids)
  cases = []
  for average in ("macro", "micro", "none"):
    for level in ("samplewise", "global"):
      kw = dict(
        num_classes=C,
        average=average,
        input_format="index",
        aggregation_level=level,
      )
      cases.append(
        dict(
          peer="torchmetrics.functional.segmentation.dice_score",
          kwargs=kw,
          value=_list(dice_score(pred, target, **kw)),
        )
      )
  for per_class in (False, True):
    kw = dict(num_classes=C, per_class=per_class, input_format="index")
    cases.append(
      dict(
        peer="torchmetrics.functional.segmentation.mean_iou",
        kwargs=kw,
        value=_list(mean_iou(pred, target, **kw)),
      )
    )
  return cases


_CLASSIFICATION = {
  "dice": tmc.multiclass_f1_score,
  "iou": tmc.multiclass_jaccard_index,
  "precision": tmc.multiclass_precision,
  "recall": tmc.multiclass_recall,
}
_MULTILABEL = {
  "dice": tmc.multilabel_f1_score,
  "iou": tmc.multilabel_jaccard_index,
  "precision": tmc.multilabel_precision,
  "recall": tmc.multilabel_recall,
}


def _torchmetrics_classification(logits, ids, ignore_index=None):
  pred = torch.from_numpy(logits.argmax(-1))
  target = torch.from_numpy(ids)
  cases = []
  for zero_division in (0.0, 1.0):
    for average in ("macro", "micro", "none"):
      for multidim in ("global", "samplewise"):
        kw = dict(
          num_classes=C,
          average=average,
          multidim_average=multidim,
          ignore_index=ignore_index,
          zero_division=zero_division,
        )
        values = {}
        for name, fn in _CLASSIFICATION.items():
          call = dict(kw)
          if name == "iou":
            # JaccardIndex has no multidim_average: global only.
            if multidim != "global":
              continue
            del call["multidim_average"]
          values[name] = _list(fn(pred, target, **call))
        cases.append(
          dict(
            peer="torchmetrics.functional.classification", kwargs=kw, **values
          )
        )
  return cases


def _torchmetrics_multilabel(logits, labels):
  probs = torch.sigmoid(_chw(logits))
  target = _chw(labels)
  cases = []
  for zero_division in (0.0, 1.0):
    for average in ("macro", "micro", "none"):
      kw = dict(
        num_labels=labels.shape[-1],
        threshold=0.5,
        average=average,
        zero_division=zero_division,
      )
      values = {
        name: _list(fn(probs, target, **kw)) for name, fn in _MULTILABEL.items()
      }
      cases.append(
        dict(peer="torchmetrics.functional.classification", kwargs=kw, **values)
      )
  return cases


def _docstring_inputs():
  """The index inputs of torchmetrics 1.9.0's docstring examples (torch RNG).

  The tests compare with the values those docstrings publish; they only
  need the inputs, which NumPy cannot draw.
  """
  g = lambda seed: torch.Generator().manual_seed(seed)
  iou_preds = torch.randint(0, 2, (4, 16, 16), generator=g(42))
  iou_target = torch.randint(0, 2, (4, 16, 16), generator=g(43))
  torch.manual_seed(42)
  dice_preds = torch.randint(0, 5, (4, 16, 16))
  dice_target = torch.randint(0, 5, (4, 16, 16))
  return {
    "mean_iou": {"preds": iou_preds.tolist(), "target": iou_target.tolist()},
    "dice_score": {
      "preds": dice_preds.tolist(),
      "target": dice_target.tolist(),
    },
  }


def main():
  for module in (monai, torchmetrics):
    want = VERSIONS[module.__name__]
    if module.__version__ != want:
      sys.exit(f"{module.__name__} {module.__version__} != {want}")
  rng = np.random.default_rng(22)
  logits, ids = _multiclass(rng)
  ignored = ids.copy()
  ignored[:, 1, 1:3] = 255
  ml_logits, labels = _multilabel(rng)
  data = {
    "versions": {
      **VERSIONS,
      "torch": torch.__version__.split("+")[0],
    },
    "multiclass": {"logits": logits.tolist(), "ids": ids.tolist()},
    "ignored_ids": ignored.tolist(),
    "multilabel": {"logits": ml_logits.tolist(), "labels": labels.tolist()},
    "monai": _monai_cases(logits, ids),
    "torchmetrics_segmentation": _torchmetrics_segmentation(logits, ids),
    "torchmetrics_classification": _torchmetrics_classification(logits, ids),
    "torchmetrics_ignore_index": _torchmetrics_classification(
      logits, ignored, ignore_index=255
    ),
    "torchmetrics_multilabel": _torchmetrics_multilabel(ml_logits, labels),
    "torchmetrics_docstring_inputs": _docstring_inputs(),
  }
  OUT.write_text(json.dumps(data, indent=None) + "\n")
  print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
  main()

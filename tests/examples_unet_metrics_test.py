"""The example's `summarize`: per-class IoU and Dice now come from
`pel_jax.segmentation_metrics`; its numbers must be bitwise those of its
former NumPy definitions (a class in neither prediction nor target scores 1).
"""

import numpy as np

from examples.unet import metrics


def _former_iou_dice(cm):
  """The example's definitions before pel_jax computed them, float64."""
  tp = np.diag(cm).astype(np.float64)
  fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 1.0)
    dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0)
  return iou, dice


def test_summarize_keeps_its_numbers():
  rng = np.random.default_rng(0)
  # 5 classes over 3 batches of 4 x 64 x 64 images: class 3 appears in
  # neither prediction nor target, class 4 only in the prediction.
  cm = np.zeros((5, 5), np.int64)
  for _ in range(3):
    target = rng.choice([0, 1, 2], (4, 64, 64))
    pred = np.where(rng.random(target.shape) < 0.7, target, 4)
    pred[rng.random(pred.shape) < 0.1] = 1
    cm += metrics.confusion_matrix(pred, target, 5)
  bcounts = np.ones((5, 4), np.int64)
  s = metrics.summarize(cm, bcounts)
  iou, dice = _former_iou_dice(cm)
  got_iou = [s["per_class"][str(c)]["iou"] for c in range(5)]
  got_dice = [s["per_class"][str(c)]["dice"] for c in range(5)]
  np.testing.assert_array_equal(got_iou, iou)
  np.testing.assert_array_equal(got_dice, dice)
  assert iou[3] == dice[3] == 1.0 and iou[4] == dice[4] == 0.0
  assert s["val_iou"] == float(iou[1:].mean())
  assert s["val_dice"] == float(dice[1:].mean())
  assert s["val_iou_all"] == float(iou.mean())

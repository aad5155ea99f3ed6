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


def test_surface_report_hand_case():
  """HD95 and surface Dice at 0.5 px of two 6 x 6 images, 3 classes.

  Image A, class 1: target rows 1-2, pred rows 1-3 of cols 1-2; every
  pixel of both blocks is surface. Distances pred -> target: four 0, two 1
  (row 3), so the 95th percentile (linear) is 1; target -> pred: all 0.
  HD95 = 1; within 0.5 px: 4 + 4 of 6 + 4 surface pixels, 0.8. Class 2 is
  one target pixel and no prediction: HD95 = the diagonal, hypot(5, 5),
  surface Dice 0. Image B: class 1 predicted exactly (HD95 0, surface Dice
  1); class 2 in neither map: left out of class 2's mean.
  """
  target_a = np.zeros((6, 6), np.int64)
  target_a[1:3, 1:3], target_a[5, 5] = 1, 2
  pred_a = np.zeros((6, 6), np.int64)
  pred_a[1:4, 1:3] = 1
  b = np.zeros((6, 6), np.int64)
  b[2:5, 2:5] = 1
  values = [
    metrics.surface_values(pred_a, target_a, 3, 0.5),
    metrics.surface_values(b, b, 3, 0.5),
  ]
  np.testing.assert_allclose(values[0][1:], [[1, 0.8], [np.hypot(5, 5), 0]])
  np.testing.assert_allclose(values[1][1:], [[0, 1], [np.nan, np.nan]])
  s = metrics.surface_summary(values)
  c1, c2 = s["per_class"]["1"], s["per_class"]["2"]
  np.testing.assert_allclose([c1["hd95"], c1["nsd"]], [0.5, 0.9])
  np.testing.assert_allclose([c2["hd95"], c2["nsd"]], [np.hypot(5, 5), 0])
  assert (c1["surface_images"], c2["surface_images"]) == (2, 1)
  assert s["per_class"]["0"]["surface_images"] == 2
  np.testing.assert_allclose(s["val_hd95"], (0.5 + np.hypot(5, 5)) / 2)
  np.testing.assert_allclose(s["val_nsd"], 0.45)
  # A class in no image at all: None, not NaN, in metrics.json.
  empty = metrics.surface_summary([metrics.surface_values(b, b, 3, 2.0)])
  assert empty["per_class"]["2"] == {
    "hd95": None,
    "nsd": None,
    "surface_images": 0,
  }
  assert empty["val_hd95"] == 0 and empty["val_nsd"] == 1
  assert (
    "surface Dice 0 and HD95 = the image diagonal" in s["surface_definition"]
  )

"""Object metrics: hand-computed detection F1 and AJI on tiny label images."""

import numpy as np
import pytest

from examples.unet import object_metrics as om


def _img(rows):
  return np.array([[int(c) for c in r] for r in rows], np.int32)


def test_label_uses_8_connectivity():
  m = _img(["1100", "0010", "0000", "1001"])
  lab = om.label(m)
  # the diagonal touch joins the first three pixels; two isolated corners
  assert lab.max() == 3
  assert lab[0, 0] == lab[0, 1] == lab[1, 2]
  assert len({lab[3, 0], lab[3, 3], lab[0, 0]}) == 3


def test_components_splits_ids_and_renumbers():
  ids = _img(["2200", "0000", "0022", "5000"])
  out = om.components(ids)
  # id 2 has two separate pieces -> 1 and 2; id 5 -> 3
  np.testing.assert_array_equal(out, _img(["1100", "0000", "0022", "3000"]))


def test_counts_hand_computed():
  # truth: A (4 px, top-left 2x2), B (2 px), C (1 px)
  true = _img(["1100", "1100", "0000", "2203"])
  # pred: P1 = A plus one pixel (IoU 4/5), P2 covers one pixel of B (IoU 1/2),
  # P3 a false positive far away; C is missed.
  pred = _img(["1110", "1100", "0004", "2000"])
  c = om.counts(true, pred)
  # matches: A-P1 (0.8 >= 0.5), B-P2 (0.5 >= 0.5) -> TP 2; FP P4; FN C
  assert (c["tp"], c["fp"], c["fn"]) == (2, 1, 1)
  # AJI: A-P1: C 4, U 5; B-P2: C 1, U 2; C: U += 1; unused P4: U += 1
  assert (c["aji_c"], c["aji_u"]) == (5, 9)
  s = om.summarize(c)
  assert s["object_f1"] == pytest.approx(4 / 6)
  assert s["aji"] == pytest.approx(5 / 9)
  assert s["object_precision"] == pytest.approx(2 / 3)
  assert s["object_recall"] == pytest.approx(2 / 3)


def test_aji_prediction_picked_by_two_true_objects():
  # One prediction merges two true nuclei: each true object picks it, its
  # area enters U once per pick (Kumar et al.'s definition).
  true = _img(["1122"])
  pred = _img(["1111"])
  c = om.counts(true, pred)
  # IoU of each pair = 2/4 = 0.5: one match only (one-to-one)
  assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 1)
  # C = 2 + 2; U = 4 + 4
  assert (c["aji_c"], c["aji_u"]) == (4, 8)


def test_below_half_iou_is_not_a_detection():
  true = _img(["1110"])  # 3 px
  pred = _img(["0111"])  # IoU 2/4 = 0.5 -> match
  assert om.counts(true, pred)["tp"] == 1
  pred = _img(["0011"])  # IoU 1/4 -> no match
  c = om.counts(true, pred)
  assert (c["tp"], c["fp"], c["fn"]) == (0, 1, 1)
  assert (c["aji_c"], c["aji_u"]) == (1, 4)


def test_image_counts_labels_the_predicted_mask():
  true = _img(["1100", "0000", "0022"])
  pred_mask = _img(
    ["1100", "0000", "0011"]
  )  # class ids, not instances: two components
  c = om.image_counts(true, pred_mask)
  assert (c["tp"], c["fp"], c["fn"], c["aji_c"], c["aji_u"]) == (2, 0, 0, 4, 4)


def test_empty_cases_and_pooling():
  z = np.zeros((3, 3), np.int32)
  c = om.counts(z, z)
  assert om.summarize(c)["object_f1"] == 1.0 and om.summarize(c)["aji"] == 1.0
  miss = om.counts(_img(["100"]), _img(["000"]))
  assert om.summarize(miss)["object_f1"] == 0.0
  assert om.summarize(miss)["aji"] == 0.0
  total = om.add(om.add(None, c), miss)
  assert total == {"tp": 0, "fp": 0, "fn": 1, "aji_c": 0, "aji_u": 1}


def test_shape_mismatch_is_a_clear_error():
  with pytest.raises(ValueError, match="true_instances"):
    om.counts(np.zeros((2, 2)), np.zeros((2, 3)))


def test_folder_instances_reach_the_evaluation(tmp_path):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel

  from examples.unet import data  # pylint: disable=import-outside-toplevel
  from examples.unet import inference  # pylint: disable=import-outside-toplevel
  from examples.unet import models  # pylint: disable=import-outside-toplevel

  root = tmp_path / "set"
  for sub in ("images", "masks", "instances"):
    (root / sub).mkdir(parents=True)
  rng = np.random.default_rng(0)
  inst = np.zeros((16, 16), np.uint16)
  inst[2:6, 2:6], inst[9:14, 8:12] = 1, 2
  for k in range(2):
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
      root / "images" / f"a{k}.png"
    )
    Image.fromarray((inst > 0).astype(np.uint8)).save(
      root / "masks" / f"a{k}.png"
    )
    Image.fromarray(inst).save(root / "instances" / f"a{k}.png")
  ds = data.load_folder(root, 2)
  np.testing.assert_array_equal(ds.instances[1], inst)
  assert ds.subset([1]).instances[0] is ds.instances[1]
  model = models.UNet(1, 2, width=2, depth=1, norm="group", rngs=nnx.Rngs(0))
  summary, logits = inference.evaluate(model, ds)
  total = None
  for lg in logits:
    total = om.add(total, om.image_counts(inst, lg.argmax(-1) > 0))
  assert summary["val_aji"] == om.summarize(total)["aji"]
  assert summary["val_objects_true"] == 4
  # without instances/ the object metrics are absent
  import shutil  # pylint: disable=import-outside-toplevel

  shutil.rmtree(root / "instances")
  no_inst = data.load_folder(root, 2)
  assert no_inst.instances is None
  assert "val_aji" not in inference.evaluate(model, no_inst)[0]


def test_instance_image_of_wrong_size_is_a_data_error(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel

  from examples.unet import data  # pylint: disable=import-outside-toplevel

  for sub in ("images", "masks", "instances"):
    (tmp_path / sub).mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(
    tmp_path / "images" / "a.png"
  )
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
  Image.fromarray(np.zeros((8, 9), np.uint16)).save(
    tmp_path / "instances" / "a.png"
  )
  with pytest.raises(data.DataError, match=r"instances/a.png: instance ids"):
    data.load_folder(tmp_path, 2)

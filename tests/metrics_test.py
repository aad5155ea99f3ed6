"""Tests of pel_jax/_metrics.py: `confusion_stats`, `segmentation_metrics`.

Expected values come from a float64 NumPy oracle written from the
definitions (per pixel and per class, with explicit branches for the
absent-class policies), hand-computed cases, MONAI's published test values
and runs of MONAI 1.6.1 and torchmetrics 1.9.0
(peer_values/metric_values.json, written by make_metric_values.py).
"""

import functools
import json
import math
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

import pel_jax
from pel_jax import _metrics

_PEERS = json.loads(
  (
    pathlib.Path(__file__).parent / "peer_values" / "metric_values.json"
  ).read_text()
)
_NAMES = ("dice", "iou", "precision", "recall")


# ---------------------------------------------------------------- oracle


def _oracle_stats(
  x,
  t,
  *,
  hard,
  threshold=0.5,
  logits=False,
  mask=None,
  ignore_index=None,
  batch=False,
):
  """float64 `[G, C, 4]` TP, FP, FN, TN from per-pixel definitions."""
  x = np.asarray(x, np.float64)
  n, k = x.shape[0], x.shape[-1]
  x = x.reshape(n, -1, k)
  if logits:
    if k == 1:
      x = 1 / (1 + np.exp(-x))
    else:
      x = np.exp(x - x.max(-1, keepdims=True))
      x = x / x.sum(-1, keepdims=True)
  t = np.asarray(t)
  keep = np.ones((n, x.shape[1]), bool)
  if mask is not None:
    keep &= np.asarray(mask).reshape(n, -1)
  if np.issubdtype(t.dtype, np.integer):
    ids = t.reshape(n, -1)
    if ignore_index is not None:
      keep &= ids != ignore_index
    if k == 1:
      g = (ids == 1)[..., None].astype(np.float64)
    else:
      g = np.stack([ids == c for c in range(k)], -1).astype(np.float64)
  else:
    g = np.asarray(t, np.float64).reshape(n, -1, k)
  out = np.zeros((n, k, 4))
  for b in range(n):
    for i in range(x.shape[1]):
      if not keep[b, i]:
        continue
      if hard == "argmax":
        p = np.zeros(k)
        p[int(np.argmax(x[b, i]))] = 1.0
      elif hard == "threshold":
        p = (x[b, i] > threshold).astype(np.float64)
      else:
        p = x[b, i]
      for c in range(k):
        out[b, c] += [
          p[c] * g[b, i, c],
          p[c] * (1 - g[b, i, c]),
          (1 - p[c]) * g[b, i, c],
          (1 - p[c]) * (1 - g[b, i, c]),
        ]
  return out.sum(0, keepdims=True) if batch else out


def _fractions(tp, fp, fn):
  """(numerator, denominator) of Dice, IoU, precision, recall."""
  return (
    (2 * tp, 2 * tp + fp + fn),
    (tp, tp + fp + fn),
    (tp, tp + fp),
    (tp, tp + fn),
  )


def _oracle_metrics(s, *, average, zero_division, absent, background=True):
  """Per-row metrics from `[G, C, 4]` sums, one class at a time."""
  if not background:
    s = s[:, 1:]
  rows = []
  for row in s:
    per = {n: [] for n in _NAMES}
    if average == "micro":
      tp, fp, fn, _ = row.sum(0)
      for n, (a, d) in zip(_NAMES, _fractions(tp, fp, fn)):
        per[n] = a / d if d else zero_division
      rows.append(per)
      continue
    for tp, fp, fn, _ in row:
      left_out = (absent == "exclude" and tp + fn == 0) or (
        absent == "exclude_empty" and tp + fp + fn == 0
      )
      for n, (a, d) in zip(_NAMES, _fractions(tp, fp, fn)):
        if left_out:
          per[n].append(math.nan)
        else:
          per[n].append(a / d if d else zero_division)
    if average == "macro":
      for n in _NAMES:
        kept = [v for v in per[n] if not math.isnan(v)]
        per[n] = sum(kept) / len(kept) if kept else math.nan
    rows.append(per)
  return {n: np.array([r[n] for r in rows], np.float64) for n in _NAMES}


def _close(got, want, atol=1e-6):
  for n in _NAMES:
    np.testing.assert_allclose(
      np.asarray(getattr(got, n), np.float64),
      want[n],
      atol=atol,
      rtol=0,
      err_msg=n,
    )


def _as_stats(s):
  return _metrics.ConfusionStats(*(jnp.asarray(s[..., k]) for k in range(4)))


def _data(seed=0, shape=(3, 4, 5, 4)):
  """Logits, ids with absent classes (the last one nowhere in sample 2)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  ids = rng.integers(0, shape[-1], shape[:-1])
  ids[1][ids[1] == 2] = 1
  ids[2] = 0
  x[2, ..., -1] -= 10.0
  return x, ids


# ----------------------------------------------------------------- stats


class ConfusionStatsTest(parameterized.TestCase):
  @parameterized.product(
    hard=("argmax", "threshold", None),
    batch=(False, True),
    masked=(False, True),
  )
  def test_matches_oracle(self, hard, batch, masked):
    x, ids = _data()
    mask = np.random.default_rng(1).random(ids.shape) < 0.7 if masked else None
    got = pel_jax.confusion_stats(
      x,
      ids,
      from_logits=True,
      hard=hard,
      batch=batch,
      where=mask,
      ignore_index=2 if masked else None,
    )
    want = _oracle_stats(
      x,
      ids,
      hard=hard,
      logits=True,
      mask=mask,
      batch=batch,
      ignore_index=2 if masked else None,
    )
    if batch:
      want = want[0]
    for k, field in enumerate(got):
      np.testing.assert_allclose(field, want[..., k], atol=2e-5, rtol=1e-6)

  @parameterized.parameters("threshold", None)
  def test_float64_matches_oracle(self, hard):
    x, ids = _data()
    t = np.eye(4)[ids]
    with jax.enable_x64(True):
      got = pel_jax.confusion_stats(
        x.astype(np.float64), t, from_logits=True, hard=hard, batch=True
      )
      self.assertEqual(got.tp.dtype, jnp.float64)
      m = pel_jax.segmentation_metrics(got, absent_classes="exclude_empty")
    want = _oracle_stats(x, t, hard=hard, logits=True, batch=True)
    np.testing.assert_allclose(np.stack(got, -1), want[0], rtol=1e-12)
    want = _oracle_metrics(
      want, average="macro", zero_division=0.0, absent="exclude_empty"
    )
    _close(m, {n: v[0] for n, v in want.items()}, atol=1e-12)

  def test_float_targets_threshold_one_channel(self):
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(2, 6, 1)).astype(np.float32)
    t = (rng.uniform(size=(2, 6, 1)) < 0.5).astype(np.float32)
    got = pel_jax.confusion_stats(p, t, hard="threshold", threshold=0.3)
    want = _oracle_stats(p, t, hard="threshold", threshold=0.3)
    np.testing.assert_array_equal(np.stack(got, -1), want)

  def test_hand_computed(self):
    # Pixels (pred, target): (0,0) (1,1) (0,1) (0,0), ignore the 4th.
    probs = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]])
    ids = np.array([[0, 1, 1, 9]])
    s = pel_jax.confusion_stats(
      probs.astype(np.float32), ids, ignore_index=9, batch=True
    )
    # class 0: TP 1 (pixel 0), FP 1 (pixel 2), FN 0, TN 1 (pixel 1)
    # class 1: TP 1 (pixel 1), FP 0, FN 1 (pixel 2), TN 1 (pixel 0)
    np.testing.assert_array_equal(np.stack(s), [[1, 1], [1, 0], [0, 1], [1, 1]])
    m = pel_jax.segmentation_metrics(s, average="none")
    np.testing.assert_allclose(m.dice, [2 / 3, 2 / 3])
    np.testing.assert_allclose(m.iou, [1 / 2, 1 / 2])
    np.testing.assert_allclose(m.precision, [1 / 2, 1])
    np.testing.assert_allclose(m.recall, [1, 1 / 2])

  @parameterized.parameters("argmax", None)
  def test_accumulation_is_exact(self, hard):
    x, ids = _data(shape=(6, 5, 4, 3))
    stats = jax.jit(
      lambda x, t: pel_jax.confusion_stats(
        x, t, from_logits=True, hard=hard, batch=True
      )
    )
    whole = stats(x, ids)
    parts = [stats(x[i : i + 2], ids[i : i + 2]) for i in (0, 2, 4)]
    total = jax.tree.map(lambda *a: sum(a), *parts)
    # Hard counts are integers in float32: their sums are exact.
    rtol = 0 if hard else 1e-6
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol)
    jax.tree.map(close, total, whole)
    for average in ("macro", "micro", "none"):
      jax.tree.map(
        close,
        pel_jax.segmentation_metrics(total, average=average),
        pel_jax.segmentation_metrics(whole, average=average),
      )

  def test_jit(self):
    x, ids = _data()
    f = jax.jit(
      lambda x, t: pel_jax.segmentation_metrics(
        pel_jax.confusion_stats(x, t, from_logits=True, batch=True),
        absent_classes="exclude",
      )
    )
    want = _oracle_metrics(
      _oracle_stats(x, ids, hard="argmax", batch=True),
      average="macro",
      zero_division=0.0,
      absent="exclude",
    )
    _close(f(x, ids), {n: v[0] for n, v in want.items()})


# --------------------------------------------------------------- metrics


class SegmentationMetricsTest(parameterized.TestCase):
  @parameterized.product(
    average=("macro", "micro", "none"),
    zero_division=(0.0, 1.0, math.nan),
    absent=("count", "exclude", "exclude_empty"),
    background=(True, False),
  )
  def test_matches_oracle(self, average, zero_division, absent, background):
    x, ids = _data()
    s = _oracle_stats(x, ids, hard="argmax")
    got = pel_jax.segmentation_metrics(
      _as_stats(s.astype(np.float32)),
      average=average,
      zero_division=zero_division,
      absent_classes=absent,
      include_background=background,
    )
    want = _oracle_metrics(
      s,
      average=average,
      zero_division=zero_division,
      absent=absent,
      background=background,
    )
    _close(got, want)

  def test_soft_dice_is_f1_of_soft_precision_and_recall(self):
    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.95, (2, 7, 3)).astype(np.float32)
    t = rng.integers(0, 3, (2, 7))
    m = pel_jax.segmentation_metrics(
      pel_jax.confusion_stats(p, t, hard=None), average="none"
    )
    f1 = 2 * m.precision * m.recall / (m.precision + m.recall)
    np.testing.assert_allclose(m.dice, f1, rtol=1e-5)

  def test_row_with_every_class_left_out_is_nan(self):
    # One row, two classes, no target at all: MONAI's ignore_empty leaves
    # nothing to average.
    s = _metrics.ConfusionStats(
      *(
        jnp.array([[a, b]], jnp.float32)
        for a, b in ((0, 0), (2, 0), (0, 0), (1, 3))
      )
    )
    m = pel_jax.segmentation_metrics(s, absent_classes="exclude")
    self.assertTrue(np.isnan(m.dice).all())
    m = pel_jax.segmentation_metrics(s, absent_classes="exclude_empty")
    np.testing.assert_array_equal(m.dice, [0.0])  # class 0 has FP 2

  @parameterized.named_parameters(
    ("average", dict(average="mean"), ValueError, "`average`"),
    ("absent", dict(absent_classes="ignore"), ValueError, "`absent_classes`"),
    ("zero_division", dict(zero_division=0.5), ValueError, "`zero_division`"),
    ("zero_div_str", dict(zero_division="nan"), ValueError, "`zero_division`"),
    (
      "background",
      dict(include_background=jnp.array(True)),
      TypeError,
      "`include_background`",
    ),
  )
  def test_bad_options(self, kw, error, name):
    s = _as_stats(np.ones((2, 3, 4), np.float32))
    with self.assertRaisesRegex(error, name):
      pel_jax.segmentation_metrics(s, **kw)

  def test_bad_stats(self):
    with self.assertRaisesRegex(TypeError, "`stats` must be.*length 3"):
      pel_jax.segmentation_metrics((1.0, 2.0, 3.0))
    s = _metrics.ConfusionStats(*(jnp.ones(n) for n in (3, 3, 2, 3)))
    with self.assertRaisesRegex(ValueError, r"\(3,\), \(3,\), \(2,\)"):
      pel_jax.segmentation_metrics(s)
    s = _metrics.ConfusionStats(*(jnp.ones(3, jnp.int32) for _ in range(4)))
    with self.assertRaisesRegex(TypeError, "floating point.*int32"):
      pel_jax.segmentation_metrics(s)


class ConfusionStatsErrorsTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("hard", dict(hard="round"), ValueError, "`hard`"),
    ("hard_array", dict(hard=np.array("argmax")), ValueError, "`hard`"),
    (
      "threshold",
      dict(hard="threshold", threshold=1.5),
      ValueError,
      "`threshold`",
    ),
    ("batch", dict(batch=jnp.array(True)), TypeError, "`batch`"),
    (
      "activation",
      dict(activation="tanh", from_logits=True),
      ValueError,
      "`activation`",
    ),
  )
  def test_bad_options(self, kw, error, name):
    x, ids = _data()
    with self.assertRaisesRegex(error, name):
      pel_jax.confusion_stats(x, ids, **kw)

  def test_argmax_of_one_channel(self):
    with self.assertRaisesRegex(ValueError, r"argmax.*\(2, 3, 1\)"):
      pel_jax.confusion_stats(
        np.zeros((2, 3, 1), np.float32), np.zeros((2, 3), np.int32)
      )

  def test_shapes_named(self):
    x, ids = _data()
    with self.assertRaisesRegex(ValueError, r"\(3, 4, 5\).*\(3, 4\)"):
      pel_jax.confusion_stats(x, ids[:, :, 0])
    with self.assertRaisesRegex(ValueError, r"`where`.*\(3, 4, 5\)"):
      pel_jax.confusion_stats(x, ids, where=np.ones((3, 4), bool))
    with self.assertRaisesRegex(TypeError, "`predictions`.*int"):
      pel_jax.confusion_stats(ids[..., None], ids)


# -------------------------------------------------------- published values

# MONAI tests/metrics/test_compute_meandice.py at commit
# 41e52c1a6f267ca1d44598259a1c357fbe12d91f and test_compute_meaniou.py at
# a4e90d9a542105caf73095ff43d1e81e67f15a1c (the same inputs, channels first
# [B, C, H, W]; expected values to 1e-4 as MONAI checks them).
_M2_PRED = [
  [
    [[0.0, 1.0], [0.0, 0.0]],
    [[0.0, 0.0], [1.0, 1.0]],
    [[1.0, 0.0], [0.0, 0.0]],
  ],
  [
    [[0.0, 0.0], [0.0, 1.0]],
    [[1.0, 0.0], [0.0, 0.0]],
    [[0.0, 1.0], [1.0, 0.0]],
  ],
]
_M2_Y = [
  [
    [[0.0, 0.0], [0.0, 1.0]],
    [[1.0, 0.0], [1.0, 0.0]],
    [[0.0, 1.0], [0.0, 0.0]],
  ],
  [
    [[0.0, 0.0], [0.0, 1.0]],
    [[1.0, 1.0], [0.0, 0.0]],
    [[0.0, 0.0], [1.0, 0.0]],
  ],
]
_M3_PRED = [
  [
    [[0.0, 0.0], [0.0, 0.0]],
    [[0.0, 0.0], [0.0, 0.0]],
    [[1.0, 1.0], [1.0, 1.0]],
  ],
  [
    [[0.0, 0.0], [0.0, 0.0]],
    [[0.0, 0.0], [0.0, 0.0]],
    [[1.0, 1.0], [1.0, 1.0]],
  ],
]
_M3_Y = [
  [
    [[1.0, 1.0], [1.0, 1.0]],
    [[0.0, 0.0], [0.0, 0.0]],
    [[0.0, 0.0], [0.0, 0.0]],
  ],
  [
    [[0.0, 1.0], [1.0, 0.0]],
    [[1.0, 0.0], [0.0, 1.0]],
    [[0.0, 0.0], [0.0, 0.0]],
  ],
]
_M4_PRED = [
  [
    [[1.0, 1.0], [1.0, 0.0]],
    [[0.0, 1.0], [0.0, 0.0]],
    [[0.0, 1.0], [1.0, 1.0]],
  ],
  [
    [[1.0, 0.0], [1.0, 1.0]],
    [[0.0, 1.0], [1.0, 1.0]],
    [[0.0, 1.0], [1.0, 0.0]],
  ],
]
_M4_Y = [
  [
    [[1.0, 1.0], [1.0, 1.0]],
    [[0.0, 0.0], [0.0, 0.0]],
    [[0.0, 0.0], [0.0, 0.0]],
  ],
  [
    [[0.0, 0.0], [0.0, 1.0]],
    [[1.0, 1.0], [0.0, 0.0]],
    [[0.0, 0.0], [1.0, 0.0]],
  ],
]
_M7_Y = [_M4_Y[0], _M4_Y[0]]


def _monai(pred, y, average="none", **kw):
  """MONAI's default ignore_empty=True is absent_classes="exclude"."""
  last = lambda a: np.moveaxis(np.asarray(a, np.float32), 1, -1)
  s = pel_jax.confusion_stats(last(pred), last(y), hard=None)
  kw.setdefault("absent_classes", "exclude")
  return pel_jax.segmentation_metrics(s, average=average, **kw)


class MonaiPublishedTest(absltest.TestCase):
  def test_case_1(self):
    m = _monai([[[[1.0, 0.0], [0.0, 1.0]]]], [[[[1.0, 0.0], [1.0, 1.0]]]])
    np.testing.assert_allclose(m.dice, [[0.8]], atol=1e-4)
    np.testing.assert_allclose(m.iou, [[0.6667]], atol=1e-4)

  def test_case_2_no_background(self):
    m = _monai(_M2_PRED, _M2_Y, include_background=False)
    np.testing.assert_allclose(m.dice, [[0.5, 0], [0.6667, 0.6667]], atol=1e-4)
    np.testing.assert_allclose(m.iou, [[0.3333, 0], [0.5, 0.5]], atol=1e-4)

  def test_case_3_nan_where_no_target(self):
    m = _monai(_M3_PRED, _M3_Y)
    for name in ("dice", "iou"):
      np.testing.assert_array_equal(
        np.isnan(getattr(m, name)), [[False, True, True], [False, False, True]]
      )

  def test_cases_4_5_7_nan_reductions(self):
    m = _monai(_M4_PRED, _M4_Y)
    # reduction="mean_batch": per class over the samples with a target.
    np.testing.assert_allclose(
      np.nanmean(m.dice, 0), [0.6786, 0.4, 0.6667], atol=1e-4
    )
    np.testing.assert_allclose(
      np.nanmean(m.iou, 0), [0.5416, 0.25, 0.5], atol=1e-4
    )
    # reduction="mean": per sample over its classes, then over the samples.
    for y, dice, iou in ((_M4_Y, 0.689683, 0.5555), (_M7_Y, 0.857143, 0.75)):
      m = _monai(_M4_PRED, y, average="macro")
      np.testing.assert_allclose(np.nanmean(m.dice), dice, atol=1e-4)
      np.testing.assert_allclose(np.nanmean(m.iou), iou, atol=1e-4)

  def test_cases_9_11_12_full_and_empty(self):
    # 11 and 12 set ignore_empty=False; 9 (all ones) holds under either.
    for pred, y, want in (
      (np.ones, np.ones, 1.0),
      (np.zeros, np.zeros, 1.0),
      (np.ones, np.zeros, 0.0),
    ):
      m = _monai(
        pred((2, 2, 3, 3)),
        y((2, 2, 3, 3)),
        absent_classes="count",
        zero_division=1.0,
      )
      np.testing.assert_array_equal(m.dice, np.full((2, 2), want))
      np.testing.assert_array_equal(m.iou, np.full((2, 2), want))


def _index_stats(case, classes):
  """Per-sample stats of index predictions and targets (one-hot probs)."""
  preds = np.eye(classes, dtype=np.float32)[np.array(case["preds"])]
  return pel_jax.confusion_stats(preds, np.array(case["target"]), hard=None)


class TorchmetricsPublishedTest(absltest.TestCase):
  """Values printed in torchmetrics 1.9.0's docstring examples (its doctests).

  The inputs are drawn by torch's generator: make_metric_values.py stores
  them (`torchmetrics_docstring_inputs`).
  """

  def test_mean_iou_index_example(self):
    # torchmetrics/functional/segmentation/mean_iou.py, `mean_iou`.
    case = _PEERS["torchmetrics_docstring_inputs"]["mean_iou"]
    s = _index_stats(case, 5)
    m = pel_jax.segmentation_metrics(s, absent_classes="exclude_empty")
    np.testing.assert_allclose(
      m.iou, [0.3617, 0.3128, 0.3047, 0.3499], atol=1e-4
    )
    m = pel_jax.segmentation_metrics(
      s, average="none", absent_classes="exclude_empty"
    )
    np.testing.assert_allclose(
      np.nan_to_num(m.iou, nan=-1.0),
      [
        [0.3617, 0.3617, -1, -1, -1],
        [0.3128, 0.3128, -1, -1, -1],
        [0.2727, 0.3366, -1, -1, -1],
        [0.3756, 0.3242, -1, -1, -1],
      ],
      atol=1e-4,
    )

  def test_dice_score_index_example(self):
    # torchmetrics/functional/segmentation/dice.py, `dice_score`.
    case = _PEERS["torchmetrics_docstring_inputs"]["dice_score"]
    s = _index_stats(case, 5)
    o = dict(zero_division=math.nan, absent_classes="exclude_empty")
    m = pel_jax.segmentation_metrics(s, average="micro", **o)
    np.testing.assert_allclose(
      m.dice, [0.2031, 0.1914, 0.2266, 0.1641], atol=1e-4
    )
    m = pel_jax.segmentation_metrics(s, average="none", **o)
    np.testing.assert_allclose(
      m.dice,
      [
        [0.1731, 0.1667, 0.2400, 0.2424, 0.1947],
        [0.2245, 0.2247, 0.2321, 0.1132, 0.1682],
        [0.2500, 0.2476, 0.1887, 0.1818, 0.2718],
        [0.1308, 0.1800, 0.1980, 0.1607, 0.1522],
      ],
      atol=1e-4,
    )
    # aggregation_level="global": the sums over the batch.
    total = jax.tree.map(lambda a: a.sum(0), s)
    m = pel_jax.segmentation_metrics(total, average="macro", **o)
    np.testing.assert_allclose(m.dice, 0.1965, atol=1e-4)


# ------------------------------------------------------------- peer runs


@functools.cache
def _peer_stats(batch, ignore_index=None):
  """Stats of the peers' multiclass case; `ignore_index` reads ignored_ids."""
  mc = _PEERS["multiclass"]
  ids = mc["ids"] if ignore_index is None else _PEERS["ignored_ids"]
  return pel_jax.confusion_stats(
    np.array(mc["logits"], np.float32),
    np.array(ids),
    from_logits=True,
    batch=batch,
    ignore_index=ignore_index,
  )


class PeerRunTest(absltest.TestCase):
  def test_versions(self):
    self.assertEqual(
      {k: _PEERS["versions"][k] for k in ("monai", "torchmetrics")},
      {"monai": "1.6.1", "torchmetrics": "1.9.0"},
    )

  def test_monai(self):
    s = _peer_stats(batch=False)
    for case in _PEERS["monai"]:
      kw = case["kwargs"]
      o = dict(include_background=kw["include_background"])
      if kw["ignore_empty"]:
        o["absent_classes"] = "exclude"
      else:
        o["zero_division"] = 1.0
      name = "dice" if case["peer"].endswith("DiceMetric") else "iou"
      none = getattr(pel_jax.segmentation_metrics(s, average="none", **o), name)
      np.testing.assert_allclose(
        none, case["none"], atol=1e-6, err_msg=str(case)
      )
      macro = getattr(pel_jax.segmentation_metrics(s, **o), name)
      np.testing.assert_allclose(
        np.nanmean(macro), case["mean"][0], atol=1e-6, err_msg=str(case)
      )

  def test_torchmetrics_segmentation(self):
    for case in _PEERS["torchmetrics_segmentation"]:
      kw = case["kwargs"]
      if case["peer"].endswith("dice_score"):
        batch = kw["aggregation_level"] == "global"
        got = pel_jax.segmentation_metrics(
          _peer_stats(batch),
          average=kw["average"],
          zero_division=math.nan,
          absent_classes="exclude_empty",
        ).dice
        want = np.array(case["value"])
        np.testing.assert_allclose(
          np.reshape(got, want.shape), want, atol=1e-6, err_msg=str(case)
        )
      else:
        m = pel_jax.segmentation_metrics(
          _peer_stats(False),
          average="none" if kw["per_class"] else "macro",
          absent_classes="exclude_empty",
        )
        # mean_iou writes -1 for classes left out of the mean.
        want = np.array(case["value"])
        got = np.nan_to_num(np.asarray(m.iou), nan=-1.0)
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=str(case))

  def _classification(self, cases):
    for case in cases:
      kw = case["kwargs"]
      batch = kw["multidim_average"] == "global"
      m = pel_jax.segmentation_metrics(
        _peer_stats(batch, kw["ignore_index"]),
        average=kw["average"],
        zero_division=kw["zero_division"],
        # Its per-class values ("none") keep every class; only its macro
        # weights drop the classes in neither prediction nor target.
        absent_classes="count" if kw["average"] == "none" else "exclude_empty",
      )
      for name in _NAMES:
        if name not in case:
          continue
        want = np.array(case[name])
        got = np.asarray(getattr(m, name))
        np.testing.assert_allclose(
          got.reshape(want.shape),
          want,
          atol=1e-6,
          err_msg=f"{name} {case['kwargs']}",
        )

  def test_torchmetrics_classification(self):
    self._classification(_PEERS["torchmetrics_classification"])

  def test_torchmetrics_ignore_index(self):
    self._classification(_PEERS["torchmetrics_ignore_index"])

  def test_torchmetrics_multilabel(self):
    ml = _PEERS["multilabel"]
    s = pel_jax.confusion_stats(
      np.array(ml["logits"], np.float32),
      np.array(ml["labels"], np.float32),
      from_logits=True,
      activation="sigmoid",
      hard="threshold",
      batch=True,
    )
    for case in _PEERS["torchmetrics_multilabel"]:
      kw = case["kwargs"]
      m = pel_jax.segmentation_metrics(
        s, average=kw["average"], zero_division=kw["zero_division"]
      )
      for name in _NAMES:
        np.testing.assert_allclose(
          getattr(m, name), case[name], atol=1e-6, err_msg=f"{name} {kw}"
        )


# ----------------------------------------------------------- distributed

_N = 8


class DistributedTest(parameterized.TestCase):
  def _data(self):
    x, ids = _data(seed=4, shape=(_N, 3, 4, 3))
    mask = np.random.default_rng(2).random(ids.shape) < 0.8
    return x, ids, mask

  def _local(self, batch):
    def f(x, t, m):
      s = pel_jax.confusion_stats(
        x, t, from_logits=True, where=m, batch=batch, axis_name="d"
      )
      return s, pel_jax.segmentation_metrics(s, absent_classes="exclude")

    return f

  @parameterized.parameters(False, True)
  def test_shard_map(self, batch):
    x, ids, mask = self._data()
    want = pel_jax.confusion_stats(
      x, ids, from_logits=True, where=mask, batch=batch
    )
    mesh = jax.make_mesh(
      (_N,), ("d",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    args = tuple(
      jax.device_put(a, NamedSharding(mesh, P("d"))) for a in (x, ids, mask)
    )
    out = P() if batch else P("d")
    s, m = jax.jit(
      jax.shard_map(
        self._local(batch),
        mesh=mesh,
        in_specs=(P("d"),) * 3,
        out_specs=(out, out),
      )
    )(*args)
    jax.tree.map(np.testing.assert_array_equal, s, want)
    jax.tree.map(
      np.testing.assert_array_equal,
      m,
      pel_jax.segmentation_metrics(want, absent_classes="exclude"),
    )

  def test_pmap(self):
    x, ids, mask = self._data()
    want = pel_jax.confusion_stats(
      x, ids, from_logits=True, where=mask, batch=True
    )
    split = lambda a: a.reshape((_N, 1) + a.shape[1:])
    s, m = jax.pmap(self._local(True), axis_name="d")(
      split(x), split(ids), split(mask)
    )
    for k in range(_N):
      jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[k], b), s, want)
    np.testing.assert_array_equal(
      m.dice,
      np.full(
        _N, pel_jax.segmentation_metrics(want, absent_classes="exclude").dice
      ),
    )


if __name__ == "__main__":
  absltest.main()

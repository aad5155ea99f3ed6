"""Hand-computed checks of the float64 family oracle (tests/reference_family.py).

Every expected value below is worked out on paper from the formulas (the
arithmetic is in the comments), so that the oracle the library is tested
against is itself tested against something independent.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tests import reference
from tests import reference_family

# Two pixels, two classes, labels [1, 0]:
#   class 0: TP = 0.6, P = 0.8, G = 1, Dice D = (0.8 + 1) / 2 = 0.9
#   class 1: TP = 0.8, P = 1.2, G = 1, Dice D = (1.2 + 1) / 2 = 1.1
_P2 = np.array([[[0.2, 0.8], [0.6, 0.4]]])
_T2 = np.array([[1, 0]], np.int32)
# Three pixels, labels [0, 0, 1], a third class never labelled:
#   class 0: TP = 1.4, P = 1.6, G = 2, D = 1.8
#   class 1: TP = 0.8, P = 1.4, G = 1, D = 1.2
#   class 2: TP = 0,   P = 0.3, G = 0, D = 0.15
_P3 = np.array([[[0.9, 0.1, 0.1], [0.5, 0.5, 0.1], [0.2, 0.8, 0.1]]])
_T3 = np.array([[0, 0, 1]], np.int32)
_DICE = dict(
  exponent=1.0, fp_weight=0.5, fn_weight=0.5, smooth_nr=0.0, smooth_dr=0.0
)


def _oracle(p, t, **kw):
  return float(reference_family.family_numpy(p, t, **{**_DICE, **kw}))


class OracleByHandTest(parameterized.TestCase):
  def test_macro_dice(self):
    # (1 - 0.6/0.9 + 1 - 0.8/1.1) / 2 = (1/3 + 3/11) / 2 = 10/33.
    self.assertAlmostEqual(_oracle(_P2, _T2), 10 / 33, places=12)

  def test_micro_dice(self):
    # 1 - (0.6 + 0.8) / (0.9 + 1.1) = 0.3.
    self.assertAlmostEqual(_oracle(_P2, _T2, average="micro"), 0.3, places=12)

  @parameterized.parameters(
    # square: W = (1/4, 1): (0.35 + 0.8) / (0.45 + 1.2) = 23/33.
    ("square", 10 / 33),
    # simple: W = (1/2, 1): (0.7 + 0.8) / (0.9 + 1.2) = 5/7.
    ("simple", 2 / 7),
    # uniform: (1.4 + 0.8) / (1.8 + 1.2) = 11/15.
    ("uniform", 4 / 15),
  )
  def test_generalized(self, kind, expected):
    self.assertAlmostEqual(
      _oracle(_P3[..., :2], _T3, generalized=kind), expected, places=12
    )

  def test_generalized_absent_class_gets_the_largest_weight(self):
    # Class 2 (G = 0) gets max(1/4, 1) = 1:
    # (0.35 + 0.8 + 0) / (0.45 + 1.2 + 0.15) = 23/36.
    self.assertAlmostEqual(
      _oracle(_P3, _T3, generalized="square"), 13 / 36, places=12
    )

  def test_generalized_batch_weights_span_the_batch(self):
    # batch=True: the two samples' sums add before the weights (G = 4, 2,
    # 0); square weights (1/16, 1/4, 1/4): (1.4/8 + 0.4 + 0) /
    # (1.8/8 + 0.6 + 0.075) = 0.575 / 0.9 = 23/36 again.
    p = np.concatenate([_P3, _P3])
    t = np.concatenate([_T3, _T3])
    got = reference_family.family_numpy(
      p, t, **_DICE, generalized="square", batch=True, reduction="none"
    )
    self.assertAlmostEqual(float(got), 13 / 36, places=12)

  def test_squared(self):
    # p = (0.5, 1), g = (1, 0): TP = 0.5, sum p^2 + sum g^2 = 2.25:
    # 1 - 0.5 / 1.125 = 5/9.
    p = np.array([[[0.5], [1.0]]])
    g = np.array([[[1.0], [0.0]]])
    self.assertAlmostEqual(_oracle(p, g, squared=True), 5 / 9, places=12)

  def test_soft_labels(self):
    # p = (0.3, 0.6), g = (0.5, 0.5): TP = (0.9 + 1 - 0.3) / 2 = 0.8,
    # D = (0.9 + 1) / 2 = 0.95: 1 - 0.8/0.95 = 3/19.
    p = np.array([[[0.3], [0.6]]])
    g = np.array([[[0.5], [0.5]]])
    self.assertAlmostEqual(_oracle(p, g, soft_labels=True), 3 / 19, places=12)
    # p = g soft: zero with soft labels, not with the product form
    # (TP = 0.34 < D = 0.8).
    self.assertAlmostEqual(
      _oracle(g + 0.0 * p, g, soft_labels=True), 0.0, places=12
    )
    self.assertGreater(
      _oracle(np.array([[[0.3], [0.5]]]), np.array([[[0.3], [0.5]]])), 0.5
    )

  def test_soft_labels_exponent(self):
    # n = 2, p = (0.25, 0.8), g = (0.5, 0.5): N = 0.5 (0.5^2) + 0.5 (1) =
    # 0.625; TP = 0.25 + 0.5 = 0.75; D = (1.05 + 1) / 2 = 1.025.
    p = np.array([[[0.25], [0.8]]])
    g = np.array([[[0.5], [0.5]]])
    self.assertAlmostEqual(
      _oracle(p, g, soft_labels=True, exponent=2.0),
      1 - 0.625 / 1.025,
      places=12,
    )
    # p = g: N = TP = G = D: zero loss for any n.
    self.assertAlmostEqual(
      _oracle(g, g, soft_labels=True, exponent=3.0), 0.0, places=12
    )

  def test_soft_labels_with_squared_is_minimal_at_p_equals_g(self):
    # The L2 form of TP is (sum p^2 + sum g^2 - sum (p-g)^2)/2 = sum p g
    # (MONAI, ord 2): at p = g = (0.5, 0.3) the ratio 2 * 0.34 / 0.68 = 1.
    g = np.array([[[0.5], [0.3]]])
    self.assertAlmostEqual(
      _oracle(g, g, soft_labels=True, squared=True), 0.0, places=12
    )
    p = np.array([[[0.2], [0.6]]])  # 1 - 2 * 0.28 / (0.4 + 0.34).
    self.assertAlmostEqual(
      _oracle(p, g, soft_labels=True, squared=True), 1 - 0.56 / 0.74, places=12
    )

  def test_focal_and_log(self):
    self.assertAlmostEqual(
      _oracle(_P2, _T2, focal_gamma=2.0),
      ((1 / 3) ** 2 + (3 / 11) ** 2) / 2,
      places=12,
    )
    self.assertAlmostEqual(
      _oracle(_P2, _T2, log_loss=True),
      (-np.log(2 / 3) - np.log(8 / 11)) / 2,
      places=12,
    )

  def test_exclude_absent(self):
    # Class 2 has no target: count averages 3 entries, exclude 2.
    # Class 2's Dice: 1 - 0 / 0.15 = 1; classes 0, 1: 1 - 1.4/1.8 = 2/9,
    # 1 - 0.8/1.2 = 1/3.
    self.assertAlmostEqual(
      _oracle(_P3, _T3), (2 / 9 + 1 / 3 + 1) / 3, places=12
    )
    self.assertAlmostEqual(
      _oracle(_P3, _T3, absent_classes="exclude"),
      (2 / 9 + 1 / 3) / 2,
      places=12,
    )
    # Nothing present at all: 0, not 0/0.
    none = np.array([[3, 3, 3]], np.int32)
    self.assertEqual(_oracle(_P3, none, absent_classes="exclude"), 0.0)

  def test_exclude_per_sample(self):
    # Sample 0 is _T3: present classes 0, 1, losses 2/9, 1/3: mean 5/18.
    # Sample 1, labels (0, 0, 0): class 0 TP = 1.6, P = 1.6, G = 3,
    # D = 2.3: loss 1 - 1.6/2.3 = 7/23, the only present class. Sample 2
    # (id 3 is no class): nothing present, 1.
    p = np.concatenate([_P3] * 3)
    t = np.array([[0, 0, 1], [0, 0, 0], [3, 3, 3]], np.int32)
    per_sample = [5 / 18, 7 / 23, 1.0]
    kw = dict(absent_classes="exclude_per_sample")
    np.testing.assert_allclose(
      reference_family.family_numpy(p, t, reduction="none", **_DICE, **kw),
      per_sample,
      rtol=1e-12,
    )
    self.assertAlmostEqual(_oracle(p, t, **kw), sum(per_sample) / 3, places=12)
    self.assertAlmostEqual(
      _oracle(p, t, reduction="sum", **kw), sum(per_sample), places=12
    )
    # "exclude": one mean over the three present entries, sample 2 adds 0.
    self.assertAlmostEqual(
      _oracle(p, t, absent_classes="exclude"),
      (2 / 9 + 1 / 3 + 7 / 23) / 3,
      places=12,
    )

  def test_cross_entropy(self):
    # softmax(log (1, 3)) = (1/4, 3/4), softmax(log (3, 1)) = (3/4, 1/4);
    # labels (1, 0): CE = -log 3/4 at both pixels.
    x = np.log(np.array([[[1.0, 3.0], [3.0, 1.0]]]))
    t = np.array([[1, 0]], np.int32)
    dice = _oracle(x, t, from_logits=True)
    ce = (-np.log(0.75) - np.log(0.75)) / 2
    self.assertAlmostEqual(
      _oracle(x, t, from_logits=True, ce_weight=0.5), dice + 0.5 * ce, places=12
    )
    # reduction="sum": the CE is summed too, 2 (-log 3/4).
    self.assertAlmostEqual(
      _oracle(x, t, from_logits=True, ce_weight=0.5, reduction="sum")
      - _oracle(x, t, from_logits=True, reduction="sum"),
      0.5 * 2 * -np.log(0.75),
      places=12,
    )
    # Label smoothing 0.2 on 2 classes: targets (0.1, 0.9).
    ce_s = -(0.1 * np.log(0.25) + 0.9 * np.log(0.75))
    t1 = np.array([[1]], np.int32)
    self.assertAlmostEqual(
      _oracle(
        x[:, :1], t1, from_logits=True, ce_weight=1.0, ce_label_smoothing=0.2
      )
      - _oracle(x[:, :1], t1, from_logits=True),
      ce_s,
      places=12,
    )
    # Sigmoid BCE at x = 0: log 2 per element, masked pixel left out.
    x0 = np.zeros((1, 3, 1))
    g = np.array([[[1.0], [0.0], [1.0]]])
    keep = np.array([[True, True, False]])
    self.assertAlmostEqual(
      _oracle(x0, g, from_logits=True, where=keep, ce_weight=1.0)
      - _oracle(x0, g, from_logits=True, where=keep),
      np.log(2),
      places=12,
    )

  def test_defaults_equal_the_pel_oracle(self):
    # With no family option the family oracle is the PEL oracle.
    rng = np.random.default_rng(0)
    shape = (2, 5, 4, 3)
    x = reference.make_predictions(rng, shape, "softmax", np.float64)
    t = reference.make_targets(rng, shape, "int")
    keep = reference.make_mask(rng, shape)
    for kw in (
      dict(),
      dict(exponent=0.5, batch=True, ignore_index=1),
      dict(
        include_background=False,
        class_weights=(1.0, 2.0, 3.0),
        where=keep,
        reduction="none",
      ),
    ):
      np.testing.assert_allclose(
        reference_family.family_numpy(x, t, from_logits=True, **kw),
        reference.pel_numpy(x, t, from_logits=True, **kw),
        rtol=1e-13,
      )


if __name__ == "__main__":
  absltest.main()

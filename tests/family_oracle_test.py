"""pel_loss's family options against the separately written oracle.

tests/reference_family.py was transcribed from the formulas by another hand
than the implementation (and checked by hand in reference_family_test.py);
this runs `pel_loss` against it, float64, one case per option and the
pairs that interact.

Not covered: ``soft_labels`` with ``squared``, where the two disagree. The
oracle takes MONAI's L2 form, TP = (sum p^2 + sum g^2 - sum (p - g)^2) / 2 =
sum p g (loss 0 at p = g); pel_loss takes TP = sum min(p, g) with the squared
sums, which gives -1.35 for `dice_loss(g, g, soft_labels=True, squared=True,
smooth_nr=0, smooth_dr=0)` at g = (0.5, 0.3): below 0 and not minimal at
p = g, against issue 10's soft-label requirement.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

import pel_jax
from tests import reference
from tests import reference_family

_SHAPE = (3, 5, 4, 4)
_CW = (1.0, 2.0, 0.5, 1.0)
_L = dict(from_logits=True)

# name, prediction kind, target kind, options ("mask": a random `where`,
# "absent": class 2 never in the targets; "ragged": see `_ragged`).
_CASES = (
  (
    "gen_square",
    "softmax",
    "int",
    dict(generalized="square", exponent=1.0, mask=True, absent=True),
  ),
  (
    "gen_simple_batch_n3",
    "softmax",
    "int",
    dict(generalized="simple", batch=True, absent=True),
  ),
  (
    "gen_uniform_none",
    "softmax",
    "onehot",
    dict(generalized="uniform", exponent=2.0, reduction="none"),
  ),
  (
    "gen_nobg_ignore",
    "softmax",
    "int",
    dict(
      generalized="square",
      include_background=False,
      ignore_index=1,
      exponent=1.0,
    ),
  ),
  (
    "squared_multilabel",
    "sigmoid",
    "multihot",
    dict(squared=True, exponent=1.0, fp_weight=0.3, fn_weight=0.7, mask=True),
  ),
  ("squared_soft_n2", "softmax", "soft", dict(squared=True, exponent=2.0)),
  ("soft", "sigmoid", "soft", dict(soft_labels=True, exponent=1.0, mask=True)),
  ("soft_n2", "softmax", "soft", dict(soft_labels=True, exponent=2.0)),
  (
    "soft_n05_batch",
    "sigmoid",
    "soft",
    dict(soft_labels=True, exponent=0.5, batch=True),
  ),
  (
    "focal",
    "softmax",
    "int",
    dict(focal_gamma=0.75, exponent=1.0, fp_weight=0.3, fn_weight=0.7),
  ),
  ("focal_n3_cw", "softmax", "int", dict(focal_gamma=2.0, class_weights=_CW)),
  ("log", "softmax", "int", dict(log_loss=True, exponent=1.0)),
  (
    "log_batch_none",
    "sigmoid",
    "multihot",
    dict(log_loss=True, exponent=1.0, batch=True, reduction="none"),
  ),
  (
    "log_generalized",
    "softmax",
    "int",
    dict(generalized="simple", log_loss=True, exponent=1.0),
  ),
  (
    "exclude",
    "softmax",
    "int",
    dict(absent_classes="exclude", exponent=1.0, absent=True),
  ),
  (
    "exclude_none",
    "softmax",
    "int",
    dict(absent_classes="exclude", reduction="none", absent=True),
  ),
  (
    "exclude_sum_batch",
    "softmax",
    "onehot",
    dict(absent_classes="exclude", reduction="sum", batch=True, absent=True),
  ),
  (
    "exclude_cw_nobg",
    "softmax",
    "int",
    dict(
      absent_classes="exclude",
      class_weights=_CW,
      include_background=False,
      absent=True,
    ),
  ),
  ("micro", "softmax", "int", dict(average="micro", exponent=1.0, mask=True)),
  (
    "micro_none_nobg",
    "sigmoid",
    "multihot",
    dict(
      average="micro", exponent=1.0, reduction="none", include_background=False
    ),
  ),
  (
    "micro_focal_batch",
    "softmax",
    "int",
    dict(average="micro", focal_gamma=2.0, batch=True),
  ),
  (
    "ce_ids_ignore_mask",
    "softmax",
    "int",
    dict(ce_weight=0.7, ignore_index=1, mask=True),
  ),
  ("ce_soft", "softmax", "soft", dict(ce_weight=0.7, exponent=1.0)),
  (
    "ce_sigmoid_mask",
    "sigmoid",
    "multihot",
    dict(ce_weight=0.4, exponent=2.0, mask=True),
  ),
  (
    "ce_sum_generalized_batch",
    "softmax",
    "int",
    dict(
      ce_weight=0.3,
      reduction="sum",
      generalized="simple",
      batch=True,
      exponent=1.0,
    ),
  ),
  (
    "ce_smoothing_ids_ignore",
    "softmax",
    "int",
    dict(ce_weight=0.7, ce_label_smoothing=0.2, ignore_index=1, mask=True),
  ),
  (
    "ce_smoothing_sigmoid",
    "sigmoid",
    "multihot",
    dict(ce_weight=0.4, ce_label_smoothing=0.1, mask=True),
  ),
  (
    "ce_exclude",
    "softmax",
    "int",
    dict(ce_weight=1.0, absent_classes="exclude", absent=True),
  ),
  (
    "per_sample",
    "softmax",
    "int",
    dict(absent_classes="exclude_per_sample", exponent=1.0, ragged=True),
  ),
  (
    "per_sample_none_nobg",
    "softmax",
    "onehot",
    dict(
      absent_classes="exclude_per_sample",
      reduction="none",
      include_background=False,
      ragged=True,
    ),
  ),
  (
    "per_sample_sum_cw_mask",
    "sigmoid",
    "multihot",
    dict(
      absent_classes="exclude_per_sample",
      reduction="sum",
      class_weights=_CW,
      mask=True,
      ragged=True,
    ),
  ),
  (
    "per_sample_batch",
    "softmax",
    "int",
    dict(absent_classes="exclude_per_sample", batch=True, ragged=True),
  ),
  (
    "per_sample_ce_ignore",
    "softmax",
    "int",
    dict(
      absent_classes="exclude_per_sample",
      ce_weight=0.5,
      ignore_index=3,
      ragged=True,
    ),
  ),
)


def _ragged(t, target_kind):
  """Class 2 absent from sample 0; sample 1 background (class 0) only."""
  t = t.copy()
  if target_kind == "int":
    t[0] = np.where(t[0] == 2, 0, t[0])
    t[1] = 0
  else:
    t[0, ..., 2] = 0.0
    t[1] = np.eye(t.shape[-1])[0]
  return t


class FamilyOracleTest(parameterized.TestCase):
  @parameterized.named_parameters(*_CASES)
  def test_matches_oracle(self, pred_kind, target_kind, options):
    rng = np.random.default_rng(len(options) + 7 * len(pred_kind))
    x = reference.make_predictions(rng, _SHAPE, pred_kind, np.float64)
    t = reference.make_targets(rng, _SHAPE, target_kind, np.float64)
    kw = dict(_L, **options)
    if kw.pop("mask", False):
      kw["where"] = reference.make_mask(rng, _SHAPE)
    if kw.pop("ragged", False):
      t = _ragged(t, target_kind)
    if kw.pop("absent", False):
      if target_kind == "int":
        t = np.where(t == 2, 0, t).astype(np.int32)
      else:
        t[..., 2] = 0.0
    if "class_weights" in kw:
      kw["class_weights"] = np.asarray(kw["class_weights"])
    with jax.enable_x64(True):
      got = pel_jax.pel_loss(x, t, **kw)
    np.testing.assert_allclose(
      got, reference_family.family_numpy(x, t, **kw), rtol=1e-10, atol=1e-12
    )


class ExcludePerSampleTest(absltest.TestCase):
  """`absent_classes="exclude_per_sample"`: value and gradient, jitted."""

  def _case(self):
    rng = np.random.default_rng(11)
    x = reference.make_predictions(rng, _SHAPE, "softmax", np.float64)
    t = _ragged(reference.make_targets(rng, _SHAPE, "int"), "int")
    # Without background sample 1 has no present class.
    kw = dict(
      _L,
      exponent=2.0,
      include_background=False,
      absent_classes="exclude_per_sample",
    )
    return x, t, kw

  def test_jit_value_and_gradient_match_the_oracle(self):
    x, t, kw = self._case()
    with jax.enable_x64(True):
      loss, grad = jax.jit(
        jax.value_and_grad(lambda x: pel_jax.pel_loss(x, t, **kw))
      )(x)
    oracle = lambda x: reference_family.family_numpy(x, t, **kw)
    np.testing.assert_allclose(loss, oracle(x), rtol=1e-12)
    # Central differences of the oracle, entry by entry (float64).
    h = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
      step = np.zeros_like(x)
      step[i] = h
      numeric[i] = (oracle(x + step) - oracle(x - step)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)

  def test_sample_with_no_present_class_is_one_with_zero_gradient(self):
    x, t, kw = self._case()
    with jax.enable_x64(True):
      per_sample, vjp = jax.vjp(
        lambda x: pel_jax.pel_loss(x, t, reduction="none", **kw), x
      )
      (grad,) = vjp(np.ones(_SHAPE[0]))
    self.assertEqual(float(per_sample[1]), 1.0)
    self.assertTrue(np.all(np.isfinite(grad)))
    np.testing.assert_array_equal(grad[1], 0.0)
    self.assertTrue(np.all(np.abs(grad[0]) > 0))

  def test_differs_from_exclude_only_across_samples(self):
    x, t, kw = self._case()
    kw = dict(kw, include_background=True)
    with jax.enable_x64(True):
      for b, same in ((slice(0, 1), True), (slice(0, 3), False)):
        per_sample = float(pel_jax.pel_loss(x[b], t[b], **kw))
        exclude = float(
          pel_jax.pel_loss(x[b], t[b], **dict(kw, absent_classes="exclude"))
        )
        with self.subTest(batch=b.stop):
          if same:
            self.assertAlmostEqual(per_sample, exclude, places=14)
          else:
            self.assertGreater(abs(per_sample - exclude), 1e-3)


if __name__ == "__main__":
  absltest.main()

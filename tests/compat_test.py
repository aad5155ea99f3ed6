"""pel_jax against the Dice-family peers' own published test values.

The cases, their sources and the keyword mapping are in tests/compat_cases.py
(one mapping function per peer, the executable form of the README table
"Coming from another library"). The values are float64 here; the tolerance
of each case is its peer's own.
optax is a JAX library we depend on, so it is compared live.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import optax

import pel_jax
from tests import compat_cases

# The issue-10 keywords this branch's pel_loss has. The cases that need
# another one are not collected; `compat_cases.pending(AVAILABLE)` lists them.
AVAILABLE = frozenset(
  {
    "generalized",
    "squared",
    "soft_labels",
    "focal_gamma",
    "log_loss",
    "absent_classes",
    "average",
    "ce_weight",
    "ce_label_smoothing",
  }
)

_CASES = [c for c in compat_cases.all_cases() if c.needs <= AVAILABLE]


class PublishedValuesTest(parameterized.TestCase):
  @parameterized.named_parameters((c.name, c) for c in _CASES)
  def test_case(self, case):
    with jax.enable_x64(True):
      got = case.run()
    np.testing.assert_allclose(
      got,
      np.ravel(case.expected),
      rtol=case.rtol,
      atol=case.atol,
      err_msg=case.source,
    )

  def test_every_peer_has_collected_cases(self):
    prefixes = (
      "monai_DiceLoss",
      "monai_GeneralizedDiceLoss",
      "monai_TverskyLoss",
      "monai_MaskedDiceLoss",
      "monai_DiceCELoss",
      "smp_",
      "keras_",
      "nnunet_",
      "kornia_dice",
      "kornia_tversky",
    )
    for prefix in prefixes:
      self.assertTrue(any(c.name.startswith(prefix) for c in _CASES), prefix)


class ConventionsTest(absltest.TestCase):
  """The silent differences the mapping handles, each shown to matter."""

  def test_monai_smoothing_is_doubled(self):
    # MONAI DiceLoss TEST_CASES[1] (0.416657, smooth 1e-4) needs our s / 2:
    # passed through unchanged it is off by more than MONAI's tolerance.
    kw = dict(sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4)
    opts = compat_cases.monai_options("DiceLoss", kw, 1)
    opts.update(smooth_nr=1e-4, smooth_dr=1e-4)
    x = np.moveaxis(np.asarray(compat_cases._X2), 1, -1)
    y = np.moveaxis(np.asarray(compat_cases._Y2), 1, -1)
    with jax.enable_x64(True):
      wrong = float(pel_jax.pel_loss(x, y, **opts))
    self.assertGreater(abs(wrong - 0.416657), 1e-5 * 0.416657)

  def test_tversky_defaults_differ(self):
    # MONAI TverskyLoss TEST_CASES[0] (0.307576) uses MONAI's 0.5/0.5;
    # pel_jax.tversky_loss defaults to 0.3/0.7 and gives another number.
    x = np.moveaxis(np.asarray(compat_cases._X1), 1, -1)
    y = np.moveaxis(np.asarray(compat_cases._Y1), 1, -1)
    with jax.enable_x64(True):
      ours = float(
        pel_jax.tversky_loss(
          x, y, from_logits=True, smooth_nr=1e-6, smooth_dr=1e-6
        )
      )
      monai = float(
        pel_jax.tversky_loss(
          x,
          y,
          from_logits=True,
          fp_weight=0.5,
          fn_weight=0.5,
          smooth_nr=1e-6,
          smooth_dr=1e-6,
        )
      )
    np.testing.assert_allclose(monai, 0.307576, rtol=1e-5)
    self.assertGreater(abs(ours - 0.307576), 1e-3)

  def test_masking_before_the_activation_differs(self):
    # MONAI MaskedDiceLoss TEST_CASES[0] (0.5) masks logits before the
    # sigmoid; pel_jax's `where` drops the pixels: 1 - 2/3 instead.
    x = np.moveaxis(np.asarray(compat_cases._X1), 1, -1)
    y = np.moveaxis(np.asarray(compat_cases._Y1), 1, -1)
    where = np.array([[[False, False], [True, True]]])
    with jax.enable_x64(True):
      got = float(
        pel_jax.dice_loss(
          x, y, from_logits=True, where=where, smooth_nr=5e-7, smooth_dr=5e-7
        )
      )
    # Kept: p = sigmoid(-1), sigmoid(1), g = 1, 1: 2 * 1 / (1 + 2).
    np.testing.assert_allclose(got, 1.0 - 2.0 / 3.0, rtol=1e-5)


class OptaxLiveTest(parameterized.TestCase):
  """optax.losses.dice_loss, run: same smoothing form, per-sample mean."""

  @parameterized.parameters(
    dict(num_classes=1, kw=dict()),
    dict(num_classes=3, kw=dict(smooth=0.5)),
    dict(num_classes=4, kw=dict(alpha=0.3, beta=0.7, smooth=1e-3)),
    dict(
      num_classes=3,
      kw=dict(class_weights=(0.5, 1.0, 2.0), ignore_background=True),
    ),
  )
  def test_matches_optax(self, num_classes, kw):
    rng = np.random.default_rng(num_classes)
    x = rng.standard_normal((2, 5, 4, num_classes))
    if num_classes == 1:
      targets = (rng.uniform(size=x.shape) < 0.4).astype(np.float64)
    else:
      targets = np.eye(num_classes)[rng.integers(0, num_classes, x.shape[:-1])]
    opts = dict(
      exponent=1.0,
      from_logits=True,
      reduction="none",
      fp_weight=kw.get("alpha", 0.5),
      fn_weight=kw.get("beta", 0.5),
      smooth_nr=kw.get("smooth", 1.0),
      smooth_dr=kw.get("smooth", 1.0),
      include_background=not kw.get("ignore_background", False),
    )
    if "class_weights" in kw:
      opts["class_weights"] = np.asarray(kw["class_weights"])
    optax_kw = {
      k: (np.asarray(v) if k == "class_weights" else v) for k, v in kw.items()
    }
    with jax.enable_x64(True):
      expected = optax.losses.dice_loss(
        x, targets, reduction="none", **optax_kw
      )
      got = pel_jax.pel_loss(x, targets, **opts)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


if __name__ == "__main__":
  absltest.main()

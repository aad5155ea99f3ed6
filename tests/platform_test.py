"""Per-platform layouts of the core: CPU-tuned on the CPU, plain elsewhere.

Both forms run on the CPU here: the plain one by emptying
`_layout_cpu._TUNED_PLATFORMS`, as a GPU or TPU lowering would choose it. Values
are checked against the float64 oracle and gradients against autodiff of the
plain-jnp reference (tests/reference.py); lowering for cuda/tpu is checked to
pick the plain form.
"""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from pel_jax import _core
from pel_jax import _layout_cpu
from tests import reference
from tests import reference_family

# name, prediction shape, prediction kind, target kind, options. Sizes past
# 16 rows (with remainders) exercise the staged sums of the CPU form.
_CASES = (
  (
    "softmax_int_n3",
    (2, 5, 4, 8),
    "softmax",
    "int",
    dict(exponent=3.0, from_logits=True),
  ),
  (
    "softmax_int_n05_batch_mask_3d",
    (2, 3, 4, 3, 3),
    "softmax",
    "int",
    dict(exponent=0.5, from_logits=True, batch=True, mask=True, ignore_index=2),
  ),
  (
    "sigmoid_binary_n3_batch",
    (2, 20, 21, 1),
    "sigmoid",
    "multihot",
    dict(exponent=3.0, from_logits=True, batch=True),
  ),
  (
    "probs_soft_n1p7_mask",
    (2, 5, 4, 3),
    "probs",
    "soft",
    dict(exponent=1.7, mask=True, fp_weight=0.3, fn_weight=0.7),
  ),
  # Between _FUSED_SLICES and _UNROLL_CLASSES: the CPU form slices the
  # logits for the log-sum-exp and the labelled class's log p.
  (
    "softmax_int_n3_mask_21_classes",
    (2, 3, 4, 21),
    "softmax",
    "int",
    dict(exponent=3.0, from_logits=True, mask=True, ignore_index=4),
  ),
  (
    "softmax_int_n2p5_batch_16_classes",
    (2, 3, 4, 16),
    "softmax",
    "int",
    dict(exponent=2.5, from_logits=True, batch=True),
  ),
  # Past _UNROLL_CLASSES: folded in halves, with odd widths (37, 9).
  (
    "softmax_int_n3_37_classes",
    (2, 3, 4, 37),
    "softmax",
    "int",
    dict(exponent=3.0, from_logits=True),
  ),
  (
    "softmax_soft_n05_37_classes",
    (2, 3, 2, 37),
    "softmax",
    "soft",
    dict(exponent=0.5, from_logits=True, batch=True),
  ),
)
_FORMS = (("cpu_tuned", False), ("plain", True))


def _inputs(shape, pred_kind, target_kind, mask):
  rng = np.random.default_rng(0)
  x = reference.make_predictions(rng, shape, pred_kind)
  t = reference.make_targets(rng, shape, target_kind)
  return x, t, reference.make_mask(rng, shape) if mask else None


def _plain_form(forced: bool):
  """Context in which the core lowers its plain form on the CPU too."""
  return mock.patch.object(
    _layout_cpu,
    "_TUNED_PLATFORMS",
    () if forced else _layout_cpu._TUNED_PLATFORMS,
  )


class BothFormsTest(parameterized.TestCase):
  @parameterized.product(case=_CASES, form=_FORMS)
  def test_value_and_gradient_match_references(self, case, form):
    _, shape, pk, tk, options = case
    options = dict(options)
    x, t, m = _inputs(shape, pk, tk, options.pop("mask", False))
    options["where"] = m
    with _plain_form(form[1]):
      loss, grad = jax.jit(
        jax.value_and_grad(lambda x: pel_jax.pel_loss(x, t, **options))
      )(x)
    np.testing.assert_allclose(
      float(loss), reference.pel_numpy(x, t, **options), rtol=1e-5
    )
    expected = jax.grad(lambda x: reference.pel_jnp(x, t, **options))(x)
    np.testing.assert_allclose(grad, expected, rtol=2e-4, atol=1e-6)

  @parameterized.named_parameters(*_FORMS)
  def test_forward_over_reverse(self, forced):
    x, t, _ = _inputs((2, 6, 5, 3), "softmax", "soft", False)
    v = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    opts = dict(exponent=2.0, from_logits=True)
    hvp = lambda f: jax.jvp(jax.grad(f), (x,), (v,))[1]
    with _plain_form(forced):
      got = jax.jit(lambda: hvp(lambda x: pel_jax.pel_loss(x, t, **opts)))()
    expected = hvp(lambda x: reference.pel_jnp(x, t, **opts))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)


# Between _FUSED_SLICES and _UNROLL_CLASSES the CPU backward sums p dL/dp
# over the classes per class slice of p, and the cross-entropy reads the
# labelled class's log p from the selected logit: every option that enters
# either, with ids outside [0, C) (no class) and -1 ignored.
_SLICED_CASES = (
  ("squared_n2_mask", dict(squared=True, exponent=2.0, mask=True)),
  (
    "ce_smoothing_n05",
    dict(ce_weight=0.7, ce_label_smoothing=0.2, exponent=0.5),
  ),
  (
    "n1_generalized_batch",
    dict(exponent=1.0, generalized="simple", batch=True),
  ),
  ("ce_n1_squared", dict(ce_weight=0.4, exponent=1.0, squared=True, mask=True)),
  # Integer n: p^n of every entry, no selection (`_powers_each_entry`).
  ("n3_batch_mask", dict(exponent=3.0, batch=True, mask=True)),
  ("n2_focal", dict(exponent=2.0, focal_gamma=2.0)),
)


class SlicedClassSumTest(parameterized.TestCase):
  @parameterized.product(case=_SLICED_CASES, form=_FORMS)
  def test_value_and_gradient_match_oracle(self, case, form):
    rng = np.random.default_rng(3)
    shape = (2, 2, 3, 17)
    x = reference.make_predictions(rng, shape, "softmax", np.float64)
    t = rng.integers(-1, 19, shape[:-1]).astype(np.int32)
    kw = dict(case[1], from_logits=True, ignore_index=-1)
    if kw.pop("mask", False):
      kw["where"] = reference.make_mask(rng, shape)
    with jax.enable_x64(True), _plain_form(form[1]):
      loss, grad = jax.jit(
        jax.value_and_grad(lambda x: pel_jax.pel_loss(x, t, **kw))
      )(x)
    np.testing.assert_allclose(
      loss, reference_family.family_numpy(x, t, **kw), rtol=1e-10
    )
    # Central differences of the float64 oracle.
    expected = np.zeros(shape)
    h = 1e-6
    for i in np.ndindex(shape):
      step = np.zeros(shape)
      step[i] = h
      expected[i] = (
        reference_family.family_numpy(x + step, t, **kw)
        - reference_family.family_numpy(x - step, t, **kw)
      ) / (2 * h)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


class ClassReductionTest(parameterized.TestCase):
  @parameterized.product(
    width=(1, 2, 3, 8, 24, 25, 37, 64, 100), forced=(False, True)
  )
  def test_sum_and_max_over_classes(self, width, forced):
    x = np.random.default_rng(width).standard_normal((3, 2, width))
    x = x.astype(np.float32)
    with _plain_form(forced):
      total, peak = jax.jit(
        lambda x: (
          _layout_cpu._reduce_classes(jnp.add, x),
          _layout_cpu._reduce_classes(jnp.maximum, x),
        )
      )(x)
    self.assertEqual(total.shape, (3, 2, 1))
    np.testing.assert_allclose(
      total[..., 0], x.astype(np.float64).sum(-1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(peak[..., 0], x.max(-1))


def _count(fn, args, platform, op):
  """Occurrences of `op` in `fn(*args)` lowered for `platform`."""
  # A fresh function each time: jit's trace cache would ignore the patch.
  text = (
    jax.jit(lambda *a: fn(*a))
    .trace(*args)
    .lower(lowering_platforms=(platform,))
    .as_text()
  )
  return text.count(op)


class LoweringTest(parameterized.TestCase):
  @parameterized.parameters("cuda", "tpu")
  def test_accelerators_get_plain_sums(self, platform):
    # Staged on the CPU; one reduce per sum on GPU (and for the plain form
    # on the CPU), one variadic reduce over the pixels on TPU
    # (_layout_accel.region_sums), and the batch axis summed apart there,
    # one reduce per sum.
    x = jnp.ones((2, 40, 40, 3))
    pixels = lambda x: _layout_cpu._sum_together((1, 2), x, 2 * x)
    with_batch = lambda x: _layout_cpu._sum_together((0, 1, 2), x, 2 * x)
    for fn, on_tpu in ((pixels, 1), (with_batch, 3)):
      self.assertGreater(_count(fn, (x,), "cpu", "stablehlo.reduce"), 2)
      expected = on_tpu if platform == "tpu" else 2
      self.assertEqual(_count(fn, (x,), platform, "stablehlo.reduce"), expected)
      with _plain_form(True):
        self.assertEqual(_count(fn, (x,), "cpu", "stablehlo.reduce"), 2)

  @parameterized.product(platform=("cuda", "tpu"), classes=(8, 37))
  def test_accelerators_get_a_class_reduce(self, platform, classes):
    x = jnp.ones((2, 4, 4, classes))
    fn = lambda x: _layout_cpu._reduce_classes(jnp.add, x)
    self.assertEqual(_count(fn, (x,), "cpu", "stablehlo.reduce"), 0)
    self.assertEqual(_count(fn, (x,), platform, "stablehlo.reduce"), 1)
    with _plain_form(True):
      self.assertEqual(_count(fn, (x,), "cpu", "stablehlo.reduce"), 1)

  @parameterized.product(platform=("cuda", "tpu"), classes=(8, 21))
  def test_accelerators_get_a_softmax_reduce(self, platform, classes):
    # The label's log p by a plain class reduce too (21: the CPU's per-slice
    # selection of the logits; n = 2.5, as an integer n takes p^n of every
    # entry there and selects nothing).
    x = jnp.ones((2, 4, 4, classes))
    t = jnp.zeros((2, 4, 4), jnp.int32)
    fn = lambda x, t: (
      _core._pixel_terms(
        _core.StatsConfig(2.5, "softmax", False, None), x, t, None
      ).p_sel
    )
    # Class max, sum of exp, label selection.
    self.assertEqual(_count(fn, (x, t), platform, "stablehlo.reduce"), 3)
    self.assertEqual(_count(fn, (x, t), "cpu", "stablehlo.reduce"), 0)

  @parameterized.product(platform=("cuda", "tpu"), classes=(8, 21))
  def test_accelerators_get_a_backward_class_sum(self, platform, classes):
    # The backward's sum of p dL/dp over the classes by a plain reduce too
    # (21: the CPU's per-slice sum from p).
    x = jnp.ones((2, 4, 4, classes))
    t = jnp.zeros((2, 4, 4), jnp.int32)
    cfg = _core.StatsConfig(2.5, "softmax", False, None)
    ones = jnp.ones((2, 1, 1, classes))
    ct = _core.RegionStats(ones, ones, ones, ones)

    def fn(x, t):
      px = _core._pixel_terms(cfg, x, t, None)
      u = _core._softmax_u(cfg, ct, px.p, px.g, px.hit, (px.p_n,))
      return _core._softmax_total(cfg, ct, px, t, u)

    # Class max, sum of exp, label selection, and the backward's sum.
    self.assertEqual(_count(fn, (x, t), platform, "stablehlo.reduce"), 4)
    self.assertEqual(_count(fn, (x, t), "cpu", "stablehlo.reduce"), 0)

  @parameterized.parameters(4, 21)
  def test_cpu_program_has_no_runtime_branch(self, classes):
    """Lowered for one platform, the choice leaves no conditional in XLA."""
    x, t, _ = _inputs((2, 8, 8, classes), "softmax", "int", False)
    f = jax.jit(jax.grad(lambda x: pel_jax.pel_loss(x, t, from_logits=True)))
    self.assertNotIn("conditional", f.lower(x).compile().as_text())


class ValueOnlyTest(parameterized.TestCase):
  """A call with no backward reduces over 8+ classes with plain reduces."""

  @parameterized.product(classes=(4, 8, 16, 21, 37), target=("int", "soft"))
  def test_value_matches_oracle_and_value_and_grad(self, classes, target):
    x, t, m = _inputs((2, 5, 4, classes), "softmax", target, True)
    opts = dict(exponent=2.5, from_logits=True, where=m)
    loss = lambda x: pel_jax.pel_loss(x, t, **opts)
    value = jax.jit(loss)(x)
    with_grad, _ = jax.jit(jax.value_and_grad(loss))(x)
    np.testing.assert_allclose(
      float(value), reference.pel_numpy(x, t, **opts), rtol=1e-5
    )
    np.testing.assert_allclose(float(value), float(with_grad), rtol=1e-6)

  def _reduces(self, fn, x):
    return _count(fn, (x,), "cpu", "stablehlo.reduce")

  @parameterized.parameters(8, 21)
  def test_only_the_value_only_program_changes(self, classes):
    x, t, _ = _inputs((2, 5, 4, classes), "softmax", "int", False)
    # (n = 2.5: with an integer n, 21 classes select no label.)
    loss = lambda x: pel_jax.pel_loss(x, t, exponent=2.5, from_logits=True)
    tuned = mock.patch.object(_layout_cpu, "_VALUE_ONLY_PLAIN_CLASSES", 10**9)
    # Value only: the class max, sum of exps and label selection become
    # reduces; with a backward the program is the tuned one either way.
    plain_value, plain_grad = (
      self._reduces(loss, x),
      self._reduces(jax.grad(loss), x),
    )
    with tuned:
      tuned_value = self._reduces(loss, x)
      tuned_grad = self._reduces(jax.grad(loss), x)
    self.assertGreaterEqual(plain_value - tuned_value, 3)
    self.assertEqual(plain_grad, tuned_grad)


if __name__ == "__main__":
  absltest.main()

"""The Dice-family options of `pel_loss` (issue 10) against a float64 oracle.

The oracle, `tests.reference_family.family_numpy`, is written from the
formulas in the issue and the papers (Sudre et al. 2017 for generalized Dice,
MONAI's rule for absent classes, Milletari et al. 2016 for squared
denominators, Wang et al. 2023 (JDTLoss) for the L1 soft-label form), not from
the library code.
"""

from __future__ import annotations

from absl.testing import absltest
from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax

import pel_jax
from tests import reference
from tests.reference_family import family_numpy

# Each option (and a few pairs) with the settings they interact with.
_OPTIONS = (
  ("plain", {}),
  ("generalized_square", dict(generalized="square")),
  ("generalized_simple_batch", dict(generalized="simple", batch=True)),
  (
    "generalized_uniform_nobg",
    dict(generalized="uniform", include_background=False),
  ),
  ("micro", dict(average="micro", exponent=1.0, fp_weight=0.5, fn_weight=0.5)),
  ("squared", dict(squared=True, fp_weight=0.5, fn_weight=0.5)),
  ("squared_generalized", dict(squared=True, generalized="square")),
  ("soft_labels", dict(soft_labels=True)),
  (
    "soft_labels_n1_dice",
    dict(soft_labels=True, exponent=1.0, fp_weight=0.5, fn_weight=0.5),
  ),
  ("soft_labels_n_half", dict(soft_labels=True, exponent=0.5)),
  (
    "soft_labels_batch_cw",
    dict(soft_labels=True, batch=True, class_weights=(0.5, 1.0, 2.0)),
  ),
  ("focal", dict(focal_gamma=0.75, fp_weight=0.3, fn_weight=0.7)),
  (
    "focal_batch_cw",
    dict(focal_gamma=2.0, batch=True, class_weights=(0.5, 1.0, 2.0)),
  ),
  # Smoothing 0.01: with an absent class, -log((N + 1e-5) / (D + 1e-5))
  # curves too fast for finite differences.
  ("log", dict(log_loss=True, exponent=1.0, smooth_nr=0.01, smooth_dr=0.01)),
  ("log_generalized", dict(log_loss=True, generalized="simple")),
  ("exclude", dict(absent_classes="exclude")),
  (
    "exclude_batch_sum",
    dict(absent_classes="exclude", batch=True, reduction="sum"),
  ),
  (
    "exclude_none_cw",
    dict(
      absent_classes="exclude", reduction="none", class_weights=(0.5, 1.0, 2.0)
    ),
  ),
  ("generalized_none", dict(generalized="square", reduction="none")),
  ("ce", dict(ce_weight=0.7)),
  (
    "ce_sum_generalized_batch",
    dict(ce_weight=0.3, reduction="sum", generalized="simple", batch=True),
  ),
  # Label smoothing; in this order check_grads (rotating over _INPUTS[1:])
  # runs it on softmax ids, sigmoid soft targets and softmax soft targets
  # (d/dg included).
  ("ce_smoothing", dict(ce_weight=0.7, ce_label_smoothing=0.1)),
  (
    "ce_smoothing_sum",
    dict(ce_weight=0.4, ce_label_smoothing=0.25, reduction="sum"),
  ),
  (
    "ce_smoothing_batch_n1",
    dict(ce_weight=0.5, ce_label_smoothing=0.3, batch=True, exponent=1.0),
  ),
  ("exclude_per_sample", dict(absent_classes="exclude_per_sample")),
  (
    "exclude_per_sample_none_cw",
    dict(
      absent_classes="exclude_per_sample",
      reduction="none",
      class_weights=(0.5, 1.0, 2.0),
    ),
  ),
  (
    "exclude_per_sample_sum_nobg",
    dict(
      absent_classes="exclude_per_sample",
      reduction="sum",
      include_background=False,
    ),
  ),
  (
    "exclude_per_sample_batch_none",
    dict(absent_classes="exclude_per_sample", batch=True, reduction="none"),
  ),
  (
    "exclude_per_sample_ce",
    dict(absent_classes="exclude_per_sample", ce_weight=0.5, exponent=1.0),
  ),
)

# Inputs: (predictions kind, targets kind, with a mask). Class 2 is absent
# from sample 0 in every case (so "exclude" and MONAI's weight rule bite).
_INPUTS = (
  ("probs", "onehot", False),
  ("softmax", "int", True),
  ("sigmoid", "soft", False),
  ("softmax", "soft", True),
)


def make_case(
  pred_kind, target_kind, masked, shape=(2, 4, 3, 3), seed=0, dtype=np.float64
):
  rng = np.random.default_rng(seed)
  x = reference.make_predictions(rng, shape, pred_kind, dtype)
  t = reference.make_targets(rng, shape, target_kind, dtype)
  if target_kind == "int":
    t[0] = np.where(t[0] == 2, 1, t[0])
  else:
    t[0, ..., 2] = 0
  kw = {}
  if pred_kind != "probs":
    kw = dict(from_logits=True, activation=pred_kind)
  if masked:
    kw["where"] = reference.make_mask(rng, shape, 0.8)
  return x, t, kw


class X64TestCase(parameterized.TestCase):
  """Runs each test with float64 enabled (the oracle's precision)."""

  def setUp(self):
    super().setUp()
    self.enter_context(jax.enable_x64(True))


class OracleTest(X64TestCase):
  @parameterized.named_parameters(*_OPTIONS)
  def test_matches_float64_oracle(self, options):
    for pred_kind, target_kind, masked in _INPUTS:
      x, t, kw = make_case(pred_kind, target_kind, masked)
      kw = {**kw, **options}
      with self.subTest(f"{pred_kind}-{target_kind}-{masked}"):
        if "ce_weight" in kw and pred_kind == "probs":
          with self.assertRaisesRegex(ValueError, "ce_weight.*from_logits"):
            pel_jax.pel_loss(x, t, **kw)
          continue
        got = pel_jax.pel_loss(x, t, **kw)
        want = family_numpy(x, t, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)

  @parameterized.named_parameters(
    (name, options, _INPUTS[1 + i % 3])
    for i, (name, options) in enumerate(_OPTIONS)
  )
  def test_check_grads_float64(self, options, inputs):
    # One input kind per option, rotating (logits keep p away from 0).
    pred_kind, target_kind, masked = inputs
    x, t, kw = make_case(pred_kind, target_kind, masked, seed=1)
    kw = {**kw, **options}
    if options.get("reduction") == "none":
      fn = lambda x, t: jnp.sum(pel_jax.pel_loss(x, t, **kw) ** 2)
    else:
      fn = lambda x, t: pel_jax.pel_loss(x, t, **kw)
    # Generalized weights and class presence are functions of the targets
    # without a gradient (by design): those check d/dpredictions only.
    by_targets = target_kind != "int" and not (
      {"generalized", "average", "absent_classes"} & set(options)
    )
    if by_targets:
      check_grads(fn, (x, t), order=1, modes=("rev",), eps=1e-6)
    else:
      check_grads(lambda x: fn(x, t), (x,), order=1, modes=("rev",), eps=1e-6)


class SoftLabelsTest(X64TestCase):
  def test_hard_labels_unchanged(self):
    # For 0/1 targets min(p, g) = p g and g min(p/g, 1)^n = p^n g.
    x, t, kw = make_case("sigmoid", "multihot", False)
    for n in (1.0, 2.5):
      a = pel_jax.pel_loss(x, t, exponent=n, soft_labels=True, **kw)
      b = pel_jax.pel_loss(x, t, exponent=n, **kw)
      np.testing.assert_allclose(a, b, rtol=1e-12)

  def test_l1_form_equals_published_tp(self):
    # MONAI/JDTLoss soft-label TP: (sum p + sum g - sum |p - g|) / 2.
    x, t, _ = make_case("probs", "soft", False)
    stats = pel_jax.region_stats(x, t, soft_labels=True, exponent=1.0)
    want = (
      np.sum(x, (1, 2)) + np.sum(t, (1, 2)) - np.sum(np.abs(x - t), (1, 2))
    ) / 2
    np.testing.assert_allclose(stats.tp, want, rtol=1e-12)
    np.testing.assert_allclose(stats.numer, want, rtol=1e-12)

  @parameterized.product(
    n=(0.5, 1.3, 2.5), pred_kind=("probs", "sigmoid", "softmax")
  )
  def test_non_integer_exponents(self, n, pred_kind):
    # Half-integer n takes sqrt(r)^(2n), other n exp(n log r) (see
    # `_soft_labels._soft_power`): both against the oracle's min(p/g, 1)^n, with
    # their derivatives (d/dp and d/dg) by finite differences.
    x, t, kw = make_case(pred_kind, "soft", pred_kind == "softmax", seed=2)
    if pred_kind == "probs":
      x[0, 0, 0] = 0.0  # p = 0 below g: r = 0.
    kw = dict(kw, soft_labels=True, exponent=n)
    np.testing.assert_allclose(
      pel_jax.pel_loss(x, t, **kw),
      family_numpy(x, t, **kw),
      rtol=1e-10,
      atol=1e-12,
    )
    x[0, 0, 0] = 0.3 if pred_kind == "probs" else x[0, 0, 0]
    fn = lambda x, t: pel_jax.pel_loss(x, t, **kw)
    check_grads(fn, (x, t), order=1, modes=("rev",), eps=1e-6)

  @parameterized.parameters(0.5, 1.3, 2.5)
  def test_non_integer_exponents_finite_at_extremes(self, n):
    # p = 0 or 1, g = 0 or tiny, logits of +-1e4: values, gradients and
    # second derivatives (the backward differentiated) stay finite.
    rng = np.random.default_rng(0)
    shape = (2, 3, 3, 3)
    t = rng.choice([0.0, 1e-30, 0.4, 1.0], shape)
    t[0, 0, 0, 0] = 1e-300  # with p = 1 there, (p / g)^1.3 overflows.
    for pred_kind, x in (
      ("probs", rng.choice([0.0, 1e-30, 0.5, 1.0], shape)),
      ("sigmoid", rng.choice([-1e4, -30.0, 0.0, 30.0, 1e4], shape)),
      ("softmax", rng.choice([-1e4, -30.0, 0.0, 30.0, 1e4], shape)),
    ):
      x[0, 0, 0] = (1.0, 0.0, 0.0) if pred_kind == "probs" else (1e4, 0, 0)
      kw = dict(soft_labels=True, exponent=n)
      if pred_kind != "probs":
        kw.update(from_logits=True, activation=pred_kind)
      fn = lambda x, t, kw=kw: pel_jax.pel_loss(x, t, **kw)
      with self.subTest(pred_kind):
        loss, grads = jax.value_and_grad(fn, (0, 1))(x, t)
        second = jax.grad(lambda x: jnp.sum(jax.grad(fn)(x, t) ** 2))(x)
        for value in (loss, *grads, second):
          self.assertTrue(np.all(np.isfinite(value)))

  @hypothesis.settings(max_examples=40, deadline=None)
  @hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([1.0, 1.5, 2.0, 2.7, 3.0]),
    weights=st.sampled_from([(0.5, 0.5), (1.0, 1.0), (0.3, 0.7), (0.0, 0.0)]),
  )
  def test_minimum_exactly_at_p_equals_g(self, seed, n, weights):
    # For soft targets g and n >= 1, L(p) >= L(g) = 0 for every p, and the
    # gradient vanishes at p = g from the side the ratio can move.
    rng = np.random.default_rng(seed)
    shape = (1, 6, 1, 2)
    g = rng.uniform(0.05, 0.95, shape)
    kw = dict(
      soft_labels=True,
      exponent=n,
      fp_weight=weights[0],
      fn_weight=weights[1],
      smooth_nr=1e-5,
      smooth_dr=1e-5,
    )
    # One call for g and five perturbations of it: with reduction="none",
    # each sample's mean over classes is its own loss (batch=False).
    p = np.clip(g + rng.normal(0, 0.2, (5, *shape[1:])), 0.0, 1.0)
    losses = pel_jax.pel_loss(
      np.concatenate([g, p]), np.repeat(g, 6, 0), reduction="none", **kw
    ).mean(-1)
    at_g = float(losses[0])
    self.assertAlmostEqual(at_g, 0.0, places=12)
    for loss in losses[1:]:
      self.assertGreaterEqual(float(loss), at_g - 1e-12)

  @parameterized.parameters(1.0, 2.0)
  def test_zero_weight_makes_an_error_free(self, n):
    # The docstring's caveat: with fp_weight = 0 every p >= g reaches the
    # minimum (TP = sum g, FN = 0, N = sum g), not only p = g.
    rng = np.random.default_rng(3)
    g = rng.uniform(0.05, 0.95, (1, 6, 1, 2))
    p = g + (1 - g) * rng.uniform(0.2, 1.0, g.shape)  # p > g everywhere
    kw = dict(soft_labels=True, exponent=n, fp_weight=0.0, fn_weight=0.5)
    self.assertAlmostEqual(float(pel_jax.pel_loss(p, g, **kw)), 0.0, 12)
    kw["fp_weight"] = 0.5  # Both weights > 0: the minimum is at p = g only.
    self.assertGreater(float(pel_jax.pel_loss(p, g, **kw)), 1e-3)


class FocalNegativeLossTest(X64TestCase):
  """`focal_gamma` where a per-class loss is below 0 (ratio above 1)."""

  def _perfect_with_empty_class(self):
    # Class 0 everywhere, predicted exactly; class 1 empty and unpredicted.
    # With smooth_nr = 2, smooth_dr = 1 over P = 6 pixels: class 0 has
    # R = (6 + 2) / (6 + 1), L = -1/7; class 1 has R = 2 / 1, L = -1.
    p = np.zeros((1, 2, 3, 2))
    p[..., 0] = 1.0
    return p, p.copy(), dict(smooth_nr=2.0, smooth_dr=1.0)

  def test_hand_computed_values(self):
    p, g, kw = self._perfect_with_empty_class()
    plain = float(pel_jax.pel_loss(p, g, **kw))
    self.assertAlmostEqual(plain, (-1 / 7 - 1) / 2, places=12)
    # gamma = 1 is the plain loss (it was clamped to 0 before).
    self.assertAlmostEqual(
      float(pel_jax.pel_loss(p, g, focal_gamma=1.0, **kw)), plain, places=12
    )
    # sign(L) |L|^gamma, per class, then the mean.
    for gamma in (0.5, 2.0, 3.0):
      want = (-((1 / 7) ** gamma) - 1) / 2
      got = float(pel_jax.pel_loss(p, g, focal_gamma=gamma, **kw))
      self.assertAlmostEqual(got, want, places=12, msg=f"gamma={gamma}")

  @parameterized.parameters(0.5, 2.0)
  def test_n_below_one_with_small_fn_weight(self, gamma):
    # PEL with n = 0.5 and fn_weight = 0: N = sum sqrt(p) g exceeds
    # D = 0.5 TP + 0.5 sum p when little mass falls outside the class, so
    # every L_c < 0, away from 0:
    # the oracle's value and finite differences of the gradient.
    rng = np.random.default_rng(5)
    g = np.eye(3)[rng.permuted(np.arange(18).reshape(2, 3, 3) % 3, axis=1)]
    p = np.where(g > 0, rng.uniform(0.05, 0.6, g.shape), 0.01)
    kw = dict(exponent=0.5, fp_weight=0.5, fn_weight=0.0, focal_gamma=gamma)
    per_class = pel_jax.pel_loss(
      p, g, **{**kw, "focal_gamma": None, "reduction": "none"}
    )
    self.assertTrue(np.all(np.asarray(per_class) < -0.1))
    np.testing.assert_allclose(
      pel_jax.pel_loss(p, g, **kw), family_numpy(p, g, **kw), rtol=1e-12
    )
    check_grads(
      lambda x: pel_jax.pel_loss(x, g, **kw), (p,), order=1, modes=("rev",)
    )


class ValidationTest(parameterized.TestCase):
  @parameterized.parameters(
    (dict(generalized="squared"), ValueError, "generalized"),
    (dict(average="weighted"), ValueError, "average"),
    (dict(absent_classes="drop"), ValueError, "absent_classes"),
    (dict(generalized="square", average="micro"), ValueError, "micro"),
    (
      dict(generalized="square", class_weights=(1.0, 2.0, 3.0)),
      ValueError,
      "class_weights",
    ),
    (
      dict(average="micro", absent_classes="exclude"),
      ValueError,
      "absent_classes",
    ),
    (
      dict(generalized="simple", absent_classes="exclude_per_sample"),
      ValueError,
      "absent_classes='exclude_per_sample'.*generalized='simple'",
    ),
    (dict(absent_classes="per_sample"), ValueError, "exclude_per_sample"),
    (dict(log_loss=True, scale=2.0), ValueError, "log_loss"),
    (dict(focal_gamma=2.0, scale=20.0), ValueError, "focal_gamma"),
    (dict(focal_gamma=0.0), ValueError, "focal_gamma"),
    (dict(focal_gamma=2.0, log_loss=True), ValueError, "log_loss"),
    (dict(squared=np.array(True)), TypeError, "squared"),
    (dict(soft_labels="yes"), TypeError, "soft_labels"),
    (dict(log_loss=None), TypeError, "log_loss"),
    (dict(ce_weight=0.5), ValueError, "from_logits"),
    (dict(soft_labels=True, squared=True), ValueError, "soft_labels"),
    (dict(ce_weight=-1.0), ValueError, "ce_weight"),
    (
      dict(ce_label_smoothing=0.1),
      ValueError,
      "ce_label_smoothing=0.1.*ce_weight=0.0",
    ),
    (dict(ce_weight=0.5, ce_label_smoothing=1.0), ValueError, r"\[0, 1\)"),
    (dict(ce_weight=0.5, ce_label_smoothing=-0.1), ValueError, "smoothing"),
    (
      dict(ce_weight=0.5, ce_label_smoothing=np.array(0.1)),
      TypeError,
      "ce_label_smoothing",
    ),
  )
  def test_bad_options_raise(self, options, error, name):
    x, t, _ = make_case("probs", "onehot", False)
    with self.assertRaisesRegex(error, name):
      pel_jax.pel_loss(x, t, **options)


class CrossEntropyTest(X64TestCase):
  """`ce_weight`: pel + weight x optax's cross-entropy over kept pixels."""

  def test_integer_labels_with_ignore_index_and_mask(self):
    x, t, kw = make_case("softmax", "int", True, shape=(2, 5, 4, 3))
    where = kw.pop("where")
    t = np.where(where, t, 255)
    fused = lambda x: pel_jax.pel_loss(
      x, t, ce_weight=0.7, ignore_index=255, **kw
    )

    def apart(x):
      ce = optax.softmax_cross_entropy_with_integer_labels(
        x, np.where(where, t, 0)
      )
      return pel_jax.pel_loss(x, t, ignore_index=255, **kw) + 0.7 * jnp.sum(
        jnp.where(where, ce, 0)
      ) / np.sum(where)

    np.testing.assert_allclose(fused(x), apart(x), rtol=1e-13)
    np.testing.assert_allclose(
      jax.grad(fused)(x), jax.grad(apart)(x), rtol=1e-10, atol=1e-16
    )

  def test_soft_targets_softmax_and_sigmoid(self):
    x, t, kw = make_case("softmax", "soft", False, shape=(2, 5, 4, 3))
    for activation, ce_fn in (
      ("softmax", optax.softmax_cross_entropy),
      ("sigmoid", optax.sigmoid_binary_cross_entropy),
    ):
      kw = dict(from_logits=True, activation=activation)
      fused = lambda x, t: pel_jax.pel_loss(x, t, ce_weight=0.5, **kw)
      apart = lambda x, t: (
        pel_jax.pel_loss(x, t, **kw) + 0.5 * jnp.mean(ce_fn(x, t))
      )
      with self.subTest(activation):
        np.testing.assert_allclose(fused(x, t), apart(x, t), rtol=1e-13)
        for a, b in zip(
          jax.grad(fused, (0, 1))(x, t), jax.grad(apart, (0, 1))(x, t)
        ):
          np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-16)

  def test_label_smoothing_equals_optax(self):
    # pel + lam * optax CE of optax.smooth_labels(g, eps) over kept pixels;
    # sigmoid: optax's BCE of (1 - eps) g + eps / 2 (Keras).
    x, ids, kw = make_case("softmax", "int", True, shape=(2, 5, 4, 3))
    where = kw.pop("where")
    ids = np.where(where, ids, 255)
    _, soft, _ = make_case("softmax", "soft", False, shape=(2, 5, 4, 3))
    eps, lam = 0.2, 0.7
    onehot = jax.nn.one_hot(ids, 3)  # Zero rows at ignored pixels.
    for name, t, activation, kept, ce_fn in (
      (
        "ids",
        ids,
        "softmax",
        where[..., None],
        lambda x, t: optax.softmax_cross_entropy(
          x, optax.smooth_labels(onehot, eps)
        )[..., None],
      ),
      (
        "soft",
        soft,
        "softmax",
        np.ones_like(where[..., None]),
        lambda x, t: optax.softmax_cross_entropy(
          x, optax.smooth_labels(t, eps)
        )[..., None],
      ),
      (
        "sigmoid",
        soft,
        "sigmoid",
        np.ones_like(x, bool),
        lambda x, t: optax.sigmoid_binary_cross_entropy(
          x, (1 - eps) * t + eps / 2
        ),
      ),
    ):
      kw = dict(from_logits=True, activation=activation, ignore_index=255)
      if name != "ids":
        kw.pop("ignore_index")
      fused = lambda x, t: pel_jax.pel_loss(
        x, t, ce_weight=lam, ce_label_smoothing=eps, **kw
      )
      apart = lambda x, t: (
        pel_jax.pel_loss(x, t, **kw)
        + lam
        * jnp.sum(jnp.where(kept, ce_fn(x, t), 0))
        / np.sum(np.broadcast_to(kept, ce_fn(x, t).shape))
      )
      argnums = (0,) if name == "ids" else (0, 1)
      with self.subTest(name):
        np.testing.assert_allclose(fused(x, t), apart(x, t), rtol=1e-13)
        for a, b in zip(
          jax.grad(fused, argnums)(x, t), jax.grad(apart, argnums)(x, t)
        ):
          np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)

  def test_label_smoothing_zero_is_no_smoothing(self):
    x, t, kw = make_case("softmax", "int", True)
    f = lambda eps: jax.value_and_grad(
      lambda x: pel_jax.pel_loss(
        x, t, ce_weight=0.5, ce_label_smoothing=eps, **kw
      )
    )(x)
    for a, b in zip(f(0.0), f(0.1)):
      self.assertFalse(np.allclose(a, b))  # It does change the loss...
    g = jax.value_and_grad(
      lambda x: pel_jax.pel_loss(x, t, ce_weight=0.5, **kw)
    )(x)
    for a, b in zip(f(0.0), g):
      np.testing.assert_array_equal(a, b)  # ...and 0 is the default.

  @parameterized.parameters("softmax", "sigmoid")
  def test_label_smoothing_half_precision_and_extreme_logits(self, act):
    rng = np.random.default_rng(4)
    shape = (2, 6, 5, 3)
    ids = reference.make_targets(rng, shape, "int")
    # Saturated logits, right and wrong: -log p is ~1e4, still finite.
    big = np.where(rng.uniform(size=shape) < 0.5, 1e4, -1e4)
    small = reference.make_predictions(rng, shape, act)
    kw = dict(
      from_logits=True, activation=act, ce_weight=0.5, ce_label_smoothing=0.1
    )
    for x in (big, small):
      for dtype in (jnp.bfloat16, jnp.float16):
        xh = jnp.asarray(x, dtype)
        loss, grad = jax.jit(
          jax.value_and_grad(lambda x: pel_jax.pel_loss(x, ids, **kw))
        )(xh)
        self.assertEqual(loss.dtype, jnp.float32)
        self.assertEqual(grad.dtype, dtype)
        self.assertTrue(np.isfinite(loss) and np.all(np.isfinite(grad)))
        if np.isfinite(np.asarray(xh, np.float64)).all():
          # Accumulated in float32: the float64 oracle of the rounded inputs.
          want = family_numpy(np.asarray(xh, np.float64), ids, **kw)
          np.testing.assert_allclose(loss, want, rtol=2e-5)

  def test_sigmoid_confident_logits_float32(self):
    # Each entry's BCE to float32 precision against float64, also where it
    # is tiny: softplus(20) - 20 would round to 0 (confident and right),
    # and a plain log(1 + e^-|z|) loses e^-|z| < 2^-24 against the 1.
    z = np.array([-1e4, -30, -20, -17, -5, -1e-3, 0, 1e-3, 5, 17, 20, 30, 1e4])
    z = np.float32(z)[:, None, None]
    z64 = np.float64(z)
    tail = np.log1p(np.exp(-np.abs(z64)))
    for q in (0.0, 1.0, 0.3):
      t = np.full(z.shape, q, np.float32)
      stats = jax.jit(
        lambda a, b: pel_jax.region_stats(a, b, from_logits=True, ce_weight=1.0)
      )(z, t)
      want = (np.maximum(z64, 0) - np.float32(q) * z64 + tail)[:, 0, 0]
      with self.subTest(q=q):
        self.assertTrue(np.all(np.isfinite(stats.ce)))
        np.testing.assert_allclose(stats.ce, want, rtol=5e-7, atol=1e-37)

  def test_reduction_none_raises(self):
    x, t, kw = make_case("softmax", "int", False)
    with self.assertRaisesRegex(ValueError, "ce_weight.*none"):
      pel_jax.pel_loss(x, t, ce_weight=1.0, reduction="none", **kw)


if __name__ == "__main__":
  absltest.main()

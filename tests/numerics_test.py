"""Numerics at the edges: p in {0, 1}, n < 1, huge logits, empty sets."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pel_jax
from tests import reference
from tests.reference_family import family_numpy

_SHAPE = (2, 4, 3, 3)


def _value_and_grad(x, t, **kw):
  return jax.jit(jax.value_and_grad(lambda p: pel_jax.pel_loss(p, t, **kw)))(x)


class SaturationTest(parameterized.TestCase):
  @parameterized.parameters(0.1, 0.5, 1.0, 2.0, 3.0)
  def test_probabilities_exactly_zero_and_one(self, n):
    rng = np.random.default_rng(0)
    ids = reference.make_targets(rng, _SHAPE, "int")
    # Hard 0/1 predictions: half exactly right, the rest exactly wrong.
    onehot = np.eye(3, dtype=np.float32)[ids]
    wrong = np.eye(3, dtype=np.float32)[(ids + 1) % 3]
    right = rng.uniform(size=ids.shape)[..., None] < 0.5
    p = np.where(right, onehot, wrong)
    for targets in (ids, onehot):
      for batch in (False, True):
        loss, grad = _value_and_grad(p, targets, exponent=n, batch=batch)
        np.testing.assert_allclose(
          loss,
          reference.pel_numpy(p, targets, exponent=n, batch=batch),
          atol=2e-5,
        )
        chex.assert_tree_all_finite(grad)
    # Soft targets (gradient w.r.t. both) at p in {0, 1}.
    soft = reference.make_targets(rng, _SHAPE, "soft")
    grads = jax.grad(lambda a, b: pel_jax.pel_loss(a, b, exponent=n), (0, 1))(
      p, soft
    )
    chex.assert_tree_all_finite(grads)

  @parameterized.parameters(0.1, 0.5, 3.0)
  def test_all_zero_predictions_grad_finite(self, n):
    p = np.zeros(_SHAPE, np.float32)
    ids = reference.make_targets(np.random.default_rng(1), _SHAPE, "int")
    loss, grad = _value_and_grad(p, ids, exponent=n)
    np.testing.assert_allclose(
      loss, reference.pel_numpy(p, ids, exponent=n), atol=2e-5
    )
    chex.assert_tree_all_finite(grad)

  @parameterized.product(
    activation=("sigmoid", "softmax"), n=(0.1, 0.5, 1.0, 3.0)
  )
  def test_huge_logits(self, activation, n):
    rng = np.random.default_rng(2)
    ids = reference.make_targets(rng, _SHAPE, "int")
    x = np.where(rng.uniform(size=_SHAPE) < 0.5, 1e4, -1e4).astype(np.float32)
    kw = dict(from_logits=True, activation=activation, exponent=n)
    for targets in (ids, reference.make_targets(rng, _SHAPE, "soft")):
      loss, grad = _value_and_grad(x, targets, **kw)
      np.testing.assert_allclose(
        loss, reference.pel_numpy(x, targets, **kw), atol=2e-5
      )
      chex.assert_tree_all_finite(grad)
      with jax.enable_x64(True):
        x64 = jnp.asarray(x, jnp.float64)
        loss64, grad64 = jax.jit(
          jax.value_and_grad(lambda p: pel_jax.pel_loss(p, targets, **kw))
        )(x64)
        np.testing.assert_allclose(
          loss64, reference.pel_numpy(x, targets, **kw), atol=1e-12
        )
        chex.assert_tree_all_finite(grad64)

  def test_saturated_softmax_gradient_is_zero_when_right(self):
    # Perfect, saturated predictions: p = one-hot exactly; the loss is
    # (smoothing aside) 1 - 1 = 0 and flat in the logits.
    ids = np.array([[[0, 1], [2, 1]]], np.int32)
    x = np.where(np.eye(3, dtype=bool)[ids], 1e4, -1e4).astype(np.float32)
    loss, grad = _value_and_grad(x, ids, from_logits=True)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


class EmptyTest(parameterized.TestCase):
  @parameterized.parameters(1.0, 0.5, 3.0)
  def test_empty_prediction_of_empty_target(self, scale):
    # Default smoothing: ratio (0 + eps)/(0 + eps) = 1, loss 1 - s.
    p = np.zeros(_SHAPE, np.float32)
    g = np.zeros(_SHAPE, np.float32)
    for batch in (False, True):
      for targets in (g, np.full(_SHAPE[:-1], 7, np.int32)):  # Out-of-range.
        got = pel_jax.pel_loss(
          p, targets, scale=scale, batch=batch, reduction="none"
        )
        np.testing.assert_allclose(
          got, np.full(got.shape, 1.0 - scale), atol=1e-6
        )

  @parameterized.parameters(0.5, 3.0)
  def test_all_masked(self, n):
    rng = np.random.default_rng(3)
    p = reference.make_predictions(rng, _SHAPE)
    ids = reference.make_targets(rng, _SHAPE, "int")
    where = np.zeros(_SHAPE[:-1], bool)
    for smooth in (1e-5, 0.0):
      kw = dict(exponent=n, where=where, smooth_nr=smooth, smooth_dr=smooth)
      loss, grad = _value_and_grad(p, ids, **kw)
      # Nothing counted: ratio 1 (eps/eps, or the empty-class rule) -> 0.
      np.testing.assert_allclose(loss, 0.0, atol=1e-6)
      np.testing.assert_allclose(
        loss, reference.pel_numpy(p, ids, **kw), atol=1e-6
      )
      np.testing.assert_array_equal(grad, np.zeros_like(grad))
    # All pixels ignored through ignore_index.
    loss, grad = _value_and_grad(
      p, np.full(_SHAPE[:-1], 9, np.int32), ignore_index=9, exponent=n
    )
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))

  @parameterized.parameters(0.5, 1.0, 3.0)
  def test_no_smoothing_empty_class(self, n):
    # Class 2 neither predicted nor present: D = 0 -> ratio 1, zero gradient.
    rng = np.random.default_rng(4)
    p = reference.make_predictions(rng, _SHAPE)
    p[..., 2] = 0.0
    ids = rng.integers(0, 2, _SHAPE[:-1]).astype(np.int32)
    kw = dict(exponent=n, smooth_nr=0.0, smooth_dr=0.0, reduction="none")
    got = pel_jax.pel_loss(p, ids, **kw)
    want = reference.pel_numpy(p, ids, **kw)
    chex.assert_trees_all_close(got, want, atol=2e-5)
    np.testing.assert_array_equal(np.asarray(got)[:, 2], 0.0)
    grad = jax.grad(lambda x: jnp.sum(pel_jax.pel_loss(x, ids, **kw)))(p)
    chex.assert_tree_all_finite(grad)
    np.testing.assert_array_equal(np.asarray(grad)[..., 2], 0.0)
    # Soft-target gradient for the empty class is also 0 (no 0/0).
    soft = np.eye(3, dtype=np.float32)[ids]
    gt = jax.grad(lambda y: jnp.sum(pel_jax.pel_loss(p, y, **kw)))(soft)
    chex.assert_tree_all_finite(gt)
    np.testing.assert_array_equal(np.asarray(gt)[..., 2], 0.0)

  def test_no_smoothing_empty_everything_with_logits(self):
    # Sigmoid never gives p = 0 exactly, so D > 0 with an empty target:
    # finite, equal to the oracle.
    x = np.full((1, 3, 3, 1), -30.0, np.float32)
    g = np.zeros((1, 3, 3, 1), np.float32)
    kw = dict(from_logits=True, smooth_nr=0.0, smooth_dr=0.0)
    loss, grad = _value_and_grad(x, g, **kw)
    np.testing.assert_allclose(loss, reference.pel_numpy(x, g, **kw), atol=1e-6)
    chex.assert_tree_all_finite(grad)

  def test_empty_target_full_prediction(self):
    # No positives, everything predicted: TP = N = 0, FP = P, loss 1 - eps/D.
    p = np.ones((1, 2, 2, 1), np.float32)
    g = np.zeros((1, 2, 2, 1), np.float32)
    np.testing.assert_allclose(
      pel_jax.pel_loss(p, g), 1.0 - 1e-5 / (4.0 + 1e-5), rtol=1e-6
    )


class NonFiniteInputTest(parameterized.TestCase):
  """A NaN prediction must show up as NaN, never as a perfect score.

  The empty-class rule (ratio 1 when the denominator is 0) is for D == 0
  only; a NaN denominator is not 0, so the oracle's loss is NaN.
  """

  @parameterized.named_parameters(
    ("probs", "probs", {}),
    ("sigmoid", "sigmoid", dict(from_logits=True, activation="sigmoid")),
    ("softmax", "softmax", dict(from_logits=True)),
  )
  def test_nan_prediction_propagates(self, kind, kw):
    rng = np.random.default_rng(5)
    p = reference.make_predictions(rng, _SHAPE, kind)
    ids = reference.make_targets(rng, _SHAPE, "int")
    p[0, 1, 1, 0] = np.nan
    got = pel_jax.pel_loss(p, ids, reduction="none", **kw)
    want = reference.pel_numpy(p, ids, reduction="none", **kw)
    self.assertTrue(np.isnan(want[0, 0]))
    # assert_allclose treats NaN == NaN: NaN exactly where the oracle has it.
    np.testing.assert_allclose(got, want, atol=2e-5)
    self.assertTrue(np.isnan(pel_jax.pel_loss(p, ids, **kw)))

  @parameterized.named_parameters(
    ("probs_where", "probs", {}, "where"),
    (
      "sigmoid_where",
      "sigmoid",
      dict(from_logits=True, activation="sigmoid"),
      "where",
    ),
    ("softmax_ignore", "softmax", dict(from_logits=True), "ignore"),
    ("soft_targets_where", "softmax", dict(from_logits=True), "soft"),
  )
  def test_nan_at_excluded_pixel_is_left_out(self, kind, kw, how):
    rng = np.random.default_rng(6)
    p = reference.make_predictions(rng, _SHAPE, kind)
    mask = np.ones(_SHAPE[:-1], bool)
    mask[0, 1, 1] = False
    if how == "soft":
      t = reference.make_targets(rng, _SHAPE, "soft")
      t[0, 1, 1] = np.nan
      kw = dict(kw, where=mask)
    else:
      t = reference.make_targets(rng, _SHAPE, "int")
      if how == "ignore":
        t[0, 1, 1] = -1
        kw = dict(kw, ignore_index=-1)
      else:
        kw = dict(kw, where=mask)
    clean = p.copy()
    clean[0, 1, 1] = 0.0
    p[0, 1, 1] = np.nan
    clean_t = np.where(np.isnan(t), 0.0, t) if how == "soft" else t
    want = reference.pel_numpy(clean, clean_t, reduction="none", **kw)
    got = pel_jax.pel_loss(p, t, reduction="none", **kw)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    grad = jax.grad(lambda x: pel_jax.pel_loss(x, t, **kw))(jnp.asarray(p))
    chex.assert_tree_all_finite(grad)
    np.testing.assert_array_equal(grad[0, 1, 1], 0.0)


def _closed_form(
  q, counts, pixels, *, exponent, scale, fp_weight, fn_weight, smooth=1e-5
):
  """float64 PEL of a prediction constant per class: p = q_c at every pixel.

  With `counts[c]` pixels labelled c out of `pixels`: TP = q count,
  sum p = q pixels, sum g = count, N = q^n count (the formula, by hand).
  """
  q, counts = np.asarray(q, np.float64), np.asarray(counts, np.float64)
  tp = q * counts
  denom = (
    tp + fp_weight * (q * pixels - tp) + fn_weight * (counts - tp) + smooth
  )
  return 1.0 - scale * (q**exponent * counts + smooth) / denom


# name, predictions shape [B, *S, C], batch, dtype. 4M pixels per class:
# a power of 16 times 4, a prime (4194301), per-sample primes (2053^2), a
# batch sum of 3 x 1398101 (= 4194303, odd), bfloat16.
_LARGE = (
  ("one_class", (16, 512, 512, 1), True, jnp.float32),
  ("two_classes", (16, 512, 512, 2), True, jnp.float32),
  ("two_classes_bf16", (16, 512, 512, 2), True, jnp.bfloat16),
  ("one_class_prime", (1, 4194301, 1), False, jnp.float32),
  ("two_classes_prime", (1, 4194301, 2), True, jnp.float32),
  ("eight_classes_prime_sides", (1, 2053, 2053, 8), False, jnp.float32),
  ("three_classes_odd_batch", (3, 1398101, 3), True, jnp.float32),
)


class LargeSumAccuracyTest(parameterized.TestCase):
  """Sums over 4M pixels per class stay within float32 pairwise accuracy.

  A constant prediction is the worst case for a sequential float32 sum (every
  rounding error has the same sign): summed in one pass, 0.3 over 4M pixels
  came out ~1% low, a loss error of ~1e-2. Expected values: the closed form.
  """

  @parameterized.named_parameters(*_LARGE)
  def test_constant_probabilities(self, shape, batch, dtype):
    c = shape[-1]
    q = np.asarray(jnp.asarray(0.3 + 0.05 * np.arange(c), dtype), np.float64)
    p = jnp.broadcast_to(jnp.asarray(q, dtype), shape)
    pixels = math.prod(shape[: -1 if batch else -1][0 if batch else 1 :])
    # Labels cycle through 0..C (id C: no class); C = 1 takes 0/1 floats.
    cycle = np.arange(math.prod(shape[:-1])) % (c + 1)
    if c == 1:
      targets = cycle.reshape(shape).astype(np.float32)
    else:
      targets = cycle.reshape(shape[:-1]).astype(np.int32)
    kw = dict(exponent=3.0, scale=10.0, fp_weight=0.5, fn_weight=0.5)
    got = jax.jit(
      lambda a, b: pel_jax.pel_loss(a, b, batch=batch, reduction="none", **kw)
    )(p, targets)
    groups = cycle.reshape(shape[0] if not batch else 1, -1)
    for i, row in enumerate(np.asarray(got).reshape(-1, c)):
      if c == 1:
        counts = [np.sum(groups[i] == 1)]
      else:
        counts = np.bincount(groups[i], minlength=c + 1)[:c]
      np.testing.assert_allclose(
        row, _closed_form(q, counts, pixels, **kw), rtol=0, atol=1e-5
      )

  def test_constant_logits_authors_setting(self):
    # The issue's case: the authors' setting on [16, 512, 512, 2] logits.
    shape = (16, 512, 512, 2)
    logits = np.array([0.4, -0.9], np.float32)
    q = reference.np_softmax(logits)
    x = jnp.broadcast_to(jnp.asarray(logits), shape)
    ids = (np.arange(math.prod(shape[:-1])) % 3).reshape(shape[:-1])
    kw = dict(exponent=3.0, scale=10.0, fp_weight=0.5, fn_weight=0.5)
    got = jax.jit(
      lambda a, b: pel_jax.pel_loss(
        a,
        b,
        from_logits=True,
        batch=True,
        smooth_nr=0.0,
        smooth_dr=0.0,
        reduction="none",
        **kw,
      )
    )(x, ids.astype(np.int32))
    counts = np.bincount(ids.ravel(), minlength=3)[:2]
    np.testing.assert_allclose(
      got, _closed_form(q, counts, ids.size, smooth=0.0, **kw), atol=1e-5
    )

  @parameterized.parameters((2, 17, 3), (3, 4099, 2), (2, 5, 7, 3), (2, 33, 70))
  def test_remainders_random(self, *shape):
    # Sizes off multiples of 16 at some stage: every remainder must add up,
    # values and gradients (softmax over up to 70 classes).
    rng = np.random.default_rng(12)
    x = reference.make_predictions(rng, shape, "softmax")
    ids = reference.make_targets(rng, shape, "int")
    for batch in (False, True):
      kw = dict(batch=batch, reduction="none", from_logits=True, exponent=2.0)
      loss = lambda a, kw=kw: pel_jax.pel_loss(a, ids, **kw)
      got, grad = jax.jit(
        lambda a: (loss(a), jax.grad(lambda b: jnp.sum(loss(b)))(a))
      )(x)
      np.testing.assert_allclose(
        got, reference.pel_numpy(x, ids, **kw), atol=2e-6, rtol=2e-6
      )
      want = jax.jit(
        jax.grad(lambda a, kw=kw: jnp.sum(reference.pel_jnp(a, ids, **kw)))
      )(x)
      np.testing.assert_allclose(grad, want, atol=1e-6, rtol=2e-4)

  @parameterized.parameters((2, 17, 1), (3, 4099, 1), (2, 5, 7, 3))
  def test_sigmoid_logs_remainders_random(self, *shape):
    # The sigmoid with the cross-entropy stages 8 rows at a time (and a
    # log-space power): sizes off multiples of 8 at some stage add up too.
    rng = np.random.default_rng(14)
    x = reference.make_predictions(rng, shape, "sigmoid").astype(np.float32)
    g = reference.make_targets(rng, shape, "soft").astype(np.float32)
    for batch in (False, True):
      kw = dict(
        batch=batch, from_logits=True, activation="sigmoid", exponent=0.5
      )
      fused = lambda a, kw=kw: pel_jax.pel_loss(a, g, ce_weight=0.5, **kw)
      got, grad = jax.jit(jax.value_and_grad(fused))(x)
      np.testing.assert_allclose(
        got, family_numpy(x, g, ce_weight=0.5, **kw), atol=2e-6, rtol=2e-6
      )
      apart = lambda a, kw=kw: (
        reference.pel_jnp(a, g, **kw)
        + 0.5 * jnp.mean(optax.sigmoid_binary_cross_entropy(a, g))
      )
      want = jax.jit(jax.grad(apart))(x)
      np.testing.assert_allclose(grad, want, atol=1e-6, rtol=2e-4)

  @parameterized.named_parameters(
    ("batch", (16, 512, 512, 1), True), ("prime", (1, 4194301, 1), False)
  )
  def test_constant_logit_sigmoid_cross_entropy(self, shape, batch):
    # 4M pixels in 8-row blocked stages (sigmoid with the cross-entropy,
    # n = 0.5): every sum within float32 pairwise accuracy of its closed form.
    z = np.float64(np.float32(0.7))
    x = jnp.full(shape, z, jnp.float32)
    t = (np.arange(math.prod(shape)) % 3 == 0).reshape(shape)
    stats = jax.jit(
      lambda a, b: pel_jax.region_stats(
        a, b, from_logits=True, exponent=0.5, ce_weight=1.0, batch=batch
      )
    )(x, t.astype(np.float32))
    q = 1 / (1 + np.exp(-z))
    pixels = math.prod(shape[1:-1]) * (shape[0] if batch else 1)
    ones = t.reshape(1 if batch else shape[0], -1).sum(-1)
    ce = pixels * np.log1p(np.exp(z)) - ones * z
    for got, want in (
      (stats.sum_p[..., 0], q * pixels),
      (stats.tp[..., 0], q * ones),
      (stats.numer[..., 0], np.sqrt(q) * ones),
      (stats.ce, ce),
    ):
      np.testing.assert_allclose(got, want, rtol=2e-6)

  def test_forward_over_reverse_with_remainders(self):
    # jax.hessian takes the JVP of the staged sums (tangents staged too).
    rng = np.random.default_rng(13)
    shape = (1, 37, 2)
    p = reference.make_predictions(rng, shape)
    g = reference.make_targets(rng, shape, "soft")
    hess = jax.jit(jax.hessian(lambda a: pel_jax.pel_loss(a, g, batch=True)))(p)
    want = jax.jit(jax.hessian(lambda a: reference.pel_jnp(a, g, batch=True)))(
      p
    )
    np.testing.assert_allclose(hess, want, atol=1e-5, rtol=1e-3)


if __name__ == "__main__":
  absltest.main()


# Every option of the family, for the zero-smoothing gradient sweep below.
_FAMILY = (
  ("plain", {}),
  ("squared", dict(squared=True)),
  ("generalized_square", dict(generalized="square")),
  ("generalized_simple", dict(generalized="simple")),
  ("micro", dict(average="micro")),
  ("soft_labels", dict(soft_labels=True)),
  ("focal_half", dict(focal_gamma=0.5)),
  ("focal_two", dict(focal_gamma=2.0)),
  ("log", dict(log_loss=True)),
  ("squared_log", dict(squared=True, log_loss=True)),
  ("exclude", dict(absent_classes="exclude")),
  ("exclude_per_sample", dict(absent_classes="exclude_per_sample")),
  (
    "squared_focal_exclude",
    dict(squared=True, focal_gamma=0.5, absent_classes="exclude"),
  ),
  ("batch", dict(batch=True)),
  ("no_background", dict(include_background=False)),
  ("class_weights", dict(class_weights=(1.0, 2.0, 3.0))),
  ("tversky", dict(fp_weight=0.3, fn_weight=0.7)),
  ("fn_only", dict(fp_weight=0.0, fn_weight=1.0)),
  ("ce", dict(ce_weight=1.0)),
  ("ce_smoothed", dict(ce_weight=1.0, ce_label_smoothing=0.1)),
)


def _confident(gap, dtype):
  """Logits [2, 4, 4, 3]: class 0 leads every pixel by `gap`.

  Class 1 is the target in one row of sample 0 (nearly absent from the
  prediction there, absent from sample 1); class 2 is nowhere.
  """
  x = np.zeros((2, 4, 4, 3), dtype)
  x[..., 0] = gap
  ids = np.zeros((2, 4, 4), np.int32)
  ids[0, :1] = 1
  return x, ids


class ZeroSmoothingGradientTest(parameterized.TestCase):
  """smooth_nr = smooth_dr = 0 (smp's and kornia's default) with absent and
  nearly absent classes: a denominator D > 0 far below 1 must not turn the
  gradient into NaN (autodiff of N / D takes -N * D^-2: 0 * inf)."""

  @parameterized.named_parameters(
    (name, options, i % 2) for i, (name, options) in enumerate(_FAMILY)
  )
  def test_gradient_finite_and_right(self, options, rotation):
    # Each option in float32 and float64; targets, activation and n rotate.
    cases = (
      (np.float32, "ids", "softmax", 3.0),
      (np.float64, "soft", "sigmoid", 0.5),
      (np.float32, "soft", "sigmoid", 0.5),
      (np.float64, "ids", "softmax", 3.0),
    )
    for dtype, targets, activation, n in cases[2 * rotation : 2 * rotation + 2]:
      if options.get("soft_labels"):
        targets = "soft"  # Its L1 form is for float targets.
      kw = dict(
        from_logits=True,
        activation=activation,
        exponent=n,
        smooth_nr=0.0,
        smooth_dr=0.0,
        **options,
      )
      _, ids = _confident(0.0, dtype)
      t = ids if targets == "ids" else np.eye(3, dtype=dtype)[ids]
      with jax.enable_x64(dtype == np.float64):
        value_and_grad = jax.jit(
          jax.value_and_grad(lambda a: pel_jax.pel_loss(a, t, **kw))
        )
        grads = {}
        for gap in (0.0, 23.0, 45.0, 90.0, 120.0, 400.0):
          loss, grads[gap] = value_and_grad(_confident(gap, dtype)[0])
          msg = f"{dtype.__name__} {targets} {activation} n={n} gap={gap}"
          self.assertTrue(np.isfinite(loss), msg)
          self.assertTrue(np.all(np.isfinite(grads[gap])), msg)
        if dtype == np.float64 or options.get("focal_gamma", 1) < 1:
          continue  # gamma < 1: L_0 is 0 in float32, 1e-10 in float64,
          # either side of the infinite slope at 0 (taken as 0 there).
        # At gap 23 float32's D (~1e-20 summed squares) is tiny but normal,
        # where autodiff of N / D gave NaN: the gradient must be float64's,
        # whose D^-2 does not overflow. Only the trailing logits compare:
        # float32 rounds the leading class's p = 1 - 1e-10 to 1, so its own
        # slope, p (1 - p) or p (u_0 - sum p u), is lost to the activation.
        with jax.enable_x64(True):
          t64 = np.asarray(t, np.int32 if targets == "ids" else np.float64)
          _, want = _value_and_grad(_confident(23.0, np.float64)[0], t64, **kw)
        want = np.asarray(want)[..., 1:]
        np.testing.assert_allclose(
          np.asarray(grads[23.0])[..., 1:],
          want,
          rtol=2e-3,
          atol=1e-4 * np.max(np.abs(want)),
          err_msg=f"{targets} {activation}",
        )

  @parameterized.product(
    dtype=(np.float32, np.float64),
    options=(
      {},
      dict(squared=True),
      dict(log_loss=True),
      dict(squared=True, focal_gamma=0.5),
    ),
  )
  def test_absent_class_loss_is_flat(self, dtype, options):
    # With zero smoothing an absent class (g = 0 everywhere) has N = 0 and
    # ratio 0 / D = 0 for every prediction with D > 0: its loss is constant
    # and its gradient exactly 0, however small D is.
    kw = dict(
      from_logits=True,
      exponent=3.0,
      smooth_nr=0.0,
      smooth_dr=0.0,
      reduction="none",
      **options,
    )
    _, ids = _confident(0.0, dtype)
    with jax.enable_x64(dtype == np.float64):
      grad_of_absent = jax.jit(
        jax.grad(lambda a: pel_jax.pel_loss(a, ids, **kw)[1, 2])
      )
      for gap in (23.0, 45.0, 200.0):
        grad = grad_of_absent(_confident(gap, dtype)[0])
        np.testing.assert_array_equal(grad, np.zeros_like(grad))

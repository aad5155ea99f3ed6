"""Loss values of pel_loss and its Dice-family variants against the oracles."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pel_jax
from tests import reference

ATOL = RTOL = 2e-5

# name, prediction shape, prediction kind, target kind, options.
_CASES = (
  ("probs_int_2d", (2, 5, 4, 3), "probs", "int", dict(exponent=3.0)),
  ("probs_int_1d_n05", (2, 7, 3), "probs", "int", dict(exponent=0.5)),
  (
    "probs_onehot_3d_n2",
    (2, 3, 2, 2, 3),
    "probs",
    "onehot",
    dict(exponent=2.0, batch=True),
  ),
  (
    "probs_soft_n1",
    (2, 5, 4, 2),
    "probs",
    "soft",
    dict(exponent=1.0, fp_weight=0.3, fn_weight=0.7),
  ),
  (
    "sigmoid_single",
    (2, 5, 4, 1),
    "sigmoid",
    "multihot",
    dict(exponent=3.0, from_logits=True),
  ),
  (
    "sigmoid_multilabel_mask",
    (2, 5, 4, 3),
    "sigmoid",
    "multihot",
    dict(exponent=2.0, from_logits=True, activation="sigmoid", mask=True),
  ),
  (
    "softmax_int_ignore",
    (2, 5, 4, 3),
    "softmax",
    "int",
    dict(exponent=3.0, from_logits=True, ignore_index=1),
  ),
  (
    "softmax_int_weights_nobg",
    (2, 5, 4, 4),
    "softmax",
    "int",
    dict(
      exponent=0.5,
      from_logits=True,
      class_weights=(0.5, 1.0, 2.0, 3.0),
      include_background=False,
    ),
  ),
  (
    "softmax_soft_batch_mask",
    (3, 4, 4, 3),
    "softmax",
    "soft",
    dict(
      exponent=2.0,
      from_logits=True,
      batch=True,
      mask=True,
      scale=0.5,
      smooth_nr=0.1,
      smooth_dr=0.2,
    ),
  ),
  (
    "softmax_onehot_3d",
    (1, 3, 3, 2, 2),
    "softmax",
    "onehot",
    dict(exponent=1.0, from_logits=True, fp_weight=0.5, fn_weight=0.5),
  ),
  (
    "probs_int_mask_ignore_batch_weights",
    (2, 6, 3),
    "probs",
    "int",
    dict(
      exponent=3.0,
      mask=True,
      ignore_index=0,
      batch=True,
      class_weights=(1.0, 2.0, 0.5),
      include_background=False,
    ),
  ),
  (
    "probs_bool_targets",
    (2, 4, 4, 2),
    "probs",
    "bool",
    dict(exponent=2.0, smooth_nr=0.0, smooth_dr=0.0),
  ),
  (
    "sigmoid_int_single_class",
    (2, 5, 4, 1),
    "sigmoid",
    "int",
    dict(exponent=0.5, from_logits=True, mask=True),
  ),
  (
    "probs_soft_n_float",
    (2, 5, 4, 3),
    "probs",
    "soft",
    dict(exponent=1.7, fp_weight=2.0, fn_weight=0.0),
  ),
)


def _case(seed, shape, pred_kind, target_kind, options):
  rng = np.random.default_rng(seed)
  predictions = reference.make_predictions(rng, shape, pred_kind)
  targets = reference.make_targets(rng, shape, target_kind)
  options = dict(options)
  if options.pop("mask", False):
    options["where"] = reference.make_mask(rng, shape)
  if "class_weights" in options:
    options["class_weights"] = np.asarray(options["class_weights"], np.float32)
  return predictions, targets, options


class OracleTest(chex.TestCase):
  """pel_loss == float64 NumPy oracle over inputs, targets and options."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_matches_numpy_oracle(self, shape, pred_kind, target_kind, options):
    predictions, targets, options = _case(
      0, shape, pred_kind, target_kind, options
    )
    for reduction in ("none", "mean", "sum"):
      loss_fn = self.variant(
        functools.partial(pel_jax.pel_loss, reduction=reduction, **options)
      )
      got = loss_fn(predictions, targets)
      want = reference.pel_numpy(
        predictions, targets, reduction=reduction, **options
      )
      self.assertEqual(got.shape, np.shape(want))
      self.assertEqual(got.dtype, jnp.float32)
      chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)

  @parameterized.parameters(1.0, 2.0)
  def test_scale_and_smoothing_are_affine(self, scale):
    # L = 1 - s * ratio: loss(s) - 1 == s * (loss(1) - 1), per class.
    rng = np.random.default_rng(1)
    p = reference.make_predictions(rng, (2, 4, 4, 3))
    t = reference.make_targets(rng, (2, 4, 4, 3))
    base = pel_jax.pel_loss(p, t, reduction="none")
    scaled = pel_jax.pel_loss(p, t, scale=scale, reduction="none")
    chex.assert_trees_all_close(scaled - 1, scale * (base - 1), atol=1e-6)
    chex.assert_trees_all_close(
      scaled,
      reference.pel_numpy(p, t, scale=scale, reduction="none"),
      atol=ATOL,
    )


class HandComputedTest(parameterized.TestCase):
  """Tiny cases whose values are worked out by hand in the comments."""

  # One sample, two pixels, one class: p = (0.5, 0.25), g = (1, 0).
  #   TP = 0.5, FP = 0.25, FN = 0.5, sum p = 0.75, sum g = 1.
  _P = np.array([0.5, 0.25], np.float32).reshape(1, 2, 1, 1)
  _G = np.array([1.0, 0.0], np.float32).reshape(1, 2, 1, 1)

  @parameterized.named_parameters(
    # n = 2: N = 0.25; D = 0.5 + 0.25 + 0.5 = 1.25; L = 1 - 0.25/1.25 = 0.8.
    ("pel_n2", pel_jax.pel_loss, dict(exponent=2.0), 0.8),
    # n = 3: N = 0.125; L = 1 - 0.125/1.25 = 0.9.
    ("pel_n3", pel_jax.pel_loss, dict(), 0.9),
    # n = 0.5: N = sqrt(0.5); L = 1 - 0.70710678/1.25 = 0.43431458.
    ("pel_n05", pel_jax.pel_loss, dict(exponent=0.5), 1 - 0.5**0.5 / 1.25),
    # scale 2, n = 2: L = 1 - 2 * 0.2 = 0.6.
    ("pel_scale2", pel_jax.pel_loss, dict(exponent=2.0, scale=2.0), 0.6),
    # Dice: D = 0.5 + 0.5*0.25 + 0.5*0.5 = 0.875; L = 1 - 0.5/0.875 = 3/7.
    ("dice", pel_jax.dice_loss, dict(), 3.0 / 7.0),
    # Jaccard: L = 1 - 0.5/1.25 = 0.6.
    ("jaccard", pel_jax.jaccard_loss, dict(), 0.6),
    # Tversky 0.3/0.7: D = 0.5 + 0.075 + 0.35 = 0.925; L = 1 - 20/37 = 17/37.
    ("tversky", pel_jax.tversky_loss, dict(), 17.0 / 37.0),
    # Tversky 0.7/0.3: D = 0.5 + 0.175 + 0.15 = 0.825; L = 1 - 20/33 = 13/33.
    (
      "tversky_swapped",
      pel_jax.tversky_loss,
      dict(fp_weight=0.7, fn_weight=0.3),
      13.0 / 33.0,
    ),
  )
  def test_single_class(self, loss_fn, kwargs, want):
    got = loss_fn(self._P, self._G, smooth_nr=0.0, smooth_dr=0.0, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-6)

  def test_single_class_default_smoothing(self):
    # n = 2: (0.25 + 1e-5) / (1.25 + 1e-5).
    got = pel_jax.pel_loss(self._P, self._G, exponent=2.0)
    np.testing.assert_allclose(
      got, 1 - (0.25 + 1e-5) / (1.25 + 1e-5), rtol=1e-6
    )

  # Two classes, two pixels, ids (0, 1), n = 3, no smoothing:
  #   p(pixel 0) = (0.5, 0.5), p(pixel 1) = (0.25, 0.75).
  # class 0: g = (1, 0), p = (0.5, 0.25): TP 0.5, FP 0.25, FN 0.5,
  #          N 0.125, L0 = 1 - 0.125/1.25 = 0.9.
  # class 1: g = (0, 1), p = (0.5, 0.75): TP 0.75, FP 0.5, FN 0.25,
  #          N 0.421875, L1 = 1 - 0.421875/1.5 = 0.71875.
  _P2 = np.array([[0.5, 0.5], [0.25, 0.75]], np.float32).reshape(1, 2, 1, 2)
  _IDS = np.array([0, 1], np.int32).reshape(1, 2, 1)

  @parameterized.named_parameters(
    ("none", dict(reduction="none"), [[0.9, 0.71875]]),
    ("mean", dict(), 0.809375),
    ("sum", dict(reduction="sum"), 1.61875),
    # Class weights (2, 1): (1.8, 0.71875).
    (
      "weights",
      dict(class_weights=np.array([2.0, 1.0]), reduction="none"),
      [[1.8, 0.71875]],
    ),
    ("no_background", dict(include_background=False), 0.71875),
    # ignore_index=1 drops pixel 1. class 0: p 0.5, g 1: TP 0.5, FN 0.5,
    # N 0.125 -> 0.875. class 1: p 0.5, g 0: FP 0.5, N 0 -> 1.
    ("ignore", dict(ignore_index=1, reduction="none"), [[0.875, 1.0]]),
    # The same through `where`.
    (
      "where",
      dict(where=np.array([[[True], [False]]]), reduction="none"),
      [[0.875, 1.0]],
    ),
    # batch=True with one sample: [C] instead of [1, C].
    ("batch", dict(batch=True, reduction="none"), [0.9, 0.71875]),
  )
  def test_two_classes(self, kwargs, want):
    got = pel_jax.pel_loss(
      self._P2, self._IDS, smooth_nr=0.0, smooth_dr=0.0, **kwargs
    )
    np.testing.assert_allclose(got, np.array(want), rtol=1e-6)

  def test_two_samples_batch_vs_per_sample(self):
    # Sample 0: p = 1 on class 0's only pixel, id 0 -> class 0 TP 1, class 1
    # FP 0, empty. Sample 1: p = 0.5 everywhere, id 1.
    # n = 1, Dice weights 0.5, no smoothing, probabilities [2, 1, 1, 2]:
    p = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32).reshape(2, 1, 1, 2)
    ids = np.array([0, 1], np.int32).reshape(2, 1, 1)
    kw = dict(smooth_nr=0.0, smooth_dr=0.0, reduction="none")
    # Per sample: s0 c0 = 1 - 1/1 = 0; s0 c1 empty (D = 0) -> ratio 1 -> 0.
    # s1 c0: TP 0, D = 0.5*0.5 = 0.25 -> 1; s1 c1: TP 0.5,
    # D = 0.5 + 0.5*0 + 0.5*0.5 = 0.75 -> 1 - 2/3 = 1/3.
    np.testing.assert_allclose(
      pel_jax.dice_loss(p, ids, **kw),
      [[0.0, 0.0], [1.0, 1.0 / 3.0]],
      rtol=1e-6,
      atol=1e-7,
    )
    # Batch: c0: TP 1, sum p 1.5, sum g 1 -> 1 - 1/1.25 = 0.2;
    # c1: TP 0.5, sum p 0.5, sum g 1 -> 1 - 0.5/0.75 = 1/3.
    np.testing.assert_allclose(
      pel_jax.dice_loss(p, ids, batch=True, **kw), [0.2, 1.0 / 3.0], rtol=1e-6
    )

  def test_sigmoid_logit_zero(self):
    # logit 0 -> p = 0.5, g = 1, Dice: TP 0.5, D = 0.5 + 0.25 -> 1/3.
    x = np.zeros((1, 1, 1, 1), np.float32)
    g = np.ones((1, 1, 1, 1), np.float32)
    got = pel_jax.dice_loss(
      x, g, from_logits=True, smooth_nr=0.0, smooth_dr=0.0
    )
    np.testing.assert_allclose(got, 1.0 / 3.0, rtol=1e-6)

  def test_softmax_logits_uniform(self):
    # Two equal logits -> p = (0.5, 0.5); id 0; Jaccard:
    # class 0: TP 0.5, FN 0.5 -> 1 - 0.5/1 = 0.5; class 1: FP 0.5 -> 1.
    x = np.zeros((1, 1, 1, 2), np.float32)
    ids = np.zeros((1, 1, 1), np.int32)
    got = pel_jax.jaccard_loss(
      x, ids, from_logits=True, smooth_nr=0.0, smooth_dr=0.0, reduction="none"
    )
    np.testing.assert_allclose(got, [[0.5, 1.0]], rtol=1e-6)


class SeedFormulaTest(parameterized.TestCase):
  """The documented settings reproduce the three historical PEL formulas."""

  def _hard_case(self, shape=(2, 5, 4, 3), seed=3):
    rng = np.random.default_rng(seed)
    p = reference.make_predictions(rng, shape)
    ids = reference.make_targets(rng, shape, "int")
    return p, ids, np.eye(shape[-1], dtype=np.float32)[ids]

  @parameterized.parameters(0.5, 1.0, 2.0, 3.0)
  def test_readme_formula(self, n):
    p, ids, onehot = self._hard_case()
    want = reference.seed_readme(p, onehot, n)
    for targets in (ids, onehot):
      got = pel_jax.pel_loss(
        p,
        targets,
        exponent=n,
        scale=1.0,
        fp_weight=1.0,
        fn_weight=1.0,
        smooth_nr=0.0,
        smooth_dr=0.0,
        reduction="none",
      )
      chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)

  @parameterized.parameters(0.5, 1.0, 2.0, 3.0)
  def test_vectorized_formula(self, n):
    p, ids, onehot = self._hard_case()
    want = reference.seed_vectorized(p, onehot, n)
    for targets in (ids, onehot):
      got = pel_jax.pel_loss(
        p,
        targets,
        exponent=n,
        scale=0.5,
        fp_weight=0.5,
        fn_weight=0.5,
        smooth_nr=0.0,
        smooth_dr=0.0,
        reduction="none",
      )
      chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)

  def test_authors_code(self):
    p, ids, onehot = self._hard_case()
    want = reference.seed_authors(p, onehot)
    for targets in (ids, onehot):
      got = pel_jax.pel_loss(
        p,
        targets,
        exponent=3.0,
        scale=10.0,
        fp_weight=0.5,
        fn_weight=0.5,
        batch=True,
        smooth_nr=0.0,
        smooth_dr=0.0,
        reduction="none",
      )
      chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)
      mean = pel_jax.pel_loss(
        p,
        targets,
        exponent=3.0,
        scale=10.0,
        fp_weight=0.5,
        fn_weight=0.5,
        batch=True,
        smooth_nr=0.0,
        smooth_dr=0.0,
      )
      np.testing.assert_allclose(mean, np.mean(want), atol=ATOL, rtol=RTOL)


class OptaxDiceTest(parameterized.TestCase):
  """n = 1 against optax.losses.dice_loss (alpha/beta = fp/fn weights)."""

  @parameterized.named_parameters(
    ("dice", 0.5, 0.5, 1.0),
    ("tversky", 0.3, 0.7, 1e-3),
    ("jaccard_like", 1.0, 1.0, 0.5),
    ("fn_only", 0.0, 1.0, 2.0),
  )
  def test_softmax_logits(self, alpha, beta, smooth):
    rng = np.random.default_rng(4)
    shape = (3, 5, 4, 3)
    x = reference.make_predictions(rng, shape, "softmax")
    ids = reference.make_targets(rng, shape, "int")
    onehot = np.eye(3, dtype=np.float32)[ids]
    want = optax.losses.dice_loss(
      jnp.asarray(x),
      jnp.asarray(onehot),
      alpha=alpha,
      beta=beta,
      smooth=smooth,
      reduction="none",
    )
    for targets in (ids, onehot):
      got = pel_jax.pel_loss(
        x,
        targets,
        exponent=1.0,
        scale=1.0,
        fp_weight=alpha,
        fn_weight=beta,
        smooth_nr=smooth,
        smooth_dr=smooth,
        from_logits=True,
        reduction="none",
      )
      chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)

  def test_softmax_logits_class_weights_and_background(self):
    rng = np.random.default_rng(5)
    shape = (2, 4, 4, 4)
    x = reference.make_predictions(rng, shape, "softmax")
    onehot = reference.make_targets(rng, shape, "onehot")
    cw = np.array([0.5, 1.0, 2.0, 1.5], np.float32)
    for reduction in ("none", "mean", "sum"):
      want = optax.losses.dice_loss(
        jnp.asarray(x),
        jnp.asarray(onehot),
        class_weights=jnp.asarray(cw),
        ignore_background=True,
        reduction=reduction,
      )
      got = pel_jax.dice_loss(
        x,
        onehot,
        smooth_nr=1.0,
        smooth_dr=1.0,
        from_logits=True,
        class_weights=cw,
        include_background=False,
        reduction="none",
      )
      if reduction != "none":  # optax reduces over classes only: [B].
        got = np.mean(got, -1) if reduction == "mean" else np.sum(got, -1)
      chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)

  def test_sigmoid_single_channel(self):
    rng = np.random.default_rng(6)
    shape = (3, 6, 5, 1)
    x = reference.make_predictions(rng, shape, "sigmoid")
    g = reference.make_targets(rng, shape, "multihot")
    want = optax.losses.dice_loss(
      jnp.asarray(x),
      jnp.asarray(g),
      alpha=0.4,
      beta=0.6,
      smooth=0.5,
      reduction="none",
    )
    got = pel_jax.pel_loss(
      x,
      g,
      exponent=1.0,
      fp_weight=0.4,
      fn_weight=0.6,
      smooth_nr=0.5,
      smooth_dr=0.5,
      from_logits=True,
      reduction="none",
    )
    chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)

  def test_probabilities(self):
    # optax checks that probabilities sum to 1 (eagerly only).
    rng = np.random.default_rng(7)
    shape = (2, 5, 4, 3)
    p = np.asarray(reference.np_softmax(rng.standard_normal(shape)), np.float32)
    onehot = reference.make_targets(rng, shape, "onehot")
    want = optax.losses.dice_loss(
      jnp.asarray(p), jnp.asarray(onehot), apply_softmax=False, reduction="none"
    )
    got = pel_jax.dice_loss(
      p, onehot, smooth_nr=1.0, smooth_dr=1.0, reduction="none"
    )
    chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)


class VariantTest(parameterized.TestCase):
  """dice/jaccard/tversky are pel_loss with fixed settings, which they lock."""

  _SHAPE = (2, 5, 4, 3)

  @parameterized.named_parameters(
    ("dice", pel_jax.dice_loss, dict(fp_weight=0.5, fn_weight=0.5), {}),
    ("jaccard", pel_jax.jaccard_loss, dict(fp_weight=1.0, fn_weight=1.0), {}),
    (
      "tversky_default",
      pel_jax.tversky_loss,
      dict(fp_weight=0.3, fn_weight=0.7),
      {},
    ),
    (
      "tversky_given",
      pel_jax.tversky_loss,
      dict(fp_weight=0.8, fn_weight=0.1),
      dict(fp_weight=0.8, fn_weight=0.1),
    ),
  )
  def test_equals_oracle(self, loss_fn, weights, kwargs):
    rng = np.random.default_rng(8)
    x = reference.make_predictions(rng, self._SHAPE, "softmax")
    ids = reference.make_targets(rng, self._SHAPE, "int")
    mask = reference.make_mask(rng, self._SHAPE)
    common = dict(from_logits=True, where=mask, reduction="none")
    got = loss_fn(x, ids, **kwargs, **common)
    want = reference.pel_numpy(
      x, ids, exponent=1.0, scale=1.0, **weights, **common
    )
    chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)
    chex.assert_trees_all_close(
      got,
      pel_jax.pel_loss(x, ids, exponent=1.0, scale=1.0, **weights, **common),
      atol=1e-7,
    )

  @parameterized.named_parameters(
    ("dice_exponent", pel_jax.dice_loss, dict(exponent=2.0)),
    ("dice_scale", pel_jax.dice_loss, dict(scale=2.0)),
    ("dice_fp", pel_jax.dice_loss, dict(fp_weight=0.3)),
    ("dice_fn", pel_jax.dice_loss, dict(fn_weight=0.3)),
    ("jaccard_exponent", pel_jax.jaccard_loss, dict(exponent=2.0)),
    ("jaccard_scale", pel_jax.jaccard_loss, dict(scale=2.0)),
    ("jaccard_fp", pel_jax.jaccard_loss, dict(fp_weight=0.3)),
    ("jaccard_fn", pel_jax.jaccard_loss, dict(fn_weight=0.3)),
    ("tversky_exponent", pel_jax.tversky_loss, dict(exponent=2.0)),
    ("tversky_scale", pel_jax.tversky_loss, dict(scale=2.0)),
  )
  def test_fixed_settings_raise(self, loss_fn, kwargs):
    p = np.full((1, 2, 2), 0.5, np.float32)
    t = np.zeros((1, 2, 2), np.float32)
    name = next(iter(kwargs))
    with self.assertRaisesRegex(TypeError, name):
      loss_fn(p, t, **kwargs)


class OutOfRangeIdsTest(parameterized.TestCase):
  """Ids outside [0, C) (other than ignore_index) belong to no class."""

  @parameterized.named_parameters(
    ("plain", dict()),
    ("ignore", dict(ignore_index=-1)),
    ("ignore_255_batch", dict(ignore_index=255, batch=True)),
    ("softmax_logits", dict(from_logits=True)),
  )
  def test_matches_no_class_oracle(self, kwargs):
    rng = np.random.default_rng(9)
    shape = (2, 5, 4, 3)
    kind = "softmax" if kwargs.get("from_logits") else "probs"
    p = reference.make_predictions(rng, shape, kind)
    ids = reference.make_targets(rng, shape, "int")
    bad = rng.uniform(size=ids.shape) < 0.3
    ids = np.where(bad, rng.choice([-1, 3, 7, 255], size=ids.shape), ids)
    ids = ids.astype(np.int32)
    got = pel_jax.pel_loss(p, ids, reduction="none", **kwargs)
    want = reference.pel_numpy(p, ids, reduction="none", **kwargs)
    chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)
    # Same as float targets from jax.nn.one_hot-like encoding (all-zero rows).
    if "ignore_index" not in kwargs:
      onehot = np.stack([(ids == c) for c in range(3)], -1).astype(np.float32)
      chex.assert_trees_all_close(
        got, pel_jax.pel_loss(p, onehot, reduction="none", **kwargs), atol=1e-6
      )

  @parameterized.product(kind=("probs", "softmax"), exponent=(3.0, 0.5))
  def test_gradient_equals_one_hot_targets(self, kind, exponent):
    # Ids take the per-pixel power path; float one-hot targets the per-class
    # one. Ids outside [0, C) must get the gradient of an all-zero row.
    rng = np.random.default_rng(10)
    shape = (2, 5, 4, 3)
    p = reference.make_predictions(rng, shape, kind)
    ids = reference.make_targets(rng, shape, "int")
    ids = np.where(rng.uniform(size=ids.shape) < 0.3, 7, ids).astype(np.int32)
    onehot = np.stack([(ids == c) for c in range(3)], -1).astype(np.float32)
    kwargs = dict(exponent=exponent, from_logits=kind == "softmax")
    grad = jax.grad(lambda x, t: pel_jax.pel_loss(x, t, **kwargs))
    got = grad(p, ids)
    chex.assert_tree_all_finite(got)
    chex.assert_trees_all_close(got, grad(p, onehot), atol=1e-6, rtol=1e-5)


class SingleChannelSumsTest(parameterized.TestCase):
  """One channel sums in stages of 16 rows; every remainder must add up."""

  @parameterized.product(
    shape=(
      (1, 16, 1),
      (2, 32, 1),
      (3, 48, 1),
      (2, 17, 1),
      (2, 16, 16, 1),
      (1, 8, 8, 8, 1),
      (2, 4096, 1),
    ),
    batch=(False, True),
    kind=("probs", "sigmoid"),
  )
  def test_matches_float64_oracle(self, shape, batch, kind):
    rng = np.random.default_rng(11)
    p = reference.make_predictions(rng, shape, kind)
    t = reference.make_targets(rng, shape, "soft")
    kwargs = dict(batch=batch, reduction="none", from_logits=kind != "probs")
    got = pel_jax.pel_loss(p, t, **kwargs)
    want = reference.pel_numpy(p, t, **kwargs)
    chex.assert_trees_all_close(got, want, atol=ATOL, rtol=RTOL)
    grad = jax.grad(lambda x, kw=kwargs: jnp.sum(pel_jax.pel_loss(x, t, **kw)))
    want_grad = jax.grad(
      lambda x, kw=kwargs: jnp.sum(reference.pel_jnp(x, t, **kw))
    )
    chex.assert_trees_all_close(grad(p), want_grad(p), atol=1e-6, rtol=2e-4)


if __name__ == "__main__":
  absltest.main()

"""Bad input raises a clear error, eagerly and under jax.jit."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax

_P = np.full((2, 5, 4, 3), 0.5, np.float32)
_IDS = np.zeros((2, 5, 4), np.int32)
_SOFT = np.full((2, 5, 4, 3), 0.5, np.float32)

# name, predictions, targets, kwargs, error, regex (the argument and shapes).
_BAD = (
  (
    "shape_mismatch",
    _P,
    np.zeros((2, 5, 3, 3), np.float32),
    {},
    ValueError,
    r"`targets`.*\(2, 5, 4, 3\).*\(2, 5, 3, 3\)",
  ),
  (
    "shape_mismatch_rank",
    _P,
    np.zeros((2, 5, 4, 3, 1), np.float32),
    {},
    ValueError,
    r"`targets`.*\(2, 5, 4, 3\).*\(2, 5, 4, 3, 1\)",
  ),
  (
    "class_count_mismatch",
    _P,
    np.zeros((2, 5, 4, 2), np.float32),
    {},
    ValueError,
    r"[Cc]lass.*`predictions` \(2, 5, 4, 3\).*\(2, 5, 4, 2\)",
  ),
  (
    "int_targets_wrong_rank",
    _P,
    np.zeros((2, 5, 4, 1), np.int32),
    {},
    ValueError,
    r"`targets`.*\(2, 5, 4\).*\(2, 5, 4, 1\).*squeeze the last axis",
  ),
  (
    "int_targets_wrong_spatial",
    _P,
    np.zeros((2, 4, 5), np.int32),
    {},
    ValueError,
    r"`targets`.*\(2, 5, 4\).*\(2, 4, 5\)",
  ),
  (
    "float_targets_ignore_index",
    _P,
    _SOFT,
    dict(ignore_index=0),
    ValueError,
    r"`ignore_index`.*\(2, 5, 4, 3\)",
  ),
  (
    "ignore_index_not_int",
    _P,
    _IDS,
    dict(ignore_index=1.5),
    TypeError,
    r"`ignore_index`",
  ),
  (
    "exponent_zero",
    _P,
    _IDS,
    dict(exponent=0.0),
    ValueError,
    r"`exponent`.*> 0",
  ),
  (
    "exponent_negative",
    _P,
    _IDS,
    dict(exponent=-1.0),
    ValueError,
    r"`exponent`",
  ),
  (
    "exponent_nan",
    _P,
    _IDS,
    dict(exponent=float("nan")),
    ValueError,
    r"`exponent`",
  ),
  ("scale_zero", _P, _IDS, dict(scale=0.0), ValueError, r"`scale`"),
  (
    "fp_weight_negative",
    _P,
    _IDS,
    dict(fp_weight=-0.1),
    ValueError,
    r"`fp_weight`",
  ),
  (
    "fn_weight_negative",
    _P,
    _IDS,
    dict(fn_weight=-0.1),
    ValueError,
    r"`fn_weight`",
  ),
  (
    "smooth_nr_negative",
    _P,
    _IDS,
    dict(smooth_nr=-1e-5),
    ValueError,
    r"`smooth_nr`",
  ),
  (
    "smooth_dr_negative",
    _P,
    _IDS,
    dict(smooth_dr=-1e-5),
    ValueError,
    r"`smooth_dr`",
  ),
  (
    "smooth_inf",
    _P,
    _IDS,
    dict(smooth_dr=float("inf")),
    ValueError,
    r"`smooth_dr`",
  ),
  (
    "unknown_reduction",
    _P,
    _IDS,
    dict(reduction="max"),
    ValueError,
    r"`reduction`.*'max'",
  ),
  (
    "unknown_activation",
    _P,
    _IDS,
    dict(from_logits=True, activation="relu"),
    ValueError,
    r"`activation`.*'relu'",
  ),
  (
    "activation_without_logits",
    _P,
    _IDS,
    dict(activation="softmax"),
    ValueError,
    r"activation.*from_logits",
  ),
  (
    "softmax_single_class",
    _P[..., :1],
    _IDS,
    dict(from_logits=True, activation="softmax"),
    ValueError,
    r"softmax.*\(2, 5, 4, 1\)",
  ),
  (
    "class_weights_length",
    _P,
    _IDS,
    dict(class_weights=np.ones(2, np.float32)),
    ValueError,
    r"`class_weights`.*\(3,\).*\(2,\)",
  ),
  (
    "class_weights_rank",
    _P,
    _IDS,
    dict(class_weights=np.ones((1, 3), np.float32)),
    ValueError,
    r"`class_weights`.*\(1, 3\)",
  ),
  (
    "where_wrong_shape",
    _P,
    _IDS,
    dict(where=np.ones((2, 5), bool)),
    ValueError,
    r"`where`.*\(2, 5, 4\).*\(2, 5\)",
  ),
  (
    "where_with_class_axis",
    _P,
    _IDS,
    dict(where=np.ones((2, 5, 4, 3), bool)),
    ValueError,
    r"`where`.*\(2, 5, 4, 3\)",
  ),
  (
    "where_not_bool",
    _P,
    _IDS,
    dict(where=np.ones((2, 5, 4), np.float32)),
    TypeError,
    r"`where`.*float32",
  ),
  (
    "predictions_int",
    _P.astype(np.int32),
    _IDS,
    {},
    TypeError,
    r"`predictions`.*int32",
  ),
  ("predictions_bool", _P > 0, _IDS, {}, TypeError, r"`predictions`.*bool"),
  (
    "predictions_no_spatial",
    _P[:, 0, 0],
    _IDS[:, 0, 0],
    {},
    ValueError,
    r"`predictions`.*\(2, 3\)",
  ),
  (
    "targets_complex",
    _P,
    _SOFT.astype(np.complex64),
    {},
    TypeError,
    r"`targets`",
  ),
  (
    "no_background_single_class",
    _P[..., :1],
    _IDS,
    dict(include_background=False),
    ValueError,
    r"include_background.*\(2, 5, 4, 1\)",
  ),
  ("exponent_string", _P, _IDS, dict(exponent="3"), TypeError, r"`exponent`"),
  ("scale_none", _P, _IDS, dict(scale=None), TypeError, r"`scale`"),
  ("fp_weight_bool", _P, _IDS, dict(fp_weight=True), TypeError, r"`fp_weight`"),
  (
    "smooth_array",
    _P,
    _IDS,
    dict(smooth_nr=np.array([1e-5])),
    TypeError,
    r"`smooth_nr`",
  ),
  (
    "fn_weight_complex",
    _P,
    _IDS,
    dict(fn_weight=1j),
    TypeError,
    r"`fn_weight`",
  ),
  # Issue 9 item 5: no class, no sample, overflowing hyperparameters.
  (
    "no_classes",
    np.zeros((2, 5, 4, 0), np.float32),
    _IDS,
    {},
    ValueError,
    r"`predictions` \(2, 5, 4, 0\).*no class",
  ),
  (
    "empty_batch",
    np.zeros((0, 5, 4, 3), np.float32),
    np.zeros((0, 5, 4), np.int32),
    {},
    ValueError,
    r"`predictions` \(0, 5, 4, 3\).*empty batch",
  ),
  (
    "smooth_overflows_float32",
    _P,
    _IDS,
    dict(smooth_nr=1e39, smooth_dr=1e39),
    ValueError,
    r"`smooth_nr=1e\+39`.*float32",
  ),
  (
    "weight_overflows_float32",
    _P,
    _IDS,
    dict(fp_weight=1e38),
    ValueError,
    r"`fp_weight=1e\+38`.*float32.*\(2, 5, 4, 3\)",
  ),
  (
    "smooth_overflows_bfloat16",
    _P.astype(jnp.bfloat16),
    _IDS,
    dict(smooth_dr=1e38),
    ValueError,
    r"`smooth_dr=1e\+38`.*float32.*bfloat16",
  ),
  # Issue 20 item 4: weights are checked as the other hyperparameters are.
  (
    "ce_weight_overflows_float32",
    _P,
    _IDS,
    dict(from_logits=True, ce_weight=1e39),
    ValueError,
    r"`ce_weight=1e\+39` would overflow float32",
  ),
  (
    "class_weights_overflow_float32",
    _P,
    _IDS,
    dict(class_weights=(1.0, 1e39, 1.0)),
    ValueError,
    r"`class_weights` must be finite.*float32.*\[1e\+39\] at class\(es\) \[1\]",
  ),
  (
    "class_weights_negative",
    _P,
    _IDS,
    dict(class_weights=np.array([1.0, -0.5, 1.0])),
    ValueError,
    r"`class_weights` must be finite, >= 0.*\[-0.5\] at class\(es\) \[1\]",
  ),
  (
    "class_weights_nan",
    _P,
    _IDS,
    dict(class_weights=[np.nan, 1.0, 1.0]),
    ValueError,
    r"`class_weights`.*\[nan\] at class\(es\) \[0\]",
  ),
  (
    "batch_not_a_bool",
    _P,
    _IDS,
    dict(batch="yes"),
    TypeError,
    r"`batch`.*static Python bool",
  ),
  # Issue 9 item 6: layout mistakes name the likely cause.
  (
    "channels_first_predictions_ids",
    np.zeros((2, 3, 16, 16), np.float32),
    np.zeros((2, 16, 16), np.int32),
    {},
    ValueError,
    r"\(2, 3, 16, 16\) look channels-first.*moveaxis",
  ),
  (
    "channels_first_float_targets",
    np.zeros((2, 16, 12, 3), np.float32),
    np.zeros((2, 3, 16, 12), np.float32),
    {},
    ValueError,
    r"class axis first.*moveaxis\(targets, 1, -1\)",
  ),
  (
    "one_hot_integer_targets",
    _P,
    np.zeros((2, 5, 4, 3), np.int32),
    {},
    ValueError,
    r"look like one-hot labels stored as integers",
  ),
  (
    "predictions_without_class_axis",
    np.zeros((2, 16, 16), np.float32),
    np.zeros((2, 16, 16, 1), np.float32),
    {},
    ValueError,
    r"lack the class axis.*predictions\[\.\.\., None\]",
  ),
  (
    "mask_without_class_axis",
    np.zeros((2, 16, 16, 1), np.float32),
    np.zeros((2, 16, 16), np.float32),
    {},
    ValueError,
    r"targets\[\.\.\., None\]",
  ),
  (
    "channels_first_where",
    np.zeros((2, 2, 32, 32), np.float32),
    np.zeros((2, 2, 32), np.int32),
    dict(where=np.ones((2, 32, 32), bool)),
    ValueError,
    r"`where`.*look channels-first",
  ),
  (
    "channels_first_class_weights",
    np.zeros((2, 2, 32, 32), np.float32),
    np.zeros((2, 2, 32), np.int32),
    dict(class_weights=np.ones(2, np.float32)),
    ValueError,
    r"`class_weights`.*look channels-first",
  ),
  (
    "rank_two_predictions",
    np.zeros((2, 16), np.float32),
    np.zeros((2,), np.int32),
    {},
    ValueError,
    r"`predictions`.*\(2, 16\).*predictions\[\.\.\., None\]",
  ),
  # Issue 25: legal shapes that are almost certainly a layout mistake, and
  # errors that name the targets' dtype.
  (
    "single_image_without_batch",
    np.zeros((64, 80, 3), np.float32),
    np.zeros((64, 80), np.int32),
    {},
    ValueError,
    r"`predictions` \(64, 80, 3\) look like one image \[H, W, C\].*"
    r"predictions\[None\].*\[batch, length, 1, C\]",
  ),
  (
    "single_channels_first_image",
    np.zeros((3, 64, 96), np.float32),
    np.zeros((3, 64, 96), np.float32),
    {},
    ValueError,
    r"\(3, 64, 96\) look like one channels-first image \[C, H, W\].*"
    r"moveaxis\(predictions, 0, -1\)\[None\]",
  ),
  (
    "channels_first_on_both_sides",
    np.zeros((2, 3, 32, 40), np.float32),
    np.zeros((2, 3, 32, 40), np.float32),
    {},
    ValueError,
    r"`predictions` and `targets` \(2, 3, 32, 40\) look channels-first.*"
    r"40 classes.*moveaxis\(x, 1, -1\)",
  ),
  (
    "channels_first_binary_bool_mask",
    np.zeros((2, 1, 32, 32), np.float32),
    np.zeros((2, 1, 32, 32), bool),
    {},
    ValueError,
    r"\(2, 1, 32, 32\) look channels-first",
  ),
  (
    "binary_int_mask_with_channel",
    _P[..., :1],
    np.zeros((2, 5, 4, 1), np.uint8),
    {},
    ValueError,
    r"^(?!.*one-hot).*\(uint8\).*squeeze the last axis \(`targets\[\.\.\., 0\]`\)",
  ),
  (
    "bool_targets_named_bool",
    _P,
    np.zeros((2, 5, 4), bool),
    {},
    ValueError,
    r"^Bool \(bool\) `targets` must have the shape",
  ),
  (
    "bool_targets_class_count",
    _P,
    np.zeros((2, 5, 4, 2), bool),
    {},
    ValueError,
    r"3 classes but bool \(bool\) `targets` \(2, 5, 4, 2\)",
  ),
  (
    "bool_targets_ignore_index",
    _P,
    np.zeros((2, 5, 4, 3), bool),
    dict(ignore_index=0),
    ValueError,
    r"got bool targets of shape \(2, 5, 4, 3\) and dtype bool",
  ),
)


class BadInputTest(parameterized.TestCase):
  @parameterized.named_parameters(*_BAD)
  def test_eager(self, predictions, targets, kwargs, error, regex):
    with self.assertRaisesRegex(error, regex):
      pel_jax.pel_loss(predictions, targets, **kwargs)

  @parameterized.named_parameters(*_BAD)
  def test_jit(self, predictions, targets, kwargs, error, regex):
    f = jax.jit(lambda p, t: pel_jax.pel_loss(p, t, **kwargs))
    with self.assertRaisesRegex(error, regex):
      f(predictions, targets)

  @parameterized.parameters(
    "exponent", "scale", "fp_weight", "fn_weight", "smooth_nr", "smooth_dr"
  )
  def test_traced_hyperparameter(self, name):
    f = jax.jit(lambda p, t, v: pel_jax.pel_loss(p, t, **{name: v}))
    with self.assertRaisesRegex(
      TypeError, f"`{name}`.*static.*static_argnames.*functools.partial"
    ):
      f(_P, _IDS, 2.0)

  @parameterized.parameters("from_logits", "batch", "include_background")
  def test_traced_flag(self, name):
    # JAX's raw TracerBoolConversionError before; now says what to do.
    f = jax.jit(lambda p, t, v: pel_jax.pel_loss(p, t, **{name: v}))
    with self.assertRaisesRegex(
      TypeError, f"`{name}` must be a static Python bool.*static_argnames"
    ):
      f(_P, _IDS, True)
    # Marked static, it works.
    g = jax.jit(
      lambda p, t, v: pel_jax.pel_loss(p, t, **{name: v}), static_argnames="v"
    )
    np.testing.assert_allclose(
      g(_P, _IDS, v=True), pel_jax.pel_loss(_P, _IDS, **{name: True})
    )

  def test_large_smoothing_is_fine_in_float64(self):
    # The bound is the compute dtype's: float64 holds 1e39.
    with jax.enable_x64(True):
      p = jnp.asarray(_P, jnp.float64)
      loss = pel_jax.pel_loss(p, _IDS, smooth_nr=1e39, smooth_dr=1e39)
      np.testing.assert_allclose(loss, 0.0, atol=1e-12)  # Ratio -> 1.

  def test_class_weights_checked_when_concrete_only(self):
    # Traced weights have no values at trace time: they pass unchecked (as
    # before), and concrete ones, in range, give the same loss.
    w = np.array([0.5, 2.0, 0.0], np.float32)
    traced = jax.jit(lambda p, t, w: pel_jax.pel_loss(p, t, class_weights=w))
    want = np.mean(np.asarray(pel_jax.pel_loss(_P, _IDS, reduction="none")) * w)
    np.testing.assert_allclose(traced(_P, _IDS, w), want, rtol=1e-6)
    np.testing.assert_allclose(
      pel_jax.pel_loss(_P, _IDS, class_weights=jnp.asarray(w)), want, rtol=1e-6
    )
    with jax.enable_x64(True):  # float64 holds 1e39.
      p = jnp.asarray(_P, jnp.float64)
      loss = pel_jax.pel_loss(p, _IDS, class_weights=(1.0, 1e39, 1.0))
      self.assertTrue(np.isfinite(loss))

  @parameterized.named_parameters(
    ("dice", pel_jax.dice_loss),
    ("jaccard", pel_jax.jaccard_loss),
    ("tversky", pel_jax.tversky_loss),
  )
  def test_variants_validate(self, loss_fn):
    with self.assertRaisesRegex(ValueError, r"`where`"):
      jax.jit(lambda p, t: loss_fn(p, t, where=np.ones((2, 5), bool)))(_P, _IDS)
    with self.assertRaisesRegex(ValueError, r"`smooth_dr`"):
      loss_fn(_P, _IDS, smooth_dr=-1.0)

  def test_ignore_index_outside_target_dtype(self):
    ids = _IDS.astype(np.uint8)
    with self.assertRaisesRegex(ValueError, r"`ignore_index=-1`.*uint8"):
      pel_jax.pel_loss(_P, ids, ignore_index=-1)
    with self.assertRaisesRegex(ValueError, r"`ignore_index=300`.*uint8"):
      jax.jit(lambda p, t: pel_jax.pel_loss(p, t, ignore_index=300))(_P, ids)

  def test_accepts_python_sequences(self):
    # Lists and tuples are array-likes: same value as the arrays they hold.
    weights = tuple(float(w) for w in range(1, _P.shape[-1] + 1))
    mask = np.ones(_IDS.shape, bool)
    mask[0, 0] = False
    a = pel_jax.pel_loss(
      _P.tolist(), _IDS.tolist(), class_weights=weights, where=mask.tolist()
    )
    b = pel_jax.pel_loss(_P, _IDS, class_weights=np.array(weights), where=mask)
    np.testing.assert_allclose(a, b, rtol=1e-6)

  def test_accepts_numpy_scalars_and_ints(self):
    # numpy scalars and Python ints are numbers too (no error, same value).
    a = pel_jax.pel_loss(
      _P, _IDS, exponent=np.float32(2.0), scale=1, fp_weight=np.int64(1)
    )
    b = pel_jax.pel_loss(_P, _IDS, exponent=2.0, scale=1.0, fp_weight=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-7)


class BinaryWithoutClassAxisTest(absltest.TestCase):
  """optax's binary layout, `[B, H, W]` logits and targets: refused, not misread.

  `[B, H, W]` is also legal channels-last input (W classes), so pel_jax
  cannot take it as one binary channel; the errors name the fix, and the
  fixed call is binary Dice (float64 oracle by hand).
  """

  def test_refused_with_the_fix_named(self):
    x = np.zeros((8, 64, 64), np.float32)
    for t in (
      np.zeros((8, 64, 64), np.float32),
      np.zeros((8, 64, 64), np.int32),
    ):
      with self.assertRaisesRegex(
        ValueError, r"binary.*predictions\[\.\.\., None\]"
      ):
        pel_jax.dice_loss(x, t, from_logits=True)

  def test_the_fix_is_binary_dice(self):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (2, 5, 6))
    ids = rng.integers(0, 2, (2, 5, 6))
    p = 1 / (1 + np.exp(-x))
    tp, sp, sg = ((p * ids).sum((1, 2)), p.sum((1, 2)), ids.sum((1, 2)))
    want = np.mean(1 - 2 * tp / (sp + sg))
    with jax.enable_x64(True):
      got = pel_jax.dice_loss(
        x[..., None], ids, from_logits=True, smooth_nr=0, smooth_dr=0
      )
    np.testing.assert_allclose(got, want, rtol=1e-12)


if __name__ == "__main__":
  absltest.main()

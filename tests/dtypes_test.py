"""Input dtypes: loss accumulates in float32 (float64 for float64 inputs)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests import reference

_SHAPE = (2, 5, 4, 3)

# dtype, loss dtype, loss tolerance vs the oracle on the rounded inputs.
_DTYPES = (
  ("float32", jnp.float32, jnp.float32, 2e-5),
  ("float64", jnp.float64, jnp.float64, 1e-12),
  ("bfloat16", jnp.bfloat16, jnp.float32, 2e-5),
  ("float16", jnp.float16, jnp.float32, 2e-5),
)


class DtypeTest(parameterized.TestCase):
  @parameterized.named_parameters(*_DTYPES)
  def test_loss_and_gradient_dtypes(self, dtype, loss_dtype, tol):
    with jax.enable_x64(dtype == jnp.float64):
      rng = np.random.default_rng(0)
      for kind, options in (
        ("softmax", dict(from_logits=True)),
        ("probs", dict(exponent=0.5)),
        ("sigmoid", dict(from_logits=True, activation="sigmoid", batch=True)),
      ):
        x = jnp.asarray(reference.make_predictions(rng, _SHAPE, kind), dtype)
        ids = reference.make_targets(rng, _SHAPE, "int")
        loss, grad = jax.jit(
          jax.value_and_grad(lambda p: pel_jax.pel_loss(p, ids, **options))
        )(x)
        self.assertEqual(loss.dtype, loss_dtype)
        self.assertEqual(grad.dtype, dtype)
        # The oracle sees exactly the values the library saw (rounded).
        want = reference.pel_numpy(np.asarray(x), ids, **options)
        np.testing.assert_allclose(loss, want, atol=tol, rtol=tol)
        # Gradient: reference autodiff in float32/64 on the same values.
        wide = x.astype(loss_dtype)
        want_grad = jax.jit(
          jax.grad(lambda p: reference.pel_jnp(p, ids, **options))
        )(wide)
        gtol = (
          1e-10
          if dtype == jnp.float64
          else (2e-4 if dtype == jnp.float32 else 1e-2)
        )
        chex.assert_trees_all_close(
          grad.astype(loss_dtype), want_grad, rtol=gtol, atol=gtol * 1e-2
        )

  @parameterized.named_parameters(*_DTYPES)
  def test_soft_target_gradient_dtype(self, dtype, loss_dtype, tol):
    del tol
    with jax.enable_x64(dtype == jnp.float64):
      rng = np.random.default_rng(1)
      x = jnp.asarray(reference.make_predictions(rng, _SHAPE), dtype)
      t = jnp.asarray(reference.make_targets(rng, _SHAPE, "soft"), dtype)
      loss, (gx, gt) = jax.jit(
        jax.value_and_grad(
          lambda p, y: pel_jax.pel_loss(p, y, exponent=2.0), (0, 1)
        )
      )(x, t)
      self.assertEqual(loss.dtype, loss_dtype)
      self.assertEqual(gx.dtype, dtype)
      self.assertEqual(gt.dtype, dtype)
      chex.assert_tree_all_finite((gx, gt))

  def test_float32_predictions_float64_soft_targets(self):
    # Mixed: targets follow their own dtype for the cotangent.
    with jax.enable_x64(True):
      rng = np.random.default_rng(2)
      x = jnp.asarray(reference.make_predictions(rng, _SHAPE), jnp.float32)
      t = jnp.asarray(reference.make_targets(rng, _SHAPE, "soft"), jnp.float64)
      loss, (gx, gt) = jax.jit(
        jax.value_and_grad(lambda p, y: pel_jax.pel_loss(p, y), (0, 1))
      )(x, t)
      self.assertEqual(gx.dtype, jnp.float32)
      self.assertEqual(gt.dtype, jnp.float64)
      np.testing.assert_allclose(
        loss, reference.pel_numpy(np.asarray(x), np.asarray(t)), atol=2e-5
      )

  @parameterized.named_parameters(*_DTYPES)
  def test_weight_map_dtype(self, dtype, loss_dtype, tol):
    del tol
    with jax.enable_x64(dtype == jnp.float64):
      rng = np.random.default_rng(6)
      x = jnp.asarray(reference.make_predictions(rng, _SHAPE, "softmax"), dtype)
      ids = reference.make_targets(rng, _SHAPE, "int")
      got = jax.jit(lambda p: pel_jax.weight_map(p, ids, from_logits=True))(x)
      self.assertEqual(got.dtype, dtype)
      chex.assert_shape(got, _SHAPE[:-1])
      grad = jax.jit(
        jax.grad(lambda p: reference.pel_jnp(p, ids, from_logits=True))
      )(x.astype(loss_dtype))
      want = jnp.sum(jnp.abs(grad), -1)
      rtol = (
        1e-10
        if dtype == jnp.float64
        else (2e-4 if dtype == jnp.float32 else 2e-2)
      )
      chex.assert_trees_all_close(
        got.astype(loss_dtype), want, rtol=rtol, atol=rtol * 1e-2
      )

  def test_bool_targets(self):
    rng = np.random.default_rng(3)
    x = reference.make_predictions(rng, _SHAPE, "sigmoid")
    t = reference.make_targets(rng, _SHAPE, "bool")
    got = pel_jax.pel_loss(
      x, t, from_logits=True, activation="sigmoid", reduction="none"
    )
    want = reference.pel_numpy(
      x,
      t.astype(np.float32),
      from_logits=True,
      activation="sigmoid",
      reduction="none",
    )
    chex.assert_trees_all_close(got, want, atol=2e-5)
    grad = jax.jit(
      jax.grad(
        lambda p: pel_jax.pel_loss(p, t, from_logits=True, activation="sigmoid")
      )
    )(x)
    chex.assert_tree_all_finite(grad)

  @parameterized.parameters(jnp.uint8, jnp.int8, jnp.int64)
  def test_integer_target_dtypes(self, dtype):
    with jax.enable_x64(dtype == jnp.int64):
      rng = np.random.default_rng(4)
      x = reference.make_predictions(rng, _SHAPE)
      ids = reference.make_targets(rng, _SHAPE, "int")
      got = pel_jax.pel_loss(x, jnp.asarray(ids, dtype), reduction="none")
      want = reference.pel_numpy(x, ids, reduction="none")
      chex.assert_trees_all_close(got, want, atol=2e-5)

  def test_bfloat16_four_megapixels(self):
    # One large batch: float32 accumulation over 1M pixels per sample stays
    # within ~1e-3 of a float64 sum of the same bf16 values.
    rng = np.random.default_rng(5)
    shape = (4, 1024, 1024, 1)
    x = jnp.asarray(rng.standard_normal(shape, np.float32) * 2, jnp.bfloat16)
    t = jnp.asarray(rng.uniform(size=shape) < 0.3, jnp.bfloat16)
    f = lambda p: pel_jax.pel_loss(p, t, from_logits=True, reduction="sum")
    loss, grad = jax.jit(jax.value_and_grad(f))(x)
    self.assertEqual(loss.dtype, jnp.float32)
    self.assertEqual(grad.dtype, jnp.bfloat16)
    want = reference.pel_numpy(
      np.asarray(x), np.asarray(t), from_logits=True, reduction="sum"
    )
    np.testing.assert_allclose(loss, want, rtol=1e-3, atol=1e-3)
    # Per-sample too.
    per = pel_jax.pel_loss(x, t, from_logits=True, reduction="none")
    want_per = reference.pel_numpy(
      np.asarray(x), np.asarray(t), from_logits=True, reduction="none"
    )
    np.testing.assert_allclose(per, want_per, rtol=1e-3, atol=1e-3)
    chex.assert_tree_all_finite(grad)


if __name__ == "__main__":
  absltest.main()

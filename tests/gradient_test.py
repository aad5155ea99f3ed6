"""The fused custom VJP against autodiff of the plain-jnp reference."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests import reference

# name, prediction shape, prediction kind, target kind, options.
_CASES = (
  ("probs_int_n3", (2, 5, 4, 3), "probs", "int", dict(exponent=3.0)),
  (
    "probs_int_n05_mask",
    (2, 5, 4, 3),
    "probs",
    "int",
    dict(exponent=0.5, mask=True),
  ),
  (
    "probs_soft_n2_batch",
    (2, 4, 3, 2),
    "probs",
    "soft",
    dict(exponent=2.0, batch=True),
  ),
  (
    "probs_soft_n1_weights",
    (2, 4, 3, 3),
    "probs",
    "soft",
    dict(
      exponent=1.0, fp_weight=0.3, fn_weight=0.7, class_weights=(0.5, 2.0, 1.0)
    ),
  ),
  (
    "sigmoid_single_n3",
    (2, 5, 4, 1),
    "sigmoid",
    "multihot",
    dict(exponent=3.0, from_logits=True),
  ),
  (
    "sigmoid_multi_soft_n05",
    (2, 4, 3, 2),
    "sigmoid",
    "soft",
    dict(exponent=0.5, from_logits=True, activation="sigmoid", mask=True),
  ),
  (
    "softmax_int_n2_ignore_nobg",
    (2, 5, 4, 3),
    "softmax",
    "int",
    dict(
      exponent=2.0,
      from_logits=True,
      ignore_index=2,
      include_background=False,
      reduction="sum",
    ),
  ),
  (
    "softmax_soft_n1_batch_mask",
    (2, 4, 3, 3),
    "softmax",
    "soft",
    dict(
      exponent=1.0,
      from_logits=True,
      batch=True,
      mask=True,
      class_weights=(1.0, 0.5, 3.0),
      scale=0.7,
    ),
  ),
  (
    "softmax_int_n05_batch_3d",
    (2, 3, 2, 2, 3),
    "softmax",
    "int",
    dict(exponent=0.5, from_logits=True, batch=True),
  ),
  (
    "probs_onehot_n1p7_1d",
    (3, 6, 2),
    "probs",
    "onehot",
    dict(exponent=1.7, scale=0.5, reduction="none"),
  ),
)


def _case(shape, pred_kind, target_kind, options, dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  predictions = reference.make_predictions(rng, shape, pred_kind, dtype)
  targets = reference.make_targets(rng, shape, target_kind, dtype)
  options = dict(options)
  if options.pop("mask", False):
    options["where"] = reference.make_mask(rng, shape)
  if "class_weights" in options:
    options["class_weights"] = np.asarray(options["class_weights"], dtype)
  return predictions, targets, options


def _scalar(fn, **kwargs):
  """sum of the loss (handles reduction="none") as a function of (p, t)."""
  return lambda p, t: jnp.sum(fn(p, t, **kwargs))


class FirstOrderTest(parameterized.TestCase):
  @parameterized.named_parameters(*_CASES)
  def test_grad_matches_reference_autodiff(
    self, shape, pred_kind, target_kind, options
  ):
    p, t, options = _case(shape, pred_kind, target_kind, options)
    soft = target_kind != "int"
    argnums = (0, 1) if soft else 0
    got = jax.jit(jax.grad(_scalar(pel_jax.pel_loss, **options), argnums))(p, t)
    want = jax.jit(jax.grad(_scalar(reference.pel_jnp, **options), argnums))(
      p, t
    )
    chex.assert_trees_all_close(got, want, rtol=2e-4, atol=1e-6)
    chex.assert_tree_all_finite(got)
    # Not trivially zero.
    self.assertGreater(
      float(jnp.max(jnp.abs(jnp.asarray(got[0] if soft else got)))), 1e-4
    )

  @parameterized.named_parameters(*_CASES)
  def test_check_grads_float64(self, shape, pred_kind, target_kind, options):
    with jax.enable_x64(True):
      p, t, options = _case(
        shape, pred_kind, target_kind, options, dtype=np.float64
      )
      p = jnp.asarray(p)
      loss = functools.partial(pel_jax.pel_loss, **options)
      jtu.check_grads(
        jax.jit(lambda x: loss(x, t)), (p,), order=1, modes=("rev",)
      )
      if target_kind != "int":  # Gradient w.r.t. soft targets too.
        jtu.check_grads(
          jax.jit(lambda y: loss(p, y)),
          (jnp.asarray(t),),
          order=1,
          modes=("rev",),
        )

  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_jit_grad_wrt_both(self, dtype):
    with jax.enable_x64(dtype == jnp.float64):
      p, t, options = _case(
        (2, 4, 3, 3),
        "sigmoid",
        "soft",
        dict(exponent=2.0, from_logits=True, activation="sigmoid"),
        dtype=dtype,
      )
      f = _scalar(pel_jax.pel_loss, **options)
      got = jax.jit(jax.grad(f, (0, 1)))(p, t)
      want = jax.grad(_scalar(reference.pel_jnp, **options), (0, 1))(
        jnp.asarray(p), jnp.asarray(t)
      )
      self.assertEqual(got[0].dtype, dtype)
      self.assertEqual(got[1].dtype, dtype)
      tol = 1e-10 if dtype == jnp.float64 else 1e-6
      chex.assert_trees_all_close(got, want, rtol=200 * tol, atol=tol)


# Second order: small inputs, float64.
_SECOND_ORDER = (
  ("probs_int_n3", (1, 3, 2), "probs", "int", dict(exponent=3.0)),
  ("probs_int_n05", (1, 3, 2), "probs", "int", dict(exponent=0.5, mask=True)),
  (
    "probs_soft_n2_batch",
    (2, 2, 2),
    "probs",
    "soft",
    dict(exponent=2.0, batch=True),
  ),
  (
    "sigmoid_n1",
    (2, 3, 1),
    "sigmoid",
    "multihot",
    dict(exponent=1.0, from_logits=True, fp_weight=0.3, fn_weight=0.7),
  ),
  (
    "softmax_n2_weights",
    (1, 3, 3),
    "softmax",
    "int",
    dict(exponent=2.0, from_logits=True, class_weights=(1.0, 2.0, 0.5)),
  ),
  (
    "softmax_n05_batch",
    (2, 2, 3),
    "softmax",
    "soft",
    dict(exponent=0.5, from_logits=True, batch=True),
  ),
)


class SecondOrderTest(parameterized.TestCase):
  @parameterized.named_parameters(*_SECOND_ORDER)
  def test_hessian_rev_over_rev(self, shape, pred_kind, target_kind, options):
    with jax.enable_x64(True):
      p, t, options = _case(
        shape, pred_kind, target_kind, options, dtype=np.float64
      )
      p, t = jnp.asarray(p), jnp.asarray(t)
      f = lambda x: pel_jax.pel_loss(x, t, **options)
      g = lambda x: reference.pel_jnp(x, t, **options)
      got = jax.jit(jax.jacrev(jax.jacrev(f)))(p)
      want = jax.jit(jax.jacrev(jax.jacrev(g)))(p)
      chex.assert_trees_all_close(got, want, rtol=1e-7, atol=1e-10)
      # Grad of a vector-Jacobian product.
      v = jnp.asarray(np.random.default_rng(1).standard_normal(p.shape))
      hvp = lambda fn: jax.jit(
        jax.grad(lambda x: jnp.vdot(v, jax.grad(fn)(x)))
      )(p)
      chex.assert_trees_all_close(hvp(f), hvp(g), rtol=1e-7, atol=1e-10)

  @parameterized.named_parameters(*_SECOND_ORDER)
  def test_check_grads_order2(self, shape, pred_kind, target_kind, options):
    with jax.enable_x64(True):
      p, t, options = _case(
        shape, pred_kind, target_kind, options, dtype=np.float64
      )
      jtu.check_grads(
        jax.jit(lambda x: pel_jax.pel_loss(x, t, **options)),
        (jnp.asarray(p),),
        order=2,
        modes=("rev",),
      )


class ForwardModeTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("jvp", lambda f, x: jax.jvp(f, (x,), (x,))),
    ("jacfwd", lambda f, x: jax.jacfwd(f)(x)),
  )
  def test_forward_mode_raises(self, transform):
    x = jnp.full((1, 2, 2, 2), 0.5)
    t = jnp.zeros((1, 2, 2), jnp.int32)
    f = lambda p: pel_jax.pel_loss(p, t)
    with self.assertRaisesRegex(
      TypeError, "can't apply forward-mode autodiff.*custom_vjp"
    ):
      transform(f, x)

  @parameterized.named_parameters(
    ("probs", dict()),
    ("softmax_logits", dict(from_logits=True)),
  )
  def test_hessian_is_correct(self, options):
    # Forward-over-reverse works (documented): JAX differentiates the
    # custom VJP's rule, written in differentiable jnp, in forward mode.
    with jax.enable_x64(True):
      x = jnp.asarray(np.random.default_rng(0).uniform(0.1, 0.9, (1, 2, 2, 2)))
      t = jnp.array([[[0, 1], [1, 1]]], jnp.int32)
      got = jax.hessian(lambda p: pel_jax.pel_loss(p, t, **options))(x)
      want = jax.jacrev(
        jax.jacrev(lambda p: reference.pel_jnp(p, t, **options))
      )(x)
      chex.assert_trees_all_close(got, want, rtol=1e-7, atol=1e-10)


class WeightMapTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("pel_probs", None, dict(exponent=2.0)),
    ("pel_logits_batch", None, dict(from_logits=True, batch=True)),
    ("dice_logits", pel_jax.dice_loss, dict(from_logits=True)),
    ("pel_none_mask", None, dict(reduction="none", mask=True)),
  )
  def test_matches_reference(self, loss_fn, options):
    rng = np.random.default_rng(2)
    shape = (2, 5, 4, 3)
    kind = "softmax" if options.get("from_logits") else "probs"
    p = reference.make_predictions(rng, shape, kind)
    ids = reference.make_targets(rng, shape, "int")
    options = dict(options)
    if options.pop("mask", False):
      options["where"] = reference.make_mask(rng, shape)
    kw = dict(options)
    if loss_fn is not None:
      kw.update(exponent=1.0, fp_weight=0.5, fn_weight=0.5)
    got = jax.jit(
      lambda x: pel_jax.weight_map(x, ids, loss_fn=loss_fn, **options)
    )(p)
    grad = jax.jit(
      jax.grad(lambda x: jnp.sum(reference.pel_jnp(x, ids, **kw)))
    )(p)
    want = jnp.sum(jnp.abs(grad), axis=-1)
    chex.assert_shape(got, shape[:-1])
    self.assertEqual(got.dtype, jnp.float32)
    chex.assert_trees_all_close(got, want, rtol=2e-4, atol=1e-7)
    if "where" in options:  # Masked pixels carry no weight.
      np.testing.assert_array_equal(np.asarray(got)[~options["where"]], 0.0)


if __name__ == "__main__":
  absltest.main()

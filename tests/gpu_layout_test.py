"""The CUDA layout of the softmax sums (`pel_jax._gpu`), run on the CPU.

Setting `_gpu.PLATFORMS` to ("cpu",) lowers the layout a CUDA compile gets
here too. Values are checked against the float64 oracle and gradients (in
the logits and in soft targets) against central differences of it.
"""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from pel_jax import _core
from pel_jax import _gpu
from tests import reference
from tests import reference_family

_OPTIONS = (
  ("n3", dict(exponent=3.0)),
  ("n05_batch_fp_fn", dict(exponent=0.5, batch=True, fp_weight=0.3)),
  ("squared_n2_mask", dict(exponent=2.0, squared=True, mask=True)),
  ("ce_smoothing_n1", dict(ce_weight=0.7, ce_label_smoothing=0.2)),
  ("generalized_n25", dict(exponent=2.5, generalized="simple")),
  (
    "ce_squared_batch_mask",
    dict(exponent=3.0, ce_weight=0.5, batch=True, squared=True, mask=True),
  ),
)


def _on_cpu():
  return mock.patch.object(_gpu, "PLATFORMS", ("cpu",))


class GpuLayoutTest(parameterized.TestCase):
  @parameterized.product(
    options=_OPTIONS, target=("ids", "soft"), classes=(2, _gpu.MIN_CLASSES)
  )
  def test_value_and_gradients_match_oracle(self, options, target, classes):
    # Two classes take the log-sigmoid form (no log-sum-exp).
    rng = np.random.default_rng(5)
    shape = (2, 2, 3, classes)
    x = reference.make_predictions(rng, shape, "softmax", np.float64)
    kw = dict(options[1], from_logits=True)
    if target == "ids":
      # Ids outside [0, C) are no class; -1 is ignored.
      t = rng.integers(-1, shape[-1] + 2, shape[:-1]).astype(np.int32)
      kw["ignore_index"] = -1
    else:
      t = reference.make_targets(rng, shape, "soft").astype(np.float64)
    if kw.pop("mask", False):
      kw["where"] = reference.make_mask(rng, shape)
    oracle = lambda x, t: reference_family.family_numpy(x, t, **kw)
    with jax.enable_x64(True), _on_cpu():
      loss = lambda x, t: pel_jax.pel_loss(x, t, **kw)
      value, grads = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1) if target == "soft" else 0)
      )(x, t)
    np.testing.assert_allclose(value, oracle(x, t), rtol=1e-10)
    if target == "ids":
      grads = (grads,)
    np.testing.assert_allclose(
      grads[0],
      reference.central_differences(lambda x: oracle(x, t), x),
      rtol=1e-6,
      atol=1e-9,
    )
    # (Generalized weights carry no gradient, by design: not the oracle's.)
    if target == "soft" and "generalized" not in kw:
      np.testing.assert_allclose(
        grads[1],
        reference.central_differences(lambda t: oracle(x, t), t),
        rtol=1e-6,
        atol=1e-9,
      )

  @parameterized.parameters(2, 12)
  def test_float32_and_bfloat16_logits_match_oracle(self, classes):
    rng = np.random.default_rng(6)
    shape = (2, 6, 5, classes)
    x = reference.make_predictions(rng, shape, "softmax", np.float64) * 8
    t = rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)
    kw = dict(exponent=3.0, from_logits=True, scale=0.5, fp_weight=0.5)
    expected = reference_family.family_numpy(x, t, **kw)
    for dtype, rtol in ((jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)):
      xs = jnp.asarray(x, dtype)
      with _on_cpu():
        value, grad = jax.jit(
          jax.value_and_grad(lambda x: pel_jax.pel_loss(x, t, **kw))
        )(xs)
      self.assertEqual(grad.dtype, dtype)
      self.assertTrue(bool(jnp.all(jnp.isfinite(grad))))
      # bfloat16 logits are rounded before the loss reads them.
      rounded = np.asarray(xs.astype(jnp.float32), np.float64)
      expected = reference_family.family_numpy(rounded, t, **kw)
      np.testing.assert_allclose(float(value), expected, rtol=rtol)

  @parameterized.product(
    target=("ids", "soft"), layout=(False, True), classes=(2, 6)
  )
  def test_forward_over_reverse(self, target, layout, classes):
    # Every platform's branch is differentiated, so the CPU program's too
    # takes the JVP of the layout's forward (its variadic log-sum-exp, or
    # with two classes its log-sigmoids).
    rng = np.random.default_rng(7)
    shape = (2, 3, 3, classes)
    x = reference.make_predictions(rng, shape, "softmax", np.float64)
    if target == "ids":
      t = rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)
    else:
      t = reference.make_targets(rng, shape, "soft").astype(np.float64)
    v = rng.standard_normal(shape)
    kw = dict(from_logits=True, exponent=2.0, ce_weight=0.5)
    with jax.enable_x64(True):
      grad = jax.grad(lambda x: pel_jax.pel_loss(x, t, **kw))
      h = 1e-5
      expected = (grad(x + h * v) - grad(x - h * v)) / (2 * h)
      with (
        _on_cpu()
        if layout
        else mock.patch.object(_gpu, "PLATFORMS", _gpu.PLATFORMS)
      ):
        hvp = jax.jit(
          lambda x: jax.jvp(
            jax.grad(lambda x: pel_jax.pel_loss(x, t, **kw)), (x,), (v,)
          )[1]
        )(x)
    np.testing.assert_allclose(hvp, expected, rtol=1e-6, atol=1e-10)

  def test_two_classes_extreme_logits_stay_finite_and_exact(self):
    # log_sigmoid of a difference of 2000: p = 0 exactly in float32, and
    # the cross-entropy's log p stays finite.
    x = np.array([[[[1000.0, -1000.0], [-3.0, 4.0]]]], np.float32)
    t = np.array([[[1, 0]]], np.int32)
    kw = dict(from_logits=True, exponent=2.0, ce_weight=0.5)
    with _on_cpu():
      value, grad = jax.jit(
        jax.value_and_grad(lambda x: pel_jax.pel_loss(x, t, **kw))
      )(x)
    expected = reference_family.family_numpy(x.astype(np.float64), t, **kw)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    self.assertTrue(bool(jnp.all(jnp.isfinite(grad))))

  def test_log_sum_exp_is_exact_and_safe(self):
    x = np.array(
      [[0.0, 1.0, -2.0], [1000.0, 999.0, -1000.0], [-np.inf, 0.0, -np.inf]]
    )
    with jax.enable_x64(True):
      got = _gpu.log_sum_exp(jnp.asarray(x))[:, 0]
    finite = np.where(np.isfinite(x), x, -1e300)
    peak = finite.max(-1)
    expected = peak + np.log(np.exp(finite - peak[:, None]).sum(-1))
    np.testing.assert_allclose(got, expected, rtol=1e-15)

  def test_cuda_lowering_takes_the_layout_and_cpu_does_not(self):
    # The online log-sum-exp is the one reduce over two operands.
    x = jnp.ones((2, 4, 4, _gpu.MIN_CLASSES))
    t = jnp.zeros((2, 4, 4), jnp.int32)
    grad = jax.grad(lambda x: pel_jax.pel_loss(x, t, from_logits=True))

    def text(platform):
      lowered = jax.jit(grad).trace(x).lower(lowering_platforms=(platform,))
      return lowered.as_text()

    operand = f"tensor<2x4x4x{_gpu.MIN_CLASSES}xf32>"
    pair = f"({operand}, {operand}"
    self.assertIn(pair, text("cuda"))
    self.assertNotIn(pair, text("cpu"))

  @parameterized.parameters(
    (_gpu.MIN_CLASSES - 1, "softmax"), (16, "sigmoid"), (16, "soft_labels")
  )
  def test_other_configurations_keep_the_generic_core(self, classes, kind):
    cfg = _core.StatsConfig(
      2.0,
      "sigmoid" if kind == "sigmoid" else "softmax",
      False,
      None,
      soft_labels=kind == "soft_labels",
    )
    self.assertFalse(_gpu.handles(cfg, classes))
    softmax = _core.StatsConfig(2.0, "softmax", False, None)
    self.assertTrue(_gpu.handles(softmax, _gpu.MIN_CLASSES))
    self.assertTrue(_gpu.handles(softmax, 2))


if __name__ == "__main__":
  absltest.main()

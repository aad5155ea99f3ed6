"""Integer class ids: the binary mode, narrow id dtypes, `check_labels`."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests import reference

_SHAPE = (2, 6, 5, 1)


def _value_and_grad(x, t, **kw):
  return jax.jit(jax.value_and_grad(lambda a: pel_jax.pel_loss(a, t, **kw)))(x)


class BinaryTest(parameterized.TestCase):
  """One channel with integer ids: id 1 is the foreground, 0 background."""

  def test_perfect_prediction_costs_nothing(self):
    # Hand-computed: p = sigmoid(+-30) is 1 on the mask and 0 off it, so
    # N = TP = D = |mask| and the loss is 1 - 1 = 0 (it was 1: id 1 was no
    # class, so the foreground was trained as background).
    mask = np.zeros((1, 4, 4), np.int32)
    mask[0, 1:3, 1:3] = 1
    logits = np.where(mask == 1, 30.0, -30.0)[..., None].astype(np.float32)
    for n in (1.0, 3.0):
      loss, grad = _value_and_grad(logits, mask, from_logits=True, exponent=n)
      np.testing.assert_allclose(loss, 0.0, atol=1e-6)
      np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    # The inverted prediction is the worst: ratio eps / (8 + eps).
    inverted = pel_jax.pel_loss(-logits, mask, from_logits=True)
    np.testing.assert_allclose(inverted, 1.0, atol=1e-5)

  @parameterized.product(
    kind=("probs", "sigmoid"), exponent=(0.5, 1.0, 3.0), batch=(False, True)
  )
  def test_equals_float_mask(self, kind, exponent, batch):
    # Oracle: the float target (labels == 1), values and gradients; ids
    # other than 0/1 (here 2 and 7) are background, ignore_index is left out.
    rng = np.random.default_rng(0)
    x = reference.make_predictions(rng, _SHAPE, kind)
    ids = rng.choice(np.array([0, 1, 1, 2, 7, 255], np.uint8), _SHAPE[:-1])
    keep = ids != 255
    kw = dict(exponent=exponent, batch=batch, from_logits=kind != "probs")
    g = (ids == 1)[..., None].astype(np.float32)
    want = reference.pel_numpy(x, g, where=keep, **kw)
    loss, grad = _value_and_grad(x, ids, ignore_index=255, **kw)
    np.testing.assert_allclose(loss, want, atol=2e-6, rtol=2e-6)
    want_grad = jax.grad(lambda a: reference.pel_jnp(a, g, where=keep, **kw))
    chex.assert_trees_all_close(grad, want_grad(x), atol=1e-6, rtol=2e-4)
    # The same as the float mask through pel_loss itself (the fused path).
    loss_f, grad_f = _value_and_grad(x, g, where=keep, **kw)
    np.testing.assert_allclose(loss, loss_f, rtol=1e-6)
    chex.assert_trees_all_close(grad, grad_f, atol=1e-7, rtol=1e-5)

  def test_check_labels_binary(self):
    ok = np.array([[[0, 1], [1, 255]]], np.uint8)
    pel_jax.check_labels(ok, 1, ignore_index=255)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, r"\{0, 1\}.*: 255"):
      pel_jax.check_labels(ok, 1)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, r"binary.*: 2"):
      pel_jax.check_labels(np.array([[0, 2]], np.int32), 1)
    with self.assertRaisesRegex(ValueError, r"`num_classes`.*0"):
      pel_jax.check_labels(ok, 0)


class NarrowIdDtypeTest(parameterized.TestCase):
  """The class index must not wrap in the ids' dtype (uint8: 256 -> 0)."""

  @parameterized.named_parameters(
    # uint8, 257 classes: id 0 also counted as class 256 before.
    ("uint8_257", np.uint8, 257, [0, 1, 255, 0]),
    # int8, 130 classes: ids -128, -127 matched classes 128, 129 before.
    ("int8_130", np.int8, 130, [-128, -127, 127, 5]),
  )
  def test_matches_wide_ids(self, dtype, num_classes, values):
    rng = np.random.default_rng(1)
    shape = (1, 2, 2, num_classes)
    x = reference.make_predictions(rng, shape, "softmax")
    ids = np.array(values, dtype).reshape(shape[:-1])
    kw = dict(from_logits=True, reduction="none", batch=True)
    loss = lambda a: pel_jax.pel_loss(a, ids, **kw)
    got, grad = jax.jit(
      lambda a: (loss(a), jax.grad(lambda b: jnp.sum(loss(b)))(a))
    )(x)
    want = reference.pel_numpy(x, ids.astype(np.int64), **kw)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-6)
    want_grad = jax.jit(
      jax.grad(
        lambda a: jnp.sum(reference.pel_jnp(a, ids.astype(np.int32), **kw))
      )
    )(x)
    chex.assert_trees_all_close(grad, want_grad, atol=1e-6, rtol=2e-4)

  def test_check_labels_no_overflow(self):
    # uint8 id 50 of 300 classes is valid (300 as uint8 wrapped to 44).
    pel_jax.check_labels(np.array([[0, 50, 255]], np.uint8), 300)
    pel_jax.check_labels(np.array([[0, 127]], np.int8), 200)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, r"\[0, 200\): -1"):
      pel_jax.check_labels(np.array([[0, -1]], np.int8), 200)
    with self.assertRaisesRegex(checkify.JaxRuntimeError, r"\[0, 3\): 4"):
      pel_jax.check_labels(np.array([[0, 4]], np.uint8), 3)
    # An ignore_index the dtype cannot hold is refused, as by pel_loss
    # (-1 as uint8 wrapped to 255 and was accepted).
    ids = np.array([[0, 255]], np.uint8)
    with self.assertRaisesRegex(ValueError, r"`ignore_index=-1`.*uint8"):
      pel_jax.check_labels(ids, 3, ignore_index=-1)
    with self.assertRaisesRegex(ValueError, r"`ignore_index=-1`.*uint8"):
      pel_jax.pel_loss(np.zeros((1, 2, 3), np.float32), ids, ignore_index=-1)


class CheckLabelsTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("too_big", 3, None),
    ("negative", -1, None),
    ("way_off", 255, 254),
  )
  def test_raises_eagerly(self, bad, ignore_index):
    ids = np.zeros((2, 3, 3), np.int32)
    ids[1, 2, 0] = bad
    with self.assertRaisesRegex(checkify.JaxRuntimeError, str(bad)):
      pel_jax.check_labels(ids, 3, ignore_index=ignore_index)

  def test_passes_on_valid_labels(self):
    ids = np.array([[[0, 1], [2, 1]]], np.int32)
    self.assertIsNone(pel_jax.check_labels(ids, 3))
    with_ignored = np.array([[[0, 255], [2, 1]]], np.int32)
    self.assertIsNone(pel_jax.check_labels(with_ignored, 3, ignore_index=255))
    with_negative = np.array([[[0, -1], [2, 1]]], np.int32)
    self.assertIsNone(pel_jax.check_labels(with_negative, 3, ignore_index=-1))

  def test_under_jit_with_checkify(self):
    checked = jax.jit(
      checkify.checkify(lambda t: pel_jax.check_labels(t, 3, ignore_index=255))
    )
    good = np.array([[[0, 255], [2, 1]]], np.int32)
    err, _ = checked(good)
    self.assertIsNone(err.get())
    err.throw()  # No error: does not raise.
    bad = np.array([[[0, 255], [7, 1]]], np.int32)
    err, _ = checked(bad)
    self.assertIsNotNone(err.get())
    self.assertIn("7", err.get())
    with self.assertRaises(checkify.JaxRuntimeError):
      err.throw()

  def test_inside_a_jitted_loss(self):
    def loss(p, t):
      pel_jax.check_labels(t, 3)
      return pel_jax.pel_loss(p, t)

    checked = jax.jit(checkify.checkify(loss))
    p = np.full((2, 5, 4, 3), 0.5, np.float32)
    ids = np.zeros((2, 5, 4), np.int32)
    err, value = checked(p, ids)
    err.throw()
    np.testing.assert_allclose(value, pel_jax.pel_loss(p, ids), rtol=1e-6)
    err, _ = checked(p, np.where(np.arange(40).reshape(2, 5, 4) == 7, 3, ids))
    with self.assertRaises(checkify.JaxRuntimeError):
      err.throw()

  def test_empty_targets_pass(self):
    self.assertIsNone(pel_jax.check_labels(np.zeros((0, 3), np.int32), 3))

  def test_float_targets_type_error(self):
    with self.assertRaisesRegex(TypeError, r"`targets`.*integer"):
      pel_jax.check_labels(np.zeros((2, 3), np.float32), 3)


if __name__ == "__main__":
  absltest.main()

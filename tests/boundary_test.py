"""boundary_loss against a float64 NumPy/SciPy transcription of Kervadec's."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests.reference_distance import blob_case
from tests.reference_distance import one_hot2dist
from tests.reference_distance import softmax

# Compiled once per shape, dtype and options: eager calls retrace the
# transforms' while loops every time.
_loss = jax.jit(
  pel_jax.boundary_loss,
  static_argnames=(
    "from_logits",
    "activation",
    "include_background",
    "spacing",
    "ignore_index",
    "reduction",
  ),
)


def _kervadec(probs, one_hot, idc, spacing=None):
  """Their `BoundaryLoss`: `(probs[:, idc] * dist_maps[:, idc]).mean()`, on
  channels-last float64 arrays; also the `[B, C']` per-class means."""
  dist = np.stack(
    [one_hot2dist(one_hot[..., c], spacing) for c in idc], axis=-1
  )
  products = probs[..., idc] * dist
  spatial = tuple(range(1, probs.ndim - 1))
  return products.mean(), products.mean(axis=spatial), dist


class BoundaryLossTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("2d", (3, 14, 12), 3, None, True),
    ("2d_no_background", (3, 14, 12), 3, None, False),
    ("3d_anisotropic", (2, 6, 7, 5), 4, (2.0, 1.0, 0.5), False),
  )
  def test_per_class_equal_reference_float64(self, shape, classes, spacing, bg):
    logits, ids = blob_case(shape, classes, sum(shape))
    one_hot = np.eye(classes, dtype=bool)[ids]
    idc = list(range(0 if bg else 1, classes))
    _, want, _ = _kervadec(softmax(logits), one_hot, idc, spacing)
    with jax.enable_x64(True):
      got = _loss(
        logits,
        ids,
        from_logits=True,
        include_background=bg,
        spacing=spacing,
        reduction="none",
      )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  def test_target_forms_and_reductions_equal_reference_float64(self):
    logits, ids = blob_case((2, 9, 10), 3, 4)
    one_hot = np.eye(3, dtype=bool)[ids]
    probs = softmax(logits)
    want, per_class, _ = _kervadec(probs, one_hot, [0, 1, 2])
    with jax.enable_x64(True):
      for targets in (ids, one_hot.astype(np.float64), one_hot):
        np.testing.assert_allclose(_loss(probs, targets), want, rtol=1e-12)
      np.testing.assert_allclose(
        _loss(probs, ids, reduction="sum"), per_class.sum(), rtol=1e-12
      )

  def test_binary_sigmoid_with_ids(self):
    logits, ids = blob_case((2, 10, 9), 2, 0)
    x = logits[..., :1]
    probs = 1 / (1 + np.exp(-x))
    want, _, _ = _kervadec(probs, (ids == 1)[..., None], [0])
    with jax.enable_x64(True):
      got = _loss(x, ids, from_logits=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)

  def test_gradient_is_the_map_over_the_count(self):
    logits, ids = blob_case((2, 9, 8), 3, 1)
    probs = jnp.asarray(softmax(logits), jnp.float32)
    _, _, dist = _kervadec(softmax(logits), np.eye(3, dtype=bool)[ids], [1, 2])
    step = jax.jit(
      jax.grad(
        lambda p: pel_jax.boundary_loss(p, ids, include_background=False)
      )
    )
    grad = np.asarray(step(probs))
    np.testing.assert_array_equal(grad[..., 0], 0)
    # mean over B = 2 samples, 2 classes and 72 pixels.
    np.testing.assert_allclose(grad[..., 1:], dist / (2 * 2 * 72), rtol=1e-6)

  def test_where_and_ignore_index_leave_pixels_out_float64(self):
    logits, ids = blob_case((2, 11, 9), 3, 5)
    rng = np.random.default_rng(5)
    ignored = rng.random(ids.shape) < 0.2
    where = rng.random(ids.shape) < 0.7
    ids = np.where(ignored, 255, ids)
    probs = softmax(logits)
    # Ignored pixels are in no class: the maps see them as outside.
    one_hot = (ids[..., None] == np.arange(3)) & ~ignored[..., None]
    _, _, dist = _kervadec(probs, one_hot, [0, 1, 2])
    kept = (where & ~ignored)[..., None]
    want = (probs * dist * kept).sum((1, 2)) / kept.sum((1, 2))
    with jax.enable_x64(True):
      got = _loss(
        logits,
        ids,
        from_logits=True,
        where=where,
        ignore_index=255,
        reduction="none",
      )
      none_kept = _loss(
        logits,
        ids,
        from_logits=True,
        where=np.zeros_like(where),
        ignore_index=255,
        reduction="none",
      )
      np.testing.assert_array_equal(none_kept, 0)
    np.testing.assert_allclose(got, want, rtol=1e-12)

  def test_absent_and_full_classes_add_nothing(self):
    # Class 2 absent and, in sample 1, class 0 everywhere: both maps are 0.
    ids = np.zeros((2, 6, 5), np.int32)
    ids[0, 2:4, 1:3] = 1
    probs = np.full((2, 6, 5, 3), 1 / 3)
    got = np.asarray(_loss(probs, ids, reduction="none"))
    want = _kervadec(probs, np.eye(3, dtype=bool)[ids], [0, 1, 2])[1]
    # Sample 1's full class 0 has SciPy's undefined map in the reference.
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-7)
    self.assertNotEqual(want[0, 1], 0)
    np.testing.assert_array_equal(got[1], 0)
    np.testing.assert_array_equal(got[:, 2], 0)

  @parameterized.named_parameters(
    ("spacing_count", {"spacing": (1.0,)}, r"`spacing`.*`predictions`"),
    ("reduction", {"reduction": "max"}, r"`reduction`"),
    ("activation", {"activation": "softmax"}, r"from_logits"),
  )
  def test_bad_options_raise(self, kwargs, regex):
    probs = np.full((2, 4, 5, 3), 1 / 3, np.float32)
    ids = np.zeros((2, 4, 5), np.int32)
    with self.assertRaisesRegex(ValueError, regex):
      pel_jax.boundary_loss(probs, ids, **kwargs)

  def test_bad_targets_raise(self):
    probs = np.full((2, 4, 5, 3), 1 / 3, np.float32)
    with self.assertRaisesRegex(ValueError, r"`targets`"):
      pel_jax.boundary_loss(probs, np.zeros((2, 4, 6), np.int32))


if __name__ == "__main__":
  absltest.main()

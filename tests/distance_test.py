"""distance_transform and signed_distance against SciPy and by hand."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

import pel_jax
from tests.reference_distance import one_hot2dist

# One compile per shape and spacing, reused by every mask of that shape.
_edt = jax.jit(pel_jax.distance_transform, static_argnames="spacing")
_signed = jax.jit(pel_jax.signed_distance, static_argnames="spacing")


def _scipy(mask, spacing=None):
  return np.stack(
    [ndimage.distance_transform_edt(m, sampling=spacing) for m in mask]
  )


def _adversarial(shape):
  """Named masks [1, *shape] that each have a False pixel (SciPy's output
  is defined); their distances range from 0 to the whole diagonal."""
  spatial = len(shape)
  full = np.ones(shape, bool)
  corner = full.copy()
  corner[(0,) * spatial] = False
  far_corner = full.copy()
  far_corner[tuple(n - 1 for n in shape)] = False
  centre = full.copy()
  centre[tuple(n // 2 for n in shape)] = False
  one_true = ~centre
  line = full.copy()
  line[(slice(None),) * (spatial - 1) + (shape[-1] // 3,)] = False
  first_axis_line = full.copy()
  first_axis_line[(slice(None),) + (1,) * (spatial - 1)] = False
  diagonal = full.copy()
  for i in range(min(shape)):
    diagonal[(i,) * spatial] = False
  # Finite after the first pass, with the nearest False pixel of the far
  # rows a whole axis away: only a loop that runs far enough finds it.
  two_sides = full.copy()
  two_sides[0] = False
  two_sides[..., -1] = False
  border = np.zeros(shape, bool)
  border[(slice(1, -1),) * spatial] = True
  inner_hole = ~border
  empty = np.zeros(shape, bool)
  masks = dict(
    corner=corner,
    far_corner=far_corner,
    centre=centre,
    one_true=one_true,
    line=line,
    first_axis_line=first_axis_line,
    diagonal=diagonal,
    two_sides=two_sides,
    border=border,
    inner_hole=inner_hole,
    empty=empty,
  )
  # On an axis of length 1 or 2, the border is everything: inner_hole is
  # all True there, and SciPy's output undefined.
  return {name: m[None] for name, m in masks.items() if not m.all()}


def _inner_eqns(eqn):
  """Every equation nested in `eqn`'s sub-jaxprs (loop bodies, pjit)."""
  for param in eqn.params.values():
    for sub in param if isinstance(param, tuple) else (param,):
      jaxpr = getattr(sub, "jaxpr", sub)
      for inner in getattr(jaxpr, "eqns", ()):
        yield inner
        yield from _inner_eqns(inner)


def _random(rng, shape, density):
  """A batch whose samples differ in density, each with a False pixel."""
  mask = rng.random(shape) < np.linspace(0.3, density, shape[0]).reshape(
    (-1,) + (1,) * (len(shape) - 1)
  )
  mask.reshape(shape[0], -1)[:, rng.integers(mask[0].size)] = False
  return mask


class DistanceTransformTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("2d", (4, 19, 23), None, 0.97),
    ("2d_anisotropic", (3, 16, 9), (0.7, 2.5), 0.99),
    ("3d", (2, 9, 12, 7), None, 0.95),
    ("3d_anisotropic", (3, 8, 5, 11), (1.5, 0.4, 3.0), 0.99),
  )
  def test_random_masks_equal_scipy_float64(self, shape, spacing, density):
    rng = np.random.default_rng(sum(shape))
    with jax.enable_x64(True):
      for _ in range(3):
        mask = _random(rng, shape, density)
        got = _edt(mask, spacing=spacing)
        self.assertEqual(got.dtype, jnp.float64)
        np.testing.assert_allclose(
          got, _scipy(mask, spacing), rtol=0, atol=1e-10
        )

  @parameterized.named_parameters(
    # Longer than two trips of the loop (16 offsets) on the min-plus axes.
    ("2d", (37, 41), None),
    ("2d_anisotropic", (37, 41), (3.0, 0.25)),
    ("3d", (19, 21, 6), None),
    ("3d_anisotropic", (19, 21, 6), (0.5, 2.0, 1.25)),
    ("thin_axes", (1, 11), None),
  )
  def test_adversarial_masks_equal_scipy_float64(self, shape, spacing):
    masks = _adversarial(shape)
    with jax.enable_x64(True):
      for name, mask in masks.items():
        np.testing.assert_allclose(
          _edt(mask, spacing=spacing),
          _scipy(mask, spacing),
          rtol=0,
          atol=1e-10,
          err_msg=name,
        )
      # Together, so that each sample's loop runs to the batch's farthest.
      batch = np.concatenate(list(masks.values()))
      np.testing.assert_allclose(
        _edt(batch, spacing=spacing), _scipy(batch, spacing), atol=1e-10
      )

  def test_by_hand(self):
    mask = np.ones((1, 3, 3), bool)
    mask[0, 1, 1] = False
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(
      _edt(mask), [[[r2, 1, r2], [1, 0, 1], [r2, 1, r2]]], rtol=1e-6
    )
    # Spacing (2, 3): the corners are at sqrt(2^2 + 3^2).
    r13 = np.sqrt(13.0)
    np.testing.assert_allclose(
      _edt(mask, spacing=(2.0, 3.0)),
      [[[r13, 2, r13], [3, 0, 3], [r13, 2, r13]]],
      rtol=1e-6,
    )

  def test_no_background_is_inf_per_sample(self):
    mask = np.ones((2, 4, 5), bool)
    mask[1, 0, 0] = False
    got = np.asarray(_edt(mask))
    self.assertTrue(np.all(np.isposinf(got[0])))
    np.testing.assert_allclose(got[1], _scipy(mask[1:])[0], rtol=1e-6)

  def test_float32_by_default(self):
    mask = _random(np.random.default_rng(0), (2, 40, 30), 0.99)
    got = _edt(mask, spacing=(1.0, 0.3))
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(got, _scipy(mask, (1.0, 0.3)), rtol=2e-6)

  def test_empty_batch(self):
    got = pel_jax.distance_transform(np.zeros((0, 4, 5), bool))
    self.assertEqual(got.shape, (0, 4, 5))

  def test_eager_and_vmap_equal_scipy(self):
    mask = _random(np.random.default_rng(1), (6, 10, 12), 0.98)
    want = _scipy(mask)
    np.testing.assert_allclose(
      pel_jax.distance_transform(mask), want, rtol=1e-6
    )
    # vmap over a leading axis: [3, B=2, 10, 12], one batch per vmapped row.
    stacked = jax.vmap(pel_jax.distance_transform)(mask.reshape(3, 2, 10, 12))
    np.testing.assert_allclose(stacked.reshape(want.shape), want, rtol=1e-6)

  def test_no_host_callback(self):
    mask = np.zeros((2, 5, 6, 4), bool)
    for fn in (pel_jax.distance_transform, pel_jax.signed_distance):
      top = jax.make_jaxpr(fn)(mask).jaxpr.eqns
      primitives = {e.primitive.name for t in top for e in (t, *_inner_eqns(t))}
      self.assertIn("while", primitives)  # the walk reaches the loop's body
      self.assertFalse({p for p in primitives if "callback" in p}, primitives)

  def test_constant_inside_a_differentiated_step(self):
    ids = np.random.default_rng(2).integers(0, 2, (2, 8, 9))
    p = jnp.asarray(np.random.default_rng(3).random((2, 8, 9)), jnp.float32)

    @jax.jit
    def step(p, ids):
      return jax.value_and_grad(
        lambda p: jnp.sum(p * pel_jax.signed_distance(ids == 1))
      )(p)

    value, grad = step(p, ids)
    want = one_hot2dist(ids == 1)
    np.testing.assert_allclose(grad, want, rtol=1e-6)
    np.testing.assert_allclose(value, np.sum(np.asarray(p) * want), rtol=1e-5)


class SignedDistanceTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("2d", (4, 15, 18), None),
    ("2d_anisotropic", (4, 15, 18), (0.5, 2.0)),
    ("3d", (3, 7, 8, 6), (1.0, 1.5, 0.75)),
  )
  def test_equals_referenceone_hot2dist(self, shape, spacing):
    rng = np.random.default_rng(sum(shape))
    # Blobs: a smoothed noise field thresholded at different levels.
    sigma = (0,) + (2,) * (len(shape) - 1)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    levels = np.quantile(field, np.linspace(0.2, 0.8, shape[0]))
    mask = field > levels.reshape((-1,) + (1,) * (len(shape) - 1))
    with jax.enable_x64(True):
      np.testing.assert_allclose(
        _signed(mask, spacing=spacing),
        one_hot2dist(mask, spacing),
        rtol=0,
        atol=1e-10,
      )

  def test_by_hand(self):
    mask = np.array([[[0, 1, 1, 1, 1, 1, 0, 0]]], bool)
    np.testing.assert_array_equal(
      _signed(mask), [[[1, 0, -1, -2, -1, 0, 1, 2]]]
    )

  def test_empty_and_full_samples_are_zero(self):
    mask = np.zeros((3, 5, 6), bool)
    mask[1] = True
    mask[2, 2, 3] = True
    got = np.asarray(_signed(mask))
    np.testing.assert_array_equal(got[:2], 0)
    np.testing.assert_allclose(got[2:], one_hot2dist(mask[2:]), rtol=1e-6)


class BadInputTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("int_mask", np.zeros((2, 4, 4), np.int32), {}, TypeError, "`mask`.*bool"),
    ("float_mask", np.zeros((2, 4, 4)), {}, TypeError, "`mask`.*bool"),
    ("no_spatial_axis", np.zeros((4,), bool), {}, ValueError, r"\(4,\)"),
    (
      "spacing_length",
      np.zeros((2, 4, 5), bool),
      {"spacing": (1.0, 1.0, 1.0)},
      ValueError,
      r"`spacing`.*2.*\(2, 4, 5\)",
    ),
    (
      "spacing_zero",
      np.zeros((2, 4, 5), bool),
      {"spacing": (1.0, 0.0)},
      ValueError,
      r"`spacing`.*\(2, 4, 5\)",
    ),
    (
      "spacing_negative",
      np.zeros((2, 4, 5), bool),
      {"spacing": (-1.0, 1.0)},
      ValueError,
      r"`spacing`",
    ),
    (
      "spacing_nan",
      np.zeros((2, 4, 5), bool),
      {"spacing": (float("nan"), 1.0)},
      ValueError,
      r"`spacing`",
    ),
    (
      "spacing_scalar",
      np.zeros((2, 4, 5), bool),
      {"spacing": 2.0},
      ValueError,
      r"`spacing`",
    ),
    (
      "spacing_bool",
      np.zeros((2, 4, 5), bool),
      {"spacing": (True, 1.0)},
      ValueError,
      r"`spacing`",
    ),
  )
  def test_raises(self, mask, kwargs, error, regex):
    for fn in (pel_jax.distance_transform, pel_jax.signed_distance):
      with self.assertRaisesRegex(error, regex):
        fn(mask, **kwargs)
      with self.assertRaisesRegex(error, regex):
        jax.jit(lambda m: fn(m, **kwargs))(mask)


if __name__ == "__main__":
  absltest.main()

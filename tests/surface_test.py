"""The surface-distance metrics against a float64 SciPy transcription of
MONAI's (tests/reference_distance.py), MONAI 1.6.1 run on seeded masks
(tests/peer_values/make_surface_values.py) and the cases of DeepMind's
surface-distance tests (surface_distance_test.py, google-deepmind/
surface-distance at 1f805ce) where its surfaces give the same values."""

import functools
import json
import pathlib

from absl.testing import absltest
import jax
import numpy as np
from scipy import ndimage

import pel_jax
from pel_jax import _distance
from tests.reference_distance import blob_case
from tests.reference_distance import surface_metrics

_PEERS = pathlib.Path(__file__).parent / "peer_values" / "surface_values.json"


@functools.partial(
  jax.jit, static_argnames=("tolerance", "num_classes", "spacing", "bg")
)
def _metrics(p, t, *, tolerance, num_classes, spacing, bg=True):
  """Every metric of one case in one compilation (each metric compiles its
  own distance transform's loops, the tests' main cost): HD, HD95,
  directed HD, ASSD, NSD."""
  kw = {
    "num_classes": num_classes,
    "include_background": bg,
    "spacing": spacing,
  }
  hd = pel_jax.hausdorff_distance
  return (
    hd(p, t, **kw),
    hd(p, t, percentile=95, **kw),
    hd(p, t, directed=True, **kw),
    pel_jax.average_surface_distance(p, t, **kw),
    pel_jax.surface_dice(p, t, tolerance=tolerance, **kw),
  )


_NAMES = ("hd", "hd95", "directed", "asd", "nsd")


class SurfaceOracleTest(absltest.TestCase):
  def test_3d_anisotropic_masks_equal_scipy_reference_float64(self):
    shape, classes, spacing, tau = (2, 7, 8, 6), 3, (2.0, 1.0, 0.5), 1.5
    _, t = blob_case(shape, classes, 1)
    _, p = blob_case(shape, classes, 2)
    t[0][t[0] == 2] = 0  # only in the prediction: inf, NSD 0
    p[1][p[1] == 2] = 0  # in neither: NaN
    t[1][t[1] == 2] = 0
    eye = np.eye(classes, dtype=bool)
    with jax.enable_x64(True):
      # Bool predictions, float one-hot targets.
      got = _metrics(
        eye[p],
        eye[t].astype(np.float64),
        tolerance=tau,
        num_classes=None,
        spacing=spacing,
      )

    def reference(percentile):
      """`[4, B, C]`: hd, directed hd, asd, nsd."""
      want = [
        [
          surface_metrics(p[b] == c, t[b] == c, spacing, percentile, tau)
          for c in range(classes)
        ]
        for b in range(shape[0])
      ]
      return np.moveaxis(np.array(want), -1, 0)

    hd, directed, asd, nsd = reference(None)
    hd95 = reference(95)[0]
    want = (hd, hd95, directed, asd, nsd)
    for name, value, expected in zip(_NAMES, got, want):
      np.testing.assert_allclose(value, expected, rtol=1e-12, err_msg=name)


class StoppedTransformTest(absltest.TestCase):
  def test_queries_and_cap_keep_the_distances_read_exact_float64(self):
    # The metrics read distances only at the other surface's pixels (the
    # queries) and surface Dice only up to its tolerance (the cap): the
    # transform's passes stop there, and those entries stay SciPy's.
    rng = np.random.default_rng(3)
    shape, spacing, cap = (3, 9, 8, 7), (2.0, 1.0, 0.5), 2.3
    src = rng.random(shape) < 0.03
    queries = rng.random(shape) < 0.2
    with jax.enable_x64(True):
      got = np.asarray(
        _distance._distance_transform(~src, spacing, queries, cap)  # pylint: disable=protected-access
      )
    want = np.stack(
      [ndimage.distance_transform_edt(~s, sampling=spacing) for s in src]
    )
    near = queries & (want <= cap)
    np.testing.assert_allclose(got[near], want[near], rtol=1e-12)
    self.assertTrue(np.all(got[queries & ~near] > cap))


class MonaiParityTest(absltest.TestCase):
  def test_monai_1_6_1_values(self):
    stored = json.loads(_PEERS.read_text())
    self.assertEqual(stored["monai"], "1.6.1")
    for case in stored["cases"]:
      got = _metrics(
        np.asarray(case["predictions"], np.int32),
        np.asarray(case["targets"], np.int32),
        num_classes=case["num_classes"],
        bg=case["include_background"],
        spacing=None if case["spacing"] is None else tuple(case["spacing"]),
        tolerance=tuple(case["tolerance"]),
      )
      # MONAI's HD95 of a class in only one mask is torch.quantile of infs,
      # inf + 0 * (inf - inf) = NaN; it is inf here, as its max and as
      # DeepMind's HD95 (test_empty_prediction_mask).
      one_empty = np.isinf(case["hausdorff"])
      want = (
        case["hausdorff"],
        np.where(one_empty, np.inf, case["hausdorff95"]),
        case["hausdorff_directed"],
        case["average_surface_distance"],
        case["surface_dice"],
      )
      for name, value, expected in zip(_NAMES, got, want):
        np.testing.assert_allclose(
          value, expected, rtol=1e-5, err_msg=f"{case['name']} {name}"
        )


class DeepMindCasesTest(absltest.TestCase):
  """surface_distance_test.py's cases whose HD and HD95 the pixel surfaces
  share with DeepMind's surfels, with their expected values."""

  def test_2d_two_pixels_2mm_away_and_empty_masks(self):
    # test_on_2_pixels_2mm_away (spacing (2, 1)): 2 and 2; then
    # test_empty_prediction_mask and test_empty_ground_truth_mask: inf
    # (their spacing (3, 2) changes nothing there), in one batch.
    gt = np.zeros((3, 128, 128), np.int32)
    pred = np.zeros((3, 128, 128), np.int32)
    gt[0, 50, 70] = 1
    pred[0, 50, 72] = 1
    gt[1, 50, 60] = 1
    pred[2, 50, 60] = 1
    hd, hd95 = _metrics(
      pred, gt, num_classes=1, spacing=(2.0, 1.0), tolerance=1.0
    )[:2]
    np.testing.assert_allclose([hd, hd95], [[[2.0], [np.inf], [np.inf]]] * 2)

  def test_3d_two_cubes_shifted_by_one_pixel(self):
    gt = np.zeros((1, 100, 100, 100), np.int32)
    pred = np.zeros((1, 100, 100, 100), np.int32)
    gt[0, 0:50] = 1
    pred[0, 0:51] = 1
    hd, hd95 = _metrics(
      pred, gt, num_classes=1, spacing=(2.0, 1.0, 1.0), tolerance=1.0
    )[:2]
    np.testing.assert_allclose([hd, hd95], [[[2.0]], [[2.0]]], rtol=1e-6)


class ValidationTest(absltest.TestCase):
  def test_bad_inputs_raise(self):
    ids = np.zeros((2, 5, 6), np.int32)
    masks = np.zeros((2, 5, 6, 3), bool)
    f = pel_jax.hausdorff_distance
    with self.assertRaisesRegex(ValueError, "num_classes"):
      f(ids, ids)
    with self.assertRaisesRegex(
      ValueError, r"`targets` must have shape \(2, 5, 6, 3\)"
    ):
      f(masks, masks[..., :2])
    with self.assertRaisesRegex(
      ValueError, r"`predictions` must have shape \(2, 5, 6\)"
    ):
      f(ids[:, :4], masks)
    with self.assertRaisesRegex(TypeError, "`targets` must be integer ids"):
      f(ids, ids.astype(np.complex64), num_classes=2)
    with self.assertRaisesRegex(ValueError, "percentile"):
      f(masks, masks, percentile=101)
    with self.assertRaisesRegex(ValueError, "spacing"):
      f(masks, masks, spacing=(1.0,))
    with self.assertRaisesRegex(ValueError, "include_background"):
      f(ids, ids, num_classes=1, include_background=False)
    with self.assertRaisesRegex(ValueError, "tolerance"):
      pel_jax.surface_dice(masks, masks, tolerance=(1.0, 2.0))
    with self.assertRaisesRegex(ValueError, "tolerance"):
      pel_jax.surface_dice(masks, masks, tolerance=-1.0)


if __name__ == "__main__":
  absltest.main()

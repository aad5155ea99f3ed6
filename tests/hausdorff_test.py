"""hausdorff_dt_loss against a float64 NumPy/SciPy transcription of MONAI's
HausdorffDTLoss, MONAI's own test values, and MONAI 1.6.1 run on seeded
inputs (tests/peer_values/make_hausdorff_values.py)."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax.test_util import check_grads
import numpy as np
from scipy import ndimage

import pel_jax
from tests.reference_distance import blob_case
from tests.reference_distance import monai_run_cases
from tests.reference_distance import softmax

_loss = jax.jit(
  pel_jax.hausdorff_dt_loss,
  static_argnames=(
    "alpha",
    "from_logits",
    "activation",
    "include_background",
    "spacing",
    "batch",
    "reduction",
    "log",
    "ignore_index",
  ),
)


def _field(mask, spacing=None):
  """MONAI's `distance_field` of one bool `[*spatial]` mask, SciPy."""
  if not mask.any() or mask.all():
    return np.zeros(mask.shape)
  edt = ndimage.distance_transform_edt
  return edt(mask, sampling=spacing) + edt(~mask, sampling=spacing)


def _oracle(p, g, alpha=2.0, spacing=None, keep=None):
  """Per-sample, per-class losses `[B, C]` of channels-last float64 arrays;
  `keep`, bool `[B, *S]`: the mean over those pixels only."""
  if keep is None:
    keep = np.ones(p.shape[:-1], bool)
  out = np.zeros((p.shape[0], p.shape[-1]))
  for b in range(p.shape[0]):
    for c in range(p.shape[-1]):
      dp = _field(p[b, ..., c] > 0.5, spacing)
      dg = _field(g[b, ..., c] > 0.5, spacing)
      err = (p[b, ..., c] - g[b, ..., c]) ** 2 * (dp**alpha + dg**alpha)
      out[b, c] = err[keep[b]].mean() if keep[b].any() else 0.0
  return out


class HausdorffOracleTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("2d", (2, 9, 8), 3, None, True, 2.0),
    ("2d_no_background_alpha1", (2, 9, 8), 3, None, False, 1.0),
    ("3d_anisotropic", (2, 5, 6, 4), 2, (2.0, 1.0, 0.5), True, 1.5),
  )
  def test_per_class_equal_oracle_float64(
    self, shape, classes, spacing, bg, alpha
  ):
    logits, ids = blob_case(shape, classes, sum(shape), scale=2.0)
    ids[1][ids[1] == classes - 1] = 0  # an absent class in sample 1
    want = _oracle(softmax(logits), np.eye(classes)[ids], alpha, spacing)
    want = want[:, 0 if bg else 1 :]
    with jax.enable_x64(True):
      got = _loss(
        logits,
        ids,
        alpha=alpha,
        from_logits=True,
        include_background=bg,
        spacing=spacing,
        reduction="none",
      )
      self.assertEqual(got.dtype, np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)

  def test_soft_targets_batch_reductions_and_log_float64(self):
    rng = np.random.default_rng(3)
    p = rng.random((3, 7, 6, 2))
    g = np.clip(rng.normal(0.5, 0.4, p.shape), 0, 1)
    per_class = _oracle(p, g)
    with jax.enable_x64(True):
      for kwargs, want in (
        ({}, per_class.mean()),
        ({"reduction": "sum"}, per_class.sum()),
        ({"batch": True, "reduction": "none"}, per_class.mean(0)),
        ({"batch": True, "reduction": "sum"}, per_class.mean(0).sum()),
        ({"log": True}, np.log(per_class.mean() + 1)),
        ({"log": True, "reduction": "none"}, np.log(per_class + 1)),
      ):
        got = _loss(p, g, **kwargs)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=kwargs)

  def test_where_and_ignore_index_equal_oracle_float64(self):
    logits, ids = blob_case((3, 8, 7), 3, 11, scale=2.0)
    keep = np.random.default_rng(11).random(ids.shape) > 0.3
    keep[2] = False  # a sample without a kept pixel: 0, not NaN
    p = softmax(logits)
    g = np.eye(3)[ids] * keep[..., None]  # ignored pixels: in no class
    want = _oracle(p, g, keep=keep)
    self.assertTrue(np.all(want[:2] > 0))
    with jax.enable_x64(True):
      by_index = _loss(
        logits,
        np.where(keep, ids, 255).astype(np.int32),
        from_logits=True,
        ignore_index=255,
        reduction="none",
      )
      by_where = _loss(
        logits, g, from_logits=True, where=keep, reduction="none"
      )
    np.testing.assert_allclose(by_index, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(by_where, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(by_index[2], 0)

  def test_empty_and_full_masks_are_zero_not_nan(self):
    ids = np.zeros((2, 6, 5), np.int32)
    ids[0, 2:4, 1:3] = 1  # class 1 in sample 0 only; class 2 nowhere
    probs = np.full((2, 6, 5, 3), 0.3)  # nothing above 0.5
    got = np.asarray(_loss(probs, ids, reduction="none"))
    want = _oracle(probs, np.eye(3)[ids])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Sample 1: class 0 full, classes 1 and 2 empty, no prediction > 0.5.
    np.testing.assert_array_equal(got[1], 0)
    self.assertGreater(got[0, 1], 0)

  def test_extreme_logits_are_finite(self):
    logits, ids = blob_case((2, 6, 5), 3, 7, scale=2.0)
    logits = 1e4 * np.sign(logits).astype(np.float32)
    value, grad = jax.jit(
      jax.value_and_grad(
        lambda x: pel_jax.hausdorff_dt_loss(x, ids, from_logits=True, log=True)
      )
    )(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_check_grads_float64(self):
    # Probabilities kept away from the 0.5 threshold: the finite differences
    # must not move the predictions' fields, which carry no gradient.
    rng = np.random.default_rng(5)
    p = rng.uniform(0.05, 0.4, (2, 6, 5, 2))
    p = np.where(rng.random(p.shape) < 0.4, 1 - p, p)
    ids = blob_case((2, 6, 5), 2, 5, scale=2.0)[1]
    with jax.enable_x64(True):
      check_grads(
        jax.jit(
          lambda x: pel_jax.hausdorff_dt_loss(x, ids, alpha=1.5, log=True)
        ),
        (p,),
        order=1,
        modes=("rev",),
        eps=1e-6,
      )
      # The gradient is 2 (p - g) (d_p^a + d_g^a) / (B C P): the fields are
      # constants.
      g = np.eye(2)[ids]
      grad = jax.jit(jax.grad(lambda x: pel_jax.hausdorff_dt_loss(x, ids)))(p)
      weight = np.stack(
        [
          [
            _field(p[b, ..., c] > 0.5) ** 2 + _field(g[b, ..., c] > 0.5) ** 2
            for c in range(2)
          ]
          for b in range(2)
        ]
      )
      want = 2 * (p - g) * np.moveaxis(weight, 1, -1) / (2 * 2 * 30)
      np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-15)

  def test_jit_has_no_host_callback(self):
    logits, ids = blob_case((2, 6, 5), 3, 2, scale=2.0)
    jaxpr = str(
      jax.make_jaxpr(
        lambda x: pel_jax.hausdorff_dt_loss(x, ids, from_logits=True)
      )(logits)
    )
    self.assertIn("while", jaxpr)  # the transforms run in the graph
    self.assertNotIn("callback", jaxpr)

  @parameterized.named_parameters(
    ("alpha", {"alpha": -1.0}, ValueError, r"`alpha`"),
    ("batch", {"batch": "yes"}, TypeError, r"`batch`"),
    ("log", {"log": None}, TypeError, r"`log`"),
    ("where_shape", {"where": np.ones((2, 4), bool)}, ValueError, r"`where`"),
    ("ignore_index", {"ignore_index": 1.5}, TypeError, r"`ignore_index`"),
    ("spacing", {"spacing": (1.0,)}, ValueError, r"`spacing`"),
    ("reduction", {"reduction": "max"}, ValueError, r"`reduction`"),
    ("activation", {"activation": "softmax"}, ValueError, r"from_logits"),
  )
  def test_bad_options_raise(self, kwargs, error, regex):
    probs = np.full((2, 4, 5, 3), 1 / 3, np.float32)
    ids = np.zeros((2, 4, 5), np.int32)
    with self.assertRaisesRegex(error, regex):
      pel_jax.hausdorff_dt_loss(probs, ids, **kwargs)

  def test_bad_targets_raise(self):
    probs = np.full((2, 4, 5, 3), 1 / 3, np.float32)
    with self.assertRaisesRegex(ValueError, r"`targets`"):
      pel_jax.hausdorff_dt_loss(probs, np.zeros((2, 4, 6), np.int32))
    with self.assertRaisesRegex(ValueError, r"include_background"):
      pel_jax.hausdorff_dt_loss(
        probs[..., :1], np.zeros((2, 4, 5), np.int32), include_background=False
      )


# MONAI's tests/losses/test_hausdorff_loss.py (Project-MONAI/MONAI at commit
# bf2c919e, the 1.6 line), channels first there: (kwargs, input, target,
# expected). Its `other_act=torch.tanh` cases have no pel_jax counterpart.
_X = [[[1.0, -1.0], [-1.0, 1.0]]]
_IDS_X = [[[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]], [[0.0] * 3, [0.0] * 3]]
_MONAI_CASES = (
  ("2d", {"from_logits": True}, [_X], [[[[1.0, 0.0], [1.0, 1.0]]]], 0.509329),
  (
    "3d",
    {"from_logits": True},
    [[[[[1.0, -1.0], [1.0, -1.0]], [[-1.0, 1.0], [-1.0, 1.0]]]]],
    [[[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]]],
    0.375718,
  ),
  (
    "2d_two_channels_sigmoid",
    {"from_logits": True, "activation": "sigmoid"},
    [_X + _X],
    [[[[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]],
    0.326994,
  ),
  (
    "2d_batch_of_two",
    {"from_logits": True},
    [_X, _X],
    [[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]],
    0.455082,
  ),
  (
    "2d_no_background",
    {"from_logits": True, "activation": "sigmoid", "include_background": False},
    [_X + _X],
    [[[[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]],
    0.144659,
  ),
)


def _ids_case(b):
  """MONAI's `to_onehot_y` cases: (2, 2, 3, 1) logits, ids (2, 3, 1)."""
  x = np.moveaxis(np.asarray(_IDS_X)[..., None], 1, -1)
  ids = np.array([[[1], [0], [0]], [[1], [1], [0]]], np.int32)
  return x, ids


class HausdorffMonaiTest(parameterized.TestCase):
  @parameterized.named_parameters(*_MONAI_CASES)
  def test_monai_published_values(self, kwargs, x, target, want):
    x = np.moveaxis(np.asarray(x, np.float32), 1, -1)
    t = np.moveaxis(np.asarray(target, np.float32), 1, -1)
    np.testing.assert_allclose(_loss(x, t, **kwargs), want, rtol=1e-5)
    np.testing.assert_allclose(
      _loss(x, t, log=True, **kwargs), np.log(want + 1), rtol=1e-5
    )

  def test_monai_published_values_with_ids(self):
    x, ids = _ids_case(2)
    sig = {"from_logits": True, "activation": "sigmoid"}
    np.testing.assert_allclose(
      _loss(x, ids, reduction="none", **sig),
      [[0.407765, 0.407765], [0.5, 0.5]],
      rtol=1e-5,
    )
    np.testing.assert_allclose(
      _loss(x, ids, from_logits=True), 0.357016, rtol=1e-5
    )
    np.testing.assert_allclose(
      _loss(x, ids, from_logits=True, reduction="sum"), 1.428062, rtol=1e-5
    )

  def test_monai_1_6_1_run_values_and_gradients(self):
    cases = monai_run_cases(("HausdorffDTLoss", "LogHausdorffDTLoss"))
    self.assertLen(cases, 4)
    for case in cases:
      t, kwargs = case["targets"], case["kwargs"]
      f = functools.partial(pel_jax.hausdorff_dt_loss, targets=t, **kwargs)
      with jax.enable_x64(True):
        # One compilation for the value and the gradient.
        got, grad = jax.jit(
          lambda x, f=f: (f(x), jax.grad(lambda y: f(y).sum())(x))
        )(case["x"])
      # MONAI rounds its fields to float32: about 1e-7 relative.
      np.testing.assert_allclose(
        got, case["loss"], rtol=1e-7, err_msg=case["name"]
      )
      np.testing.assert_allclose(
        grad,
        case["grad"],
        rtol=1e-6,
        atol=1e-7 * np.abs(case["grad"]).max(),
        err_msg=case["name"],
      )


if __name__ == "__main__":
  absltest.main()

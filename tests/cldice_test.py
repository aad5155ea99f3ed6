"""cldice_loss and soft_dice_cldice_loss against a float64 NumPy/SciPy
transcription of Shit et al.'s soft skeleton and MONAI 1.6.1's losses,
MONAI's own test values, and MONAI 1.6.1 run on seeded inputs
(tests/peer_values/make_hausdorff_values.py)."""

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


def _erode(x):
  """Min over 3 pixels along each spatial axis of `[*spatial]`, the least."""
  d = x.ndim
  return np.min(
    [
      ndimage.minimum_filter(
        x,
        size=[3 if i == a else 1 for i in range(d)],
        mode="constant",
        cval=np.inf,
      )
      for a in range(d)
    ],
    axis=0,
  )


def _dilate(x):
  return ndimage.maximum_filter(x, size=3, mode="constant", cval=-np.inf)


def _skel(x, iters):
  relu = lambda v: np.maximum(v, 0)
  skel = relu(x - _dilate(_erode(x)))
  for _ in range(iters):
    x = _erode(x)
    delta = relu(x - _dilate(_erode(x)))
    skel = skel + relu(delta - skel * delta)
  return skel


def _oracle(p, g, iters=3, nr=1.0, dr=1.0, smooth=1e-4, keep=None):
  """clDice per sample of channels-last `[B, *S, C]` float64 arrays; the
  skeletons' pixels outside `keep` (bool `[B, *S]`) leave the sums."""
  if keep is None:
    keep = np.ones(p.shape[:-1], bool)
  out = []
  for pb, gb, kb in zip(p, g, keep[..., None], strict=True):
    sp = np.stack([_skel(pb[..., c], iters) for c in range(p.shape[-1])], -1)
    sg = np.stack([_skel(gb[..., c], iters) for c in range(p.shape[-1])], -1)
    sp, sg = sp * kb, sg * kb
    tprec = ((sp * gb).sum() + nr) / (sp.sum() + dr)
    tsens = ((sg * pb).sum() + nr) / (sg.sum() + dr)
    out.append(1 - 2 * tprec * tsens / (tprec + tsens + smooth))
  return np.array(out)


def _dice(p, g, nr=1.0, dr=1.0, keep=None):
  """MONAI's DiceLoss per sample and class, over the pixels `keep`."""
  if keep is not None:
    p, g = p * keep[..., None], g * keep[..., None]
  axes = tuple(range(1, p.ndim - 1))
  return 1 - (2 * (p * g).sum(axes) + nr) / (p.sum(axes) + g.sum(axes) + dr)


class ClDiceOracleTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("2d", (2, 11, 9), 3, 3, True),
    ("2d_no_background_iter0", (2, 8, 9), 3, 0, False),
    ("3d", (2, 6, 5, 4), 2, 2, True),
    ("1d", (3, 16), 2, 2, True),
  )
  def test_jitted_equal_oracle_float64(self, shape, classes, iters, bg):
    logits, ids = blob_case(shape, classes, sum(shape), scale=2.0)
    p, g = softmax(logits), np.eye(classes)[ids]
    k = 0 if bg else 1
    want = _oracle(p[..., k:], g[..., k:], iters)
    combined = 0.6 * _dice(p[..., k:], g[..., k:]).mean() + 0.4 * want.mean()
    with jax.enable_x64(True):
      kwargs = {"from_logits": True, "include_background": bg, "iter_": iters}
      # Both losses in one compilation (eager calls trace op by op).
      got, both = jax.jit(
        lambda x: (
          pel_jax.cldice_loss(x, ids, reduction="none", **kwargs),
          pel_jax.soft_dice_cldice_loss(x, ids, alpha=0.4, **kwargs),
        )
      )(logits)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(both, combined, rtol=1e-12)

  def test_one_channel_is_not_the_old_zero_loss(self):
    # MONAI before 1.6 summed channels [:, 1:]: 0 for one channel, always.
    logits, ids = blob_case((2, 9, 8), 2, 4, scale=2.0)
    x = logits[..., :1]
    p = 1 / (1 + np.exp(-x))
    want = _oracle(p, (ids == 1)[..., None].astype(float)).mean()
    with jax.enable_x64(True):
      value, grad = jax.jit(
        jax.value_and_grad(
          lambda x: pel_jax.cldice_loss(x, ids, from_logits=True)
        )
      )(x)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    self.assertGreater(float(value), 0.05)
    self.assertGreater(np.abs(grad).max(), 1e-4)

  def test_soft_targets_and_sum_float64(self):
    rng = np.random.default_rng(8)
    p = rng.random((2, 7, 8, 2))
    g = np.clip(rng.normal(0.5, 0.4, p.shape), 0, 1)
    with jax.enable_x64(True):
      got = pel_jax.cldice_loss(p, g, reduction="sum", smooth_nr=0.0)
      both = pel_jax.soft_dice_cldice_loss(p, g, reduction="sum", alpha=1.0)
    np.testing.assert_allclose(got, _oracle(p, g, nr=0.0).sum(), rtol=1e-12)
    np.testing.assert_allclose(both, _oracle(p, g).sum(), rtol=1e-12)

  def test_where_and_ignore_index_equal_oracle_float64(self):
    logits, ids = blob_case((2, 9, 8), 3, 12, scale=2.0)
    keep = np.random.default_rng(12).random(ids.shape) > 0.3
    p = softmax(logits)
    g = np.eye(3)[ids] * keep[..., None]  # ignored pixels: in no class
    want = _oracle(p, g, keep=keep)
    both = 0.5 * _dice(p, g, keep=keep).mean() + 0.5 * want.mean()
    ignored = np.where(keep, ids, -1).astype(np.int32)
    with jax.enable_x64(True):
      for fn, expect, kwargs in (
        (pel_jax.cldice_loss, want, {"reduction": "none"}),
        (pel_jax.soft_dice_cldice_loss, both, {}),
      ):
        by_index = fn(
          logits, ignored, from_logits=True, ignore_index=-1, **kwargs
        )
        by_where = fn(logits, g, from_logits=True, where=keep, **kwargs)
        np.testing.assert_allclose(by_index, expect, rtol=1e-12)
        np.testing.assert_allclose(by_where, expect, rtol=1e-12)

  def test_empty_inputs_are_finite(self):
    zeros = np.zeros((2, 6, 5, 1), np.float32)
    # tprec = tsens = 1 (smooth_nr / smooth_dr): 1 - 2 / (2 + 1e-4).
    want = 1 - 2 / (2 + 1e-4)
    for fn in (pel_jax.cldice_loss, pel_jax.soft_dice_cldice_loss):
      value, grad = jax.jit(jax.value_and_grad(lambda x, fn=fn: fn(x, zeros)))(
        zeros
      )
      self.assertTrue(np.all(np.isfinite(grad)))
      if fn is pel_jax.cldice_loss:
        np.testing.assert_allclose(value, want, atol=1e-7)  # 1 - x, float32
    logits = np.full((2, 6, 5, 3), 1e4, np.float32)
    logits[..., 0] = -1e4
    ids = np.zeros((2, 6, 5), np.int32)
    value, grad = jax.jit(
      jax.value_and_grad(
        lambda x: pel_jax.soft_dice_cldice_loss(x, ids, from_logits=True)
      )
    )(logits)
    self.assertTrue(np.isfinite(value) and np.all(np.isfinite(grad)))

  def test_check_grads_float64(self):
    rng = np.random.default_rng(2)
    p = rng.random((2, 6, 5, 2))
    ids = blob_case((2, 6, 5), 2, 2, scale=2.0)[1]
    with jax.enable_x64(True):
      check_grads(
        jax.jit(lambda x: pel_jax.soft_dice_cldice_loss(x, ids, iter_=2)),
        (p,),
        order=1,
        modes=("rev",),
        eps=1e-7,
      )

  @parameterized.named_parameters(
    ("iter_negative", {"iter_": -1}, ValueError, r"`iter_`"),
    ("iter_float", {"iter_": 2.0}, TypeError, r"`iter_`"),
    ("smooth_dr_zero", {"smooth_dr": 0.0}, ValueError, r"`smooth_dr`"),
    ("smooth_zero", {"smooth": 0.0}, ValueError, r"`smooth`"),
    ("reduction", {"reduction": "max"}, ValueError, r"`reduction`"),
  )
  def test_bad_options_raise(self, kwargs, error, regex):
    probs = np.full((2, 4, 5, 3), 1 / 3, np.float32)
    ids = np.zeros((2, 4, 5), np.int32)
    for fn in (pel_jax.cldice_loss, pel_jax.soft_dice_cldice_loss):
      with self.assertRaisesRegex(error, regex):
        fn(probs, ids, **kwargs)

  def test_combined_bad_options_raise(self):
    probs = np.full((2, 4, 5, 3), 1 / 3, np.float32)
    ids = np.zeros((2, 4, 5), np.int32)
    with self.assertRaisesRegex(ValueError, r"`alpha`"):
      pel_jax.soft_dice_cldice_loss(probs, ids, alpha=1.5)
    with self.assertRaisesRegex(ValueError, r"reduction='none'"):
      pel_jax.soft_dice_cldice_loss(probs, ids, reduction="none")
    with self.assertRaisesRegex(ValueError, r"`targets`"):
      pel_jax.cldice_loss(probs, np.zeros((2, 4, 6), np.int32))


# MONAI's tests/losses/test_cldice_loss.py (Project-MONAI/MONAI at commit
# 384075a1, the 1.6 code), channels first there.
_PARTIAL = (
  [[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0] * 3], [[0.0] * 3] * 3]],
  [[[[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0] * 3], [[0.0] * 3] * 3]],
)
_TINY = {"smooth_nr": 1e-5, "smooth_dr": 1e-5}


def _last(x):
  return np.moveaxis(np.asarray(x, np.float32), 1, -1)


class ClDiceMonaiTest(absltest.TestCase):
  def test_monai_published_cldice_values(self):
    ones = np.ones((2, 8, 8, 3), np.float32)
    np.testing.assert_allclose(pel_jax.cldice_loss(ones, ones), 0.0, atol=1e-4)
    ones3 = np.ones((2, 8, 8, 8, 3), np.float32)
    np.testing.assert_allclose(
      pel_jax.cldice_loss(ones3, ones3), 0.0, atol=1e-4
    )
    diag = [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]
    got = pel_jax.cldice_loss(
      _last([[[[1.0, -1.0], [-1.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]]]),
      _last([diag]),
      from_logits=True,
      activation="sigmoid",
      **_TINY,
    )
    np.testing.assert_allclose(got, 0.192777, atol=1e-4, rtol=1e-4)
    got = pel_jax.cldice_loss(
      _last([[[[2.0, 0.0], [0.0, 2.0]], [[-2.0, 0.0], [0.0, -2.0]]]]),
      _last([diag]),
      from_logits=True,
      **_TINY,
    )
    np.testing.assert_allclose(got, 0.148760, atol=1e-4, rtol=1e-4)
    got = pel_jax.cldice_loss(
      _last([[[[0.9, 0.1], [0.1, 0.9]], [[0.1, 0.9], [0.9, 0.1]]]]),
      np.array([[[0, 1], [1, 0]]], np.int32),
      **_TINY,
    )
    np.testing.assert_allclose(got, 0.052631, atol=1e-4, rtol=1e-4)

  def test_monai_published_combined_values(self):
    x, t = _last(_PARTIAL[0]), _last(_PARTIAL[1])
    ones = np.ones((2, 8, 8, 3), np.float32)
    np.testing.assert_allclose(
      pel_jax.soft_dice_cldice_loss(ones, ones), 0.0, atol=1e-4
    )
    for alpha, want in ((0.5, 0.624995), (0.0, 0.25), (1.0, 0.999990)):
      got = pel_jax.soft_dice_cldice_loss(x, t, alpha=alpha, **_TINY)
      np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

  def test_monai_1_6_1_run_values_and_gradients(self):
    fns = {
      "SoftclDiceLoss": pel_jax.cldice_loss,
      "SoftDiceclDiceLoss": pel_jax.soft_dice_cldice_loss,
    }
    cases = monai_run_cases(tuple(fns))
    self.assertLen(cases, 5)
    for case in cases:
      fn, t, kwargs = fns[case["monai_class"]], case["targets"], case["kwargs"]
      f = functools.partial(fn, targets=t, **kwargs)
      with jax.enable_x64(True):
        # One compilation for the value and the gradient.
        got, grad = jax.jit(
          lambda x, f=f: (f(x), jax.grad(lambda y: f(y).sum())(x))
        )(case["x"])
      np.testing.assert_allclose(
        got, case["loss"], rtol=1e-12, err_msg=case["name"]
      )
      # The stored gradients have ten significant digits.
      np.testing.assert_allclose(
        grad, case["grad"], rtol=1e-9, atol=1e-12, err_msg=case["name"]
      )


if __name__ == "__main__":
  absltest.main()

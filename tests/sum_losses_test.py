"""MCC, generalized Wasserstein Dice and unified focal losses.

Expected values come from tests/reference_losses.py (the papers' formulas in
float64 NumPy, pixel by pixel), from smp's six published `MCCLoss` cases
(qubvel-org/segmentation_models.pytorch, tests/test_losses.py,
`test_binary_mcc_loss`), and from MONAI 1.6.1 and smp 0.6.0 run by
tests/peer_values/make_new_loss_values.py (values and input gradients).
"""

import json
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests import reference_losses as ref
from tests.sharding_helpers import shard_map_value_and_grad

_PEERS = json.loads(
  (
    pathlib.Path(__file__).parent / "peer_values" / "new_loss_values.json"
  ).read_text()
)
_DIST = np.array(
  [[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]]
)  # MONAI's docstring example, scaled below to test the max-normalisation.
_IGNORE = 7


def _inputs(seed, shape=(2, 3, 4), num_classes=3):
  """float64 probabilities, their logits, ids with ignored pixels, a mask."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 1.5, shape + (num_classes,))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  ids = rng.integers(0, num_classes, shape)
  ids.reshape(-1)[:num_classes] = np.arange(num_classes)
  ignored = np.where(rng.random(shape) < 0.2, _IGNORE, ids)
  mask = rng.random(shape) < 0.8
  return logits, probs, ids, ignored, mask


def _onehot(ids, num_classes):
  return (
    np.eye(num_classes)[np.where(ids < num_classes, ids, 0)]
    * (ids < num_classes)[..., None]
  )


def _jitted(loss):
  """`loss` compiled whole: one compilation, not one per operation."""
  return lambda *args, **options: jax.jit(lambda *a: loss(*a, **options))(*args)


def _peer_call(case):
  """The pel_jax call that maps the peer's case, and its channels-last x."""
  x = np.moveaxis(np.asarray(case["inputs"]), 1, -1)
  t = np.asarray(case["targets"])
  s, name = case["settings"], case["name"]
  if name.startswith("gwdl"):
    return lambda x: jnp.sum(
      pel_jax.generalized_wasserstein_dice_loss(
        x,
        t,
        dist_matrix=np.asarray(s["dist_matrix"]),
        weighting_mode=s["weighting_mode"],
        from_logits=True,
        reduction=s["reduction"],
      )
    ), x
  if name.startswith("focal"):
    o = {k: v for k, v in s.items() if k != "mode"}
    if t.ndim == x.ndim:  # Float (multi-hot) targets, channels first.
      t = np.moveaxis(t.astype(np.float64), 1, -1)
    return lambda x: pel_jax.focal_cross_entropy(x, t, from_logits=True, **o), x
  t = np.moveaxis(t.astype(np.float64), 1, -1)
  if name.startswith("aufl"):
    return lambda x: pel_jax.unified_focal_loss(
      x, t, weight=s["weight"], gamma=s["gamma"], delta=s["delta"]
    ), x
  return lambda x: pel_jax.mcc_loss(x, t, eps=s["eps"]), x


class PeerTest(parameterized.TestCase):
  @parameterized.named_parameters((c["name"], c) for c in _PEERS["cases"])
  def test_value_and_gradient(self, case):
    fn, x = _peer_call(case)
    with jax.enable_x64(True):
      value, grad = jax.jit(jax.value_and_grad(fn))(x)
    # MONAI computes the GDL weights 1 / (V + 1) in float32.
    rtol = 1e-7 if "GDL" in case["name"] else 1e-12
    np.testing.assert_allclose(value, case["value"], rtol=rtol)
    want = np.moveaxis(np.asarray(case["grad"]), 1, -1)
    np.testing.assert_allclose(grad, want, rtol=rtol, atol=1e-12)

  @parameterized.parameters("default", "GDL")
  def test_monai_published_gwdl_cases(self, mode):
    # Project-MONAI/MONAI tests/losses/test_generalized_wasserstein_dice_loss
    # .py: test_bin_seg_2d, test_empty_class_2d (good ~0, poor ~1, 3 places)
    # and the batch > 1 regression tests of issue 4650 (each sample of a
    # batch scores as it does alone), in one batch.
    square = np.zeros((4, 4), int)
    square[1:3, 1:3] = 1
    corner = np.zeros((4, 4), int)
    corner[:2, :2] = 1
    empty = np.zeros((4, 4), int)
    targets = np.stack([square, square, empty, empty, square, corner])
    predicted = np.stack(
      [square, 1 - square, empty, 1 - empty, square, 1 - corner]
    )
    logits = 1000 * np.eye(2)[predicted]
    fn = _jitted(pel_jax.generalized_wasserstein_dice_loss)
    o = dict(
      dist_matrix=np.array([[0.0, 1.0], [1.0, 0.0]]),
      weighting_mode=mode,
      from_logits=True,
      reduction="none",
    )
    got = fn(logits, targets, **o)
    np.testing.assert_allclose(got, [0, 1, 0, 1, 0, 1], atol=5e-4)
    np.testing.assert_allclose(
      fn(logits[5:], targets[5:], **o), got[5:], atol=1e-6
    )

  def test_monai_published_unified_focal_cases(self):
    # Project-MONAI/MONAI tests/losses/test_unified_focal_loss.py at
    # 05142ed (after 1.6.1: its multi-class AsymmetricUnifiedFocalLoss,
    # default delta 0.6), TEST_CASES, channels moved last; atol 1e-3.
    fn = _jitted(pel_jax.unified_focal_loss)
    last = lambda a: np.moveaxis(np.asarray(a), 1, -1)
    perfect = [[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]]
    three = [
      [
        [[1.0, 0.0], [0.0, 0.0]],
        [[0.0, 1.0], [0.0, 0.0]],
        [[0.0, 0.0], [1.0, 1.0]],
      ]
    ]
    logits = 20 * np.asarray(three) - 10
    bad = [[[[-10.0, -10.0]], [[10.0, 10.0]], [[-10.0, -10.0]]]]
    wrong = [[[[1.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]]
    cases = (
      (last(perfect), last(perfect), {}, 0.0),
      (last(logits), last(three), dict(from_logits=True), 0.0),
      (last(three), np.array([[[0, 1], [2, 2]]]), {}, 0.0),
      (last(bad), last(wrong), dict(from_logits=True), 1.518984),
    )
    for x, t, o, want in cases:
      got = fn(x, t, delta=0.6, **o)
      np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)

  @parameterized.named_parameters(
    # segmentation_models.pytorch tests/test_losses.py, test_binary_mcc_loss.
    ("ideal", [[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 1, 0, 0], [0, 0, 1, 1]], 0.0),
    ("worst", [[1, 1, 0, 0], [0, 0, 1, 1]], [[0, 0, 1, 1], [1, 1, 0, 0]], 2.0),
    ("1_minus_1_3", [[0, 1, 1, 0]] * 2, [[1, 1, 0, 0]] * 2, 1.0),
    ("trivial_1", [[0, 0, 0, 0]] * 2, [[1, 1, 0, 0]] * 2, 1.0),
    ("trivial_2", [[0, 0, 0, 0]] * 2, [[1, 1, 1, 1]] * 2, 1.5),
    ("trivial_3", [[1, 1, 1, 1]] * 2, [[1, 1, 1, 1]] * 2, 0.5),
  )
  def test_smp_published_mcc_cases(self, y_pred, y_true, expected):
    p = jnp.asarray([y_pred], jnp.float32)[..., None]  # smp's (N, H, W).
    g = jnp.asarray([y_true], jnp.float32)[..., None]
    np.testing.assert_allclose(
      pel_jax.mcc_loss(p, g, eps=1e-5), expected, atol=1e-5
    )


class OracleTest(parameterized.TestCase):
  @parameterized.parameters(True, False)
  def test_mcc_multiclass(self, batch):
    logits, probs, _, ignored, mask = _inputs(1)
    keep = mask & (ignored != _IGNORE)
    with jax.enable_x64(True):
      got = _jitted(pel_jax.mcc_loss)(
        logits,
        ignored,
        from_logits=True,
        batch=batch,
        ignore_index=_IGNORE,
        where=mask,
        reduction="none",
      )
      soft = _jitted(pel_jax.mcc_loss)(
        probs, probs[::-1], batch=batch, include_background=False
      )
    want = ref.mcc(probs, _onehot(ignored, 3), keep, batch=batch)
    np.testing.assert_allclose(got, want if not batch else want[0], rtol=1e-12)
    want = ref.mcc(probs, probs[::-1], batch=batch)[:, 1:].mean()
    np.testing.assert_allclose(soft, want, rtol=1e-12)

  @parameterized.parameters(("default", False), ("GDL", True))
  def test_gwdl(self, mode, batch):
    logits, probs, _, ignored, mask = _inputs(2)
    keep = mask & (ignored != _IGNORE)
    with jax.enable_x64(True):
      got = _jitted(pel_jax.generalized_wasserstein_dice_loss)(
        logits,
        ignored,
        dist_matrix=2 * _DIST,
        weighting_mode=mode,
        from_logits=True,
        batch=batch,
        ignore_index=_IGNORE,
        where=mask,
        reduction="none",
      )
      soft = _jitted(pel_jax.generalized_wasserstein_dice_loss)(
        probs, probs[::-1], dist_matrix=_DIST, weighting_mode=mode
      )
    want = ref.gwdl(
      probs, _onehot(ignored, 3), _DIST, keep, mode=mode, batch=batch
    )
    np.testing.assert_allclose(got, want if not batch else want[0], rtol=1e-12)
    want = ref.gwdl(probs, probs[::-1], _DIST, mode=mode).mean()
    np.testing.assert_allclose(soft, want, rtol=1e-12)

  @parameterized.parameters(False, True)
  def test_unified_focal_multiclass(self, batch):
    logits, probs, _, ignored, mask = _inputs(3, num_classes=4)
    keep = mask & (ignored != _IGNORE)
    o = dict(weight=0.4, delta=0.6, gamma=0.3, batch=batch)
    with jax.enable_x64(True):
      got = _jitted(pel_jax.unified_focal_loss)(
        logits, ignored, from_logits=True, ignore_index=_IGNORE, where=mask, **o
      )
      soft = _jitted(pel_jax.unified_focal_loss)(probs, probs[::-1], **o)
    want = ref.unified_focal(probs, _onehot(ignored, 4), keep, **o)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(
      soft, ref.unified_focal(probs, probs[::-1], **o), rtol=1e-12
    )

  def test_unified_focal_one_channel_is_the_foreground(self):
    _, probs, ids, _, _ = _inputs(4, num_classes=2)
    with jax.enable_x64(True):
      got = _jitted(pel_jax.unified_focal_loss)(probs[..., 1:], ids)
    np.testing.assert_allclose(
      got, ref.unified_focal(probs, _onehot(ids, 2)), rtol=1e-12
    )

  @parameterized.parameters(
    dict(gamma=2.0, alpha=0.25),
    dict(gamma=1.5, reduced_threshold=0.4, normalized=True),
  )
  def test_focal_multiclass_and_multilabel(self, **o):
    logits, probs, _, ignored, mask = _inputs(9)
    keep = mask & (ignored != _IGNORE)
    with jax.enable_x64(True):
      got = _jitted(pel_jax.focal_cross_entropy)(
        logits, ignored, from_logits=True, ignore_index=_IGNORE, where=mask, **o
      )
      soft = _jitted(pel_jax.focal_cross_entropy)(
        probs, probs[::-1], class_weights=[1.0, 2.0, 0.5], **o
      )
    want = ref.focal(logits, _onehot(ignored, 3), keep, **o)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    logit_probs = np.log(probs) - np.log1p(-probs)
    want = ref.focal(logit_probs, probs[::-1], class_weights=[1, 2, 0.5], **o)
    np.testing.assert_allclose(soft, want, rtol=1e-10)

  def test_smp_published_focal_cases(self):
    # segmentation_models.pytorch tests/test_losses.py: test_focal_loss_with
    # _logits (smp's functional default alpha=0.25), and the FocalLoss class
    # weight tests (uniform weights are no weights; weights are scale-free).
    target = jnp.array([[1, 0, 1]])
    good = jnp.array([[[10.0], [-10.0], [10.0]]])
    bad = jnp.array([[[-1.0], [2.0], [0.0]]])
    o = dict(from_logits=True, alpha=0.25)
    focal = _jitted(pel_jax.focal_cross_entropy)
    self.assertLess(focal(good, target, **o), focal(bad, target, **o))
    logits, _, ids, _, _ = _inputs(10)
    fn = lambda w: focal(logits, ids, from_logits=True, class_weights=w)
    np.testing.assert_allclose(fn([1.0, 1.0, 1.0]), fn(None), rtol=1e-6)
    np.testing.assert_allclose(
      fn([1.0, 2.0, 0.5]), fn([10.0, 20.0, 5.0]), rtol=1e-6
    )

  def test_check_grads(self):
    logits, _, _, ignored, mask = _inputs(5, shape=(2, 2, 3))
    o = dict(from_logits=True, ignore_index=_IGNORE, where=mask)

    @jax.jit
    def losses(x):  # One compilation for the three.
      return (
        pel_jax.mcc_loss(x, ignored, batch=False, **o)
        + 2
        * pel_jax.generalized_wasserstein_dice_loss(
          x, ignored, dist_matrix=_DIST, weighting_mode="GDL", **o
        )
        + 3 * pel_jax.unified_focal_loss(x, ignored, **o)
        + 4 * pel_jax.focal_cross_entropy(x, ignored, alpha=0.3, **o)
      )

    with jax.enable_x64(True):
      jtu.check_grads(losses, (logits,), order=1, modes=("rev",), eps=1e-6)


class UsageTest(parameterized.TestCase):
  def test_jit_and_finite_when_nothing_is_kept(self):
    logits, _, ids, _, _ = _inputs(6)
    x = jnp.asarray(logits, jnp.float32)

    def losses(x, w):
      return jnp.stack(
        [
          pel_jax.mcc_loss(x, ids, from_logits=True, where=w),
          pel_jax.generalized_wasserstein_dice_loss(
            x, ids, dist_matrix=_DIST, from_logits=True, where=w
          ),
          pel_jax.unified_focal_loss(x, ids, from_logits=True, where=w),
          pel_jax.focal_cross_entropy(x, ids, from_logits=True, where=w),
        ]
      )

    step = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(losses(x, w))))
    every = np.ones(ids.shape, bool)
    probs = np.asarray(jax.nn.softmax(x))
    onehot = _onehot(ids, 3)
    want = [
      ref.mcc(probs, onehot).mean(),
      ref.gwdl(probs, onehot, _DIST).mean(),
      ref.unified_focal(probs, onehot),
      ref.focal(np.asarray(x), onehot),
    ]
    np.testing.assert_allclose(jax.jit(losses)(x, every), want, rtol=1e-5)
    for w in (every, ~every):
      value, grad = step(x, w)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_bad_inputs_name_the_argument(self):
    logits, _, ids, _, _ = _inputs(7)
    gwdl = pel_jax.generalized_wasserstein_dice_loss
    bad = (
      (lambda: pel_jax.mcc_loss(logits, ids, eps=-1.0), "`eps`"),
      (
        lambda: pel_jax.mcc_loss(logits, ids, batch=False, axis_name="d"),
        "`axis_name=",
      ),
      (lambda: pel_jax.mcc_loss(logits, ids[0]), "`targets`"),
      (lambda: gwdl(logits, ids, dist_matrix=np.eye(2)), "`dist_matrix`"),
      (
        lambda: gwdl(logits, ids, dist_matrix=_DIST, weighting_mode="x"),
        "`weighting_mode`",
      ),
      (lambda: gwdl(logits[..., :1], ids, dist_matrix=np.eye(1)), "C >= 2"),
      (lambda: pel_jax.unified_focal_loss(logits, ids, gamma=1.0), "`gamma`"),
      (lambda: pel_jax.unified_focal_loss(logits, ids, delta=1.5), "`delta`"),
      (lambda: pel_jax.unified_focal_loss(logits, ids, weight=2), "`weight`"),
    )
    for call, name in bad:
      with self.assertRaisesRegex(ValueError, name):
        call()
    focal = pel_jax.focal_cross_entropy
    for kwargs, name in (
      (dict(gamma=-1.0), "`gamma`"),
      (dict(alpha=1.5), "`alpha`"),
      (dict(reduced_threshold=0.0), "`reduced_threshold`"),
      (dict(class_weights=[1.0, 2.0]), "`class_weights`"),
      (dict(class_weights=[1.0] * 3, reduction="sum"), "`class_weights`"),
      (dict(batch=False, axis_name="d"), "`axis_name="),
    ):
      with self.assertRaisesRegex(ValueError, name):
        focal(logits, ids, **kwargs)
    with self.assertRaisesRegex(TypeError, "`dist_matrix`"):
      gwdl(logits, ids, dist_matrix=np.eye(3, dtype=bool))

  def test_shard_map_is_the_global_loss(self):
    n = jax.device_count()
    logits, _, _, ignored, mask = _inputs(8, shape=(n, 2, 3))
    o = dict(from_logits=True, ignore_index=_IGNORE, batch=True)

    def losses(x, t, w, **a):  # One compilation for the three.
      return (
        pel_jax.mcc_loss(x, t, where=w, **o, **a)
        + 2
        * pel_jax.generalized_wasserstein_dice_loss(
          x, t, dist_matrix=_DIST, weighting_mode="GDL", where=w, **o, **a
        )
        + 3 * pel_jax.unified_focal_loss(x, t, where=w, **o, **a)
        + 4
        * pel_jax.focal_cross_entropy(x, t, where=w, normalized=True, **o, **a)
      )

    args = [jnp.asarray(logits, jnp.float32), ignored, mask]
    want, want_grad = jax.jit(jax.value_and_grad(losses))(*args)
    got, grad = shard_map_value_and_grad(losses, *args)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)


def _assert_accumulation_is_exact(seed, stats_of, loss_of_stats, whole):
  """Two micro-batches of logits `features @ kernel`: the loss of their
  added `stats_of(logits, ids)` by `accumulated_value_and_grad` equals
  `whole(logits, ids)` on the whole batch, value and kernel gradient, in
  float64 (ids with ignored pixels)."""
  rng = np.random.default_rng(seed)
  feats = rng.normal(0, 1, (4, 5, 2))  # [B, pixels, features]
  ids = rng.integers(0, 3, (4, 5))
  ids = np.where(rng.random(ids.shape) < 0.2, _IGNORE, ids)
  kernel = rng.normal(0, 1, (2, 3))
  mbs = {"x": feats.reshape(2, 2, 5, 2), "y": ids.reshape(2, 2, 5)}
  stats_fn = lambda w, mb: stats_of(mb["x"] @ w, mb["y"])
  with jax.enable_x64(True):
    want, want_grad = jax.jit(
      jax.value_and_grad(lambda w: whole(feats @ w, ids))
    )(kernel)
    got, grad = jax.jit(
      lambda w: pel_jax.accumulated_value_and_grad(
        stats_fn, loss_of_stats, w, mbs
      )
    )(kernel)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-14)


class MccFromStatsTest(absltest.TestCase):
  """`mcc_loss_from_stats`: exact under accumulation (the whole batch's
  `mcc_loss` value and gradient, by `accumulated_value_and_grad`)."""

  def test_accumulated_equals_whole_batch(self):
    o = dict(from_logits=True, ignore_index=_IGNORE)
    mcc = dict(eps=0.1, include_background=False)
    _assert_accumulation_is_exact(
      11,
      lambda x, y: pel_jax.confusion_stats(x, y, hard=None, batch=True, **o),
      lambda stats: pel_jax.mcc_loss_from_stats(stats, **mcc),
      lambda x, y: pel_jax.mcc_loss(x, y, **mcc, **o),
    )

  def test_bad_stats(self):
    with self.assertRaisesRegex(TypeError, "ConfusionStats"):
      pel_jax.mcc_loss_from_stats({"tp": np.ones(2)})
    stats = pel_jax.ConfusionStats(*(np.ones(1) for _ in range(4)))
    with self.assertRaisesRegex(ValueError, "include_background"):
      pel_jax.mcc_loss_from_stats(stats, include_background=False)


class WassersteinFromStatsTest(parameterized.TestCase):
  """`wasserstein_stats` + `..._from_stats`: exact under accumulation."""

  @parameterized.parameters("default", "GDL")
  def test_accumulated_equals_whole_batch(self, mode):
    o = dict(dist_matrix=_DIST, from_logits=True, ignore_index=_IGNORE)
    _assert_accumulation_is_exact(
      12,
      lambda x, y: pel_jax.wasserstein_stats(x, y, batch=True, **o),
      lambda stats: pel_jax.generalized_wasserstein_dice_loss_from_stats(
        stats, weighting_mode=mode
      ),
      lambda x, y: pel_jax.generalized_wasserstein_dice_loss(
        x, y, weighting_mode=mode, batch=True, **o
      ),
    )

  def test_bad_stats(self):
    with self.assertRaisesRegex(TypeError, "WassersteinStats"):
      pel_jax.generalized_wasserstein_dice_loss_from_stats((np.ones(3),) * 2)
    stats = pel_jax.WassersteinStats(np.ones(3), np.ones(3))
    with self.assertRaisesRegex(ValueError, "`weighting_mode`"):
      pel_jax.generalized_wasserstein_dice_loss_from_stats(
        stats, weighting_mode="gdl"
      )


if __name__ == "__main__":
  absltest.main()

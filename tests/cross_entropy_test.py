"""`cross_entropy` and `pel_loss`'s weighted CE (`ce_class_weights`, `ce_pos_weight`).

Expected values come from torch 2.14.1, MONAI 1.6.1 and smp 0.6.0 run by
tests/peer_values/make_ce_values.py (values and input gradients, float64),
and from float64 NumPy transcriptions of torch's formulas written below.
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
from tests.sharding_helpers import shard_map_value_and_grad

_PEERS = json.loads(
  (pathlib.Path(__file__).parent / "peer_values" / "ce_values.json").read_text()
)
_IGNORE = 9


def _chlast(x):
  return jnp.moveaxis(jnp.asarray(x), 1, -1)


def _peer_loss(case):
  """pel_jax's equivalent of the peer's loss, as a function of its input."""
  s, name = case["settings"], case["name"]
  t = np.asarray(case["targets"])
  if name.startswith("ce_"):
    kw = dict(
      class_weights=s["weight"],
      ignore_index=s.get("ignore_index"),
      label_smoothing=s.get("label_smoothing", 0.0),
      reduction=s.get("reduction", "mean"),
    )
    return lambda x: pel_jax.cross_entropy(_chlast(x), t, **kw)
  if name.startswith("bce_"):
    kw = dict(pos_weight=s["pos_weight"], class_weights=s.get("weight"))
    return lambda x: pel_jax.cross_entropy(
      _chlast(x), _chlast(t), activation="sigmoid", **kw
    )
  if name == "monai_dice_ce_weight":  # README: MONAI DiceCELoss row.
    w = np.asarray(s["weight"])
    kw = dict(
      from_logits=True,
      include_background=False,
      class_weights=w,  # All classes; include_background drops w[0].
      smooth_nr=0.5e-5,
      smooth_dr=0.5e-5,
      ce_weight=s["lambda_ce"],
      ce_class_weights=w,
      ce_label_smoothing=s["label_smoothing"],
    )
    return lambda x: pel_jax.dice_loss(_chlast(x), t[:, 0], **kw)
  if name == "monai_dice_ce_pos_weight":  # Its Dice ignores the weight.
    kw = dict(
      from_logits=True,
      smooth_nr=0.5e-5,
      smooth_dr=0.5e-5,
      ce_weight=1.0,
      ce_pos_weight=s["weight"],
    )
    return lambda x: pel_jax.dice_loss(_chlast(x), _chlast(t), **kw)
  if name == "smp_soft_ce":  # smp's mean counts the ignored pixels.
    kw = dict(
      label_smoothing=s["smooth_factor"],
      ignore_index=s["ignore_index"],
      reduction="sum",
    )
    return lambda x: pel_jax.cross_entropy(_chlast(x), t, **kw) / t.size
  if name == "smp_soft_bce":  # smp smooths to f and 1 - f: eps = 2 f.
    kept = t != s["ignore_index"]
    kw = dict(
      label_smoothing=2 * s["smooth_factor"], where=kept, reduction="sum"
    )
    g = (t == 1).astype(np.float64)[..., None]
    return lambda x: pel_jax.cross_entropy(x[..., None], g, **kw) / t.size
  raise KeyError(name)


def _torch_ce(x, ids, w, eps=0.0, ignore=None):
  """torch's weighted, smoothed CrossEntropyLoss "mean", float64 NumPy.

  Transcribed from torch's cross_entropy_loss_label_smoothing: the NLL
  mean Σ w_y (-log p_y) / Σ w_y, plus eps / C times Σ_c w_c (-log p_c)
  over the kept pixels, divided by the same Σ w_y.
  """
  x = x.reshape(-1, x.shape[-1])
  ids = ids.reshape(-1)
  keep = ids != ignore if ignore is not None else np.ones(ids.shape, bool)
  x, ids = x[keep], ids[keep]
  log_p = x - x.max(-1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
  wy = w[ids]
  nll = np.sum(wy * -log_p[np.arange(len(ids)), ids]) / wy.sum()
  smooth = np.sum(-(log_p * w).sum(-1)) / wy.sum()
  return (1 - eps) * nll + eps / x.shape[-1] * smooth


def _torch_bce(x, g, pos, w):
  """torch's BCEWithLogitsLoss(pos_weight, weight) "mean", float64 NumPy."""
  log_p = -np.logaddexp(0, -x)
  log_1mp = -np.logaddexp(0, x)
  return np.mean(w * -(pos * g * log_p + (1 - g) * log_1mp))


def _inputs(seed, shape=(2, 3, 4), num_classes=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, shape + (num_classes,))
  ids = rng.integers(0, num_classes, shape)
  ignored = np.where(rng.random(shape) < 0.25, _IGNORE, ids)
  return logits, ids, ignored


class PeerValuesTest(parameterized.TestCase):
  @parameterized.named_parameters((c["name"], c) for c in _PEERS["cases"])
  def test_value_and_gradient(self, case):
    x = np.asarray(case["inputs"])
    with jax.enable_x64(True):
      value, grad = jax.jit(jax.value_and_grad(_peer_loss(case)))(x)
    np.testing.assert_allclose(value, case["value"], rtol=1e-10)
    np.testing.assert_allclose(grad, case["grad"], rtol=1e-8, atol=1e-14)


class OracleTest(parameterized.TestCase):
  @parameterized.parameters(
    (0.0, None), (0.2, None), (0.0, _IGNORE), (0.15, _IGNORE)
  )
  def test_softmax_weights(self, eps, ignore):
    logits, ids, ignored = _inputs(1)
    t = ids if ignore is None else ignored
    w = np.array([0.3, 2.0, 0.9])
    want = _torch_ce(logits, t, w, eps, ignore)
    with jax.enable_x64(True):
      got = pel_jax.cross_entropy(
        logits, t, class_weights=w, label_smoothing=eps, ignore_index=ignore
      )
      # pel_loss's CE term: the loss with it, less the loss without it.
      o = dict(from_logits=True, ignore_index=ignore)
      fused = pel_jax.pel_loss(
        logits,
        t,
        ce_weight=0.5,
        ce_class_weights=w,
        ce_label_smoothing=eps,
        **o,
      ) - pel_jax.pel_loss(logits, t, **o)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(fused, 0.5 * want, rtol=1e-10)

  def test_one_hot_equals_ids(self):
    logits, ids, _ = _inputs(2)
    w = np.array([0.3, 2.0, 0.9])
    with jax.enable_x64(True):
      a = pel_jax.cross_entropy(logits, ids, class_weights=w)
      b = pel_jax.cross_entropy(logits, np.eye(3)[ids], class_weights=w)
    np.testing.assert_allclose(b, a, rtol=1e-12)

  def test_sigmoid_pos_weight(self):
    logits, ids, _ = _inputs(3)
    g = (np.random.default_rng(3).random(logits.shape) < 0.4) * 1.0
    pos, w = np.array([0.5, 3.0, 1.0]), np.array([1.0, 0.2, 2.0])
    want = _torch_bce(logits, g, pos, w)
    with jax.enable_x64(True):
      got = pel_jax.cross_entropy(
        logits, g, activation="sigmoid", pos_weight=pos, class_weights=w
      )
      o = dict(from_logits=True, activation="sigmoid")
      fused = pel_jax.pel_loss(
        logits, g, ce_weight=1.0, ce_pos_weight=pos, ce_class_weights=w, **o
      ) - pel_jax.pel_loss(logits, g, **o)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(fused, want, rtol=1e-10)

  def test_unit_weights_equal_the_fused_ce(self):
    logits, _, ignored = _inputs(4)
    o = dict(from_logits=True, ce_weight=0.7, ce_label_smoothing=0.1)
    with jax.enable_x64(True):
      fused = pel_jax.pel_loss(logits, ignored, ignore_index=_IGNORE, **o)
      weighted = pel_jax.pel_loss(
        logits, ignored, ignore_index=_IGNORE, ce_class_weights=np.ones(3), **o
      )
    np.testing.assert_allclose(weighted, fused, rtol=1e-12)

  def test_gradients(self):
    logits, _, ignored = _inputs(5, shape=(2, 3))
    with jax.enable_x64(True):
      jtu.check_grads(
        jax.jit(
          lambda x: pel_jax.cross_entropy(
            x,
            ignored,
            class_weights=[0.5, 1.0, 2.0],
            label_smoothing=0.1,
            ignore_index=_IGNORE,
          )
        ),
        (logits,),
        order=2,
        modes=("rev",),
      )
      jtu.check_grads(
        jax.jit(
          lambda x: pel_jax.cross_entropy(
            x,
            np.eye(3)[ignored % 3],
            activation="sigmoid",
            pos_weight=[0.5, 1.0, 2.0],
          )
        ),
        (logits,),
        order=2,
        modes=("rev",),
      )


class AccumulationTest(parameterized.TestCase):
  @parameterized.parameters(True, False)
  def test_halves_add_up(self, batch):
    logits, _, ignored = _inputs(6, shape=(4, 3, 2))
    o = dict(
      from_logits=True,
      ignore_index=_IGNORE,
      batch=batch,
      ce_weight=0.6,
      ce_class_weights=[0.2, 1.0, 4.0],
      ce_label_smoothing=0.05,
    )

    def halves(x):
      parts = [
        pel_jax.region_stats(x[i : i + 2], ignored[i : i + 2], **o)
        for i in (0, 2)
      ]
      join = jnp.add if batch else lambda a, b: jnp.concatenate([a, b])
      return pel_jax.loss_from_stats(jax.tree.map(join, *parts), **o)

    with jax.enable_x64(True):
      want, want_grad = jax.jit(
        jax.value_and_grad(lambda x: pel_jax.pel_loss(x, ignored, **o))
      )(logits)
      got, grad = jax.jit(jax.value_and_grad(halves))(logits)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-15)

  def test_shard_map_is_the_global_loss(self):
    n = jax.device_count()
    logits, _, ignored = _inputs(7, shape=(n, 2, 3))
    mask = np.random.default_rng(7).random(ignored.shape) < 0.8
    w = np.array([0.2, 1.0, 4.0])

    def losses(x, t, m, **a):
      return pel_jax.pel_loss(
        x,
        t,
        where=m,
        from_logits=True,
        ignore_index=_IGNORE,
        batch=True,
        ce_weight=0.5,
        ce_class_weights=w,
        **a,
      ) + pel_jax.cross_entropy(
        x, t, where=m, ignore_index=_IGNORE, class_weights=w, **a
      )

    args = [jnp.asarray(logits, jnp.float32), ignored, mask]
    want, want_grad = jax.jit(jax.value_and_grad(losses))(*args)
    got, grad = shard_map_value_and_grad(losses, *args)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)


class EdgeTest(absltest.TestCase):
  def test_masked_nan_and_half_precision(self):
    logits, ids, _ = _inputs(8)
    x = np.where(ids[..., None] == 2, np.nan, logits).astype(np.float32)
    kept = ids != 2
    for dtype in (jnp.float32, jnp.bfloat16):
      value, grad = jax.jit(
        jax.value_and_grad(
          lambda x: pel_jax.cross_entropy(
            x, ids, where=kept, class_weights=[1.0, 2.0, 3.0]
          )
        )
      )(jnp.asarray(x, dtype))
      self.assertEqual(value.dtype, jnp.float32)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(np.asarray(grad, np.float32))))
    # Nothing kept: 0, with a zero gradient.
    value, grad = jax.jit(
      jax.value_and_grad(
        lambda x: pel_jax.cross_entropy(x, ids, where=np.zeros_like(kept))
      )
    )(jnp.asarray(x))
    self.assertEqual(float(value), 0.0)
    self.assertFalse(np.any(grad))

  def test_extreme_logits(self):
    x = np.array([[[1e4, -1e4], [-1e4, 1e4]]], np.float32)
    ids = np.array([[1, 1]])
    got = pel_jax.cross_entropy(x, ids, class_weights=[1.0, 3.0])
    np.testing.assert_allclose(got, 1e4, rtol=1e-6)  # Σ w_y l / Σ w_y.
    got = pel_jax.cross_entropy(
      x[..., :1], ids, activation="sigmoid", pos_weight=2.0
    )
    np.testing.assert_allclose(got, 2 * 1e4 / 2, rtol=1e-6)  # (0 + a·1e4) / 2.

  def test_bad_input(self):
    logits, ids, _ = _inputs(9)
    cases = [
      (dict(pos_weight=[1.0, 1.0, 1.0]), "`pos_weight`.*sigmoid"),
      (dict(activation="sigmoid", pos_weight=[1.0, 2.0]), r"\(3,\)"),
      (dict(activation="sigmoid", pos_weight=-1.0), ">= 0"),
      (dict(class_weights=[1.0, 2.0]), "`class_weights`"),
      (dict(class_weights=[1.0, -2.0, 1.0]), "`class_weights`"),
      (dict(label_smoothing=1.0), r"\[0, 1\)"),
      (dict(reduction="avg"), "`reduction`"),
    ]
    for kw, msg in cases:
      with self.assertRaisesRegex(ValueError, msg):
        pel_jax.cross_entropy(logits, ids, **kw)
    with self.assertRaisesRegex(ValueError, "ce_weight > 0"):
      pel_jax.pel_loss(
        logits, ids, from_logits=True, ce_class_weights=[1.0, 1.0, 1.0]
      )
    with self.assertRaisesRegex(ValueError, "`pos_weight`.*sigmoid"):
      pel_jax.dice_loss(
        logits, ids, from_logits=True, ce_weight=1.0, ce_pos_weight=1.0
      )
    with self.assertRaisesRegex(ValueError, "1×1 head"):
      pel_jax.head_loss(
        logits, np.eye(3), np.zeros(3), ids, ce_weight=1.0, ce_pos_weight=1.0
      )


if __name__ == "__main__":
  absltest.main()

"""Tests of examples/unet/losses.py: the --loss spec and its statistics form."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.unet import configs
from examples.unet import data
from examples.unet import losses
from examples.unet import models
from examples.unet import steps
import pel_jax
from tests.examples_unet_helpers import params_of
from tests.examples_unet_helpers import tiny
from tests.reference_distance import one_hot2dist
from tests.reference_distance import softmax


def test_parse_loss():
  assert losses.parse_loss("pel+0.5*ce") == ((1.0, "pel"), (0.5, "ce"))
  with pytest.raises(ValueError, match="bad --loss term 'focal'"):
    losses.parse_loss("dice+focal")
  assert losses.parse_loss("dice+boundary") == (
    (1.0, "dice"),
    (1.0, "boundary"),
  )
  assert losses.parse_loss("pel + ce + 0.5*boundary")[-1] == (0.5, "boundary")
  for bad in ("-1*pel+ce", "1e999*dice", "nan*ce", "0*ce", "1.2.3*pel"):
    with pytest.raises(ValueError, match="finite number > 0"):
      losses.parse_loss(bad)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_stats_loss_is_make_loss(batch_dice):
  """Every term as statistics, whole or in two parts, gives `make_loss`."""
  cfg = configs.get_config(
    loss="pel+0.5*dice+jaccard+2*tversky+ce+0.3*boundary",
    classes=3,
    batch_dice=batch_dice,
    fn_weight=0.6,
  )
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 5, 6, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, (4, 5, 6)))
  want = losses.make_loss(cfg)(logits, labels, 40)  # a ramped boundary
  # Each term alone by its own function: the options are the functions'.
  for name in ("pel", "dice", "jaccard", "tversky"):
    o = dict(
      losses.region_options(name, cfg), from_logits=True, batch=batch_dice
    )
    np.testing.assert_allclose(
      pel_jax.pel_loss(logits, labels, **o),
      losses.region_loss_fn(name, cfg)(
        logits, labels, from_logits=True, batch=batch_dice
      ),
      rtol=1e-6,
    )
  sl = losses.make_stats_loss(cfg)
  assert sl.stack is not batch_dice
  np.testing.assert_allclose(
    sl.loss(sl.stats(logits, labels), 40)
    if batch_dice
    else sl.loss(jax.tree.map(lambda a: a[None], sl.stats(logits, labels)), 40),
    want,
    rtol=1e-6,
  )
  parts = [sl.stats(logits[i : i + 2], labels[i : i + 2]) for i in (0, 2)]
  combine = (lambda *s: sum(s)) if batch_dice else (lambda *s: jnp.stack(s))
  np.testing.assert_allclose(
    sl.loss(jax.tree.map(combine, *parts), 40), want, rtol=1e-6
  )


@pytest.mark.parametrize(
  "spec,batch_dice",
  [("pel+2*tversky+ce", True), ("jaccard+0.5*ce", False), ("ce", True)],
)
def test_fused_head_loss_is_make_loss(spec, batch_dice):
  """`--fused-head`, whole and as two parts' statistics: the unfused loss of
  the head's logits, value and gradients for features, kernel and bias."""
  kw = dict(loss=spec, classes=3, batch_dice=batch_dice)
  plain = losses.make_loss(configs.get_config(**kw))
  fused_cfg = configs.get_config(**kw, fused_head=True)
  fused, sl = losses.make_loss(fused_cfg), losses.make_stats_loss(fused_cfg)
  assert sl.stack is not batch_dice
  rng = np.random.default_rng(1)
  head = models.HeadInputs(
    jnp.asarray(rng.normal(size=(4, 5, 6, 2)), jnp.float32),
    jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
    jnp.asarray(rng.normal(size=3), jnp.float32),
  )
  labels = jnp.asarray(rng.integers(0, 3, (4, 5, 6)))
  combine = (lambda *s: sum(s)) if batch_dice else (lambda *s: jnp.stack(s))

  def in_parts(h):
    parts = [
      sl.stats(h._replace(features=h.features[i : i + 2]), labels[i : i + 2])
      for i in (0, 2)
    ]
    return sl.loss(jax.tree.map(combine, *parts))

  want, want_grad = jax.jit(
    jax.value_and_grad(lambda h: plain(h.features @ h.kernel + h.bias, labels))
  )(head)
  for fn in (lambda h: fused(h, labels), in_parts):
    got, got_grad = jax.jit(jax.value_and_grad(fn))(head)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grad, want_grad):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_fused_head_refuses_terms_it_cannot_express():
  # The boundary term reads each pixel's probabilities: no head_loss option.
  cfg = configs.get_config(loss="dice+boundary", fused_head=True)
  for make in (losses.make_loss, losses.make_stats_loss):
    with pytest.raises(
      ValueError, match=r"--fused-head: the --loss terms \['boundary'\]"
    ):
      make(cfg)


@pytest.mark.parametrize(
  "ramp, step, want",
  [
    # unset: the whole run, 300 steps; 0.01 until t / 300 passes it
    (None, 0, 0.01),
    (None, 2, 0.01),
    (None, 30, 0.1),
    (None, 150, 0.5),
    (None, 300, 1.0),
    (None, 900, 1.0),
    (100, 25, 0.25),
    (100, 100, 1.0),
    (0, 0, 1.0),  # no ramp
    (0, 7, 1.0),
  ],
)
def test_boundary_weight_ramp(ramp, step, want):
  cfg = configs.get_config(steps=300, boundary_ramp=ramp)
  np.testing.assert_allclose(losses.boundary_weight(cfg, step), want, 1e-6)
  traced = jax.jit(lambda t: losses.boundary_weight(cfg, t))(jnp.uint32(step))
  np.testing.assert_allclose(traced, want, 1e-6)


def test_boundary_ramp_refuses_negative():
  cfg = configs.get_config(boundary_ramp=-5)
  with pytest.raises(ValueError, match="--boundary-ramp -5: a number of"):
    losses.boundary_weight(cfg, 0)


def test_boundary_term_is_kervadec_ramped():
  """'0.5*boundary' at step t: 0.5 r(t) times the reference boundary loss
  (`one_hot2dist` maps of classes 1..C-1, mean of p phi over pixels,
  samples and classes), float64 NumPy."""
  cfg = configs.get_config(loss="0.5*boundary", classes=3, steps=300)
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 9, 11, 3))
  labels = np.zeros((2, 9, 11), np.int64)
  labels[0, 2:6, 3:8], labels[0, 7:, :2], labels[1, 1:4, 1:10] = 1, 2, 2
  p = softmax(logits)
  ref = np.mean(
    [
      (p[..., c] * one_hot2dist(labels == c)).mean((1, 2))
      for c in (1, 2)  # class 2 is absent from sample 1: phi = 0 there
    ]
  )
  assert ref != 0
  loss = losses.make_loss(cfg)
  x, y = jnp.asarray(logits, jnp.float32), jnp.asarray(labels)
  for step, r in ((0, 0.01), (150, 0.5), (600, 1.0)):
    np.testing.assert_allclose(loss(x, y, step), 0.5 * r * ref, rtol=1e-5)


def test_dice_boundary_step_is_finite():
  """One jitted `steps.train_step` with 'dice+boundary': the maps are made
  inside the step (no host callback), the loss is the ramped sum at the
  optimizer's step 0, finite, and the update is finite."""
  cfg = tiny(loss="dice+boundary")
  ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
  batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, 16)
  model = models.make_model(cfg, 1)
  optimizer = steps.make_optimizer(cfg, model)
  loss_fn = losses.make_loss(cfg)
  logits = model(batch["image"])
  want = pel_jax.dice_loss(
    logits, batch["mask"], from_logits=True, batch=True
  ) + 0.01 * pel_jax.boundary_loss(
    logits, batch["mask"], from_logits=True, include_background=False
  )
  loss, cm, gnorm = nnx.jit(
    steps.train_step, static_argnames=("loss_fn", "num_classes")
  )(model, optimizer, batch, loss_fn=loss_fn, num_classes=cfg.classes)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert np.isfinite(gnorm) and gnorm > 0
  assert int(np.asarray(cm).sum()) == batch["mask"].size
  assert int(optimizer.step[...]) == 1
  assert all(np.isfinite(v).all() for v in params_of(model).values())

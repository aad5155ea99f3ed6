"""Tests of examples/unet/losses.py: the --loss spec and its statistics form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.unet import configs
from examples.unet import losses
from examples.unet import models
import pel_jax


def test_parse_loss():
  assert losses.parse_loss("pel+0.5*ce") == ((1.0, "pel"), (0.5, "ce"))
  with pytest.raises(ValueError, match="bad --loss term 'focal'"):
    losses.parse_loss("dice+focal")
  for bad in ("-1*pel+ce", "1e999*dice", "nan*ce", "0*ce", "1.2.3*pel"):
    with pytest.raises(ValueError, match="finite number > 0"):
      losses.parse_loss(bad)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_stats_loss_is_make_loss(batch_dice):
  """Every term as statistics, whole or in two parts, gives `make_loss`."""
  cfg = configs.get_config(
    loss="pel+0.5*dice+jaccard+2*tversky+ce",
    classes=3,
    batch_dice=batch_dice,
    fn_weight=0.6,
  )
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 5, 6, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, (4, 5, 6)))
  want = losses.make_loss(cfg)(logits, labels)
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
    sl.loss(sl.stats(logits, labels))
    if batch_dice
    else sl.loss(jax.tree.map(lambda a: a[None], sl.stats(logits, labels))),
    want,
    rtol=1e-6,
  )
  parts = [sl.stats(logits[i : i + 2], labels[i : i + 2]) for i in (0, 2)]
  combine = (lambda *s: sum(s)) if batch_dice else (lambda *s: jnp.stack(s))
  np.testing.assert_allclose(
    sl.loss(jax.tree.map(combine, *parts)), want, rtol=1e-6
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


def test_fused_head_refuses_terms_it_cannot_express(monkeypatch):
  monkeypatch.setattr(losses, "LOSS_NAMES", (*losses.LOSS_NAMES, "focal"))
  cfg = configs.get_config(loss="dice+focal", fused_head=True)
  with pytest.raises(
    ValueError, match=r"--fused-head: the --loss terms \['focal'\]"
  ):
    losses.make_loss(cfg)

"""Tests of examples/unet/losses.py: the --loss spec and its statistics form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.unet import configs
from examples.unet import losses
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

"""Exact gradient accumulation (pel_jax._accumulate) against full-batch gradients.

First with statistics and losses written in plain `jax.numpy`, independent
of pel_jax's fused core (expected: ordinary autodiff of the whole batch's
loss); then with `pel_jax.region_stats` / `loss_from_stats` (expected: the
gradient of `pel_loss` on the whole batch). float64 throughout.
"""

import doctest

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from pel_jax import _accumulate

_B, _H, _W, _F, _C = 8, 3, 4, 3, 3
_IGNORE = 2  # An id left out of every sum (as ignore_index).


def _batch(seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((_B, _H, _W, _F))
  y = rng.integers(0, _C + 1, (_B, _H, _W)).astype(np.int32)  # _C: no class.
  y[rng.uniform(size=y.shape) < 0.15] = 10 + _IGNORE
  keep = rng.uniform(size=y.shape) < 0.8
  return dict(x=x, y=y, keep=keep)


def _params(seed):
  rng = np.random.default_rng(seed + 100)
  return dict(w=rng.standard_normal((_F, _C)), b=rng.standard_normal(_C))


def _logits(params, mb):
  return mb["x"] @ params["w"] + params["b"]


def _own_stats(params, mb, *, exponent, batch):
  """Per-class sums (and CE sum, pixel count) in plain jnp."""
  logits = _logits(params, mb)
  logp = jax.nn.log_softmax(logits)
  p = jnp.exp(logp)
  keep = mb["keep"] & (mb["y"] != 10 + _IGNORE)
  w = keep[..., None].astype(p.dtype)
  g = jax.nn.one_hot(mb["y"], _C, dtype=p.dtype)
  axes = (0, 1, 2) if batch else (1, 2)
  s = lambda f: jnp.sum(w * f, axis=axes)
  ce = -jnp.sum(w * g * logp)
  return dict(
    tp=s(p * g),
    p=s(p),
    g=s(g),
    n=s(p**exponent * g),
    ce=ce,
    count=jnp.sum(keep),
  )


def _own_loss(stats, *, fp, fn, generalized, ce_weight, per_sample):
  if per_sample:  # Stacked [K, B/K, C] -> [B, C]; the CE terms add up.
    stats = {
      k: (v.reshape(-1, _C) if k in ("tp", "p", "g", "n") else jnp.sum(v))
      for k, v in stats.items()
    }
  tp, n = stats["tp"], stats["n"]
  denom = tp + fp * (stats["p"] - tp) + fn * (stats["g"] - tp)
  if generalized:  # Sudre: 1 / G^2, absent classes at the largest weight.
    g = jax.lax.stop_gradient(stats["g"])
    present = g > 0
    wts = jnp.where(present, 1.0 / jnp.where(present, g, 1.0) ** 2, 0.0)
    wts = jnp.where(present, wts, jnp.max(wts, -1, keepdims=True))
    loss = jnp.mean(
      1.0 - (jnp.sum(wts * n, -1) + 1e-5) / (jnp.sum(wts * denom, -1) + 1e-5)
    )
  else:
    loss = jnp.mean(1.0 - (n + 1e-5) / (denom + 1e-5))
  return loss + ce_weight * stats["ce"] / stats["count"]


_CONFIGS = (  # Together: PEL, Dice, generalized Dice, CE, batch on/off.
  (
    "pel_batch_ce",
    dict(
      exponent=3.0, fp=1.0, fn=1.0, generalized=False, ce_weight=0.7, batch=True
    ),
  ),
  (
    "dice_per_sample",
    dict(
      exponent=1.0,
      fp=0.5,
      fn=0.5,
      generalized=False,
      ce_weight=0.0,
      batch=False,
    ),
  ),
  (
    "generalized_per_sample_ce",
    dict(
      exponent=1.0, fp=0.5, fn=0.5, generalized=True, ce_weight=0.3, batch=False
    ),
  ),
  (
    "generalized_batch",
    dict(
      exponent=1.0, fp=0.5, fn=0.5, generalized=True, ce_weight=0.0, batch=True
    ),
  ),
)


def _split(tree, k):
  return jax.tree.map(
    lambda a: a.reshape(k, a.shape[0] // k, *a.shape[1:]), tree
  )


class AccumulateOwnStatsTest(parameterized.TestCase):
  @parameterized.named_parameters(
    (f"{name}_k{k}", cfg, k) for name, cfg in _CONFIGS for k in (2, 8)
  )
  def test_equals_full_batch_gradient(self, cfg, k):
    cfg = dict(cfg)
    batch, exponent = cfg.pop("batch"), cfg.pop("exponent")
    stats_fn = lambda prm, mb: _own_stats(
      prm, mb, exponent=exponent, batch=batch
    )
    loss_fn = lambda s: _own_loss(s, per_sample=not batch, **cfg)

    def loss_of(prm, data):  # The loss of one batch, in one piece.
      stats = stats_fn(prm, data)
      if not batch:  # As stacked by `stack=True`, with K = 1.
        stats = jax.tree.map(lambda a: a[None], stats)
      return loss_fn(stats)

    with jax.enable_x64(True):
      data, params = _batch(k), _params(k)
      want_loss, want_grads = jax.value_and_grad(loss_of)(params, data)
      mbs = _split(data, k)
      got_loss, got_grads = jax.jit(
        lambda prm, mbs: pel_jax.accumulated_value_and_grad(
          stats_fn, loss_fn, prm, mbs, stack=not batch
        )
      )(params, mbs)
      # The loss is not the mean of the micro-batch losses (else averaging
      # the micro-batch gradients would do).
      parts = [
        loss_of(params, jax.tree.map(lambda a, i=i: a[i], mbs))
        for i in range(k)
      ]
    self.assertEqual(got_loss.dtype, jnp.float64)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
    for name in params:
      np.testing.assert_allclose(
        got_grads[name], want_grads[name], rtol=1e-10, atol=1e-13, err_msg=name
      )
    if k > 1 and batch:
      self.assertGreater(abs(float(np.mean(parts)) - float(want_loss)), 1e-6)

  def test_bad_microbatches(self):
    stats_fn = lambda prm, mb: dict(s=jnp.sum(mb["a"]) * prm)
    with self.assertRaisesRegex(ValueError, "leading"):
      pel_jax.accumulated_value_and_grad(
        stats_fn,
        lambda s: s["s"],
        1.0,
        dict(a=jnp.ones((2, 3)), b=jnp.ones((3, 3))),
      )
    with self.assertRaisesRegex(ValueError, "no arrays"):
      pel_jax.accumulated_value_and_grad(stats_fn, lambda s: s["s"], 1.0, {})

  def test_integer_params_leaf_named(self):
    # A step counter among the params: JAX's float0 error deep in the scan
    # named neither the argument nor the leaf.
    params = dict(w=jnp.ones(3), step=jnp.array(7, jnp.int32))
    stats_fn = lambda prm, mb: dict(s=jnp.sum(mb * prm["w"]))
    with self.assertRaisesRegex(
      TypeError, r"`params\['step'\]` has dtype int32 and shape \(\)"
    ):
      pel_jax.accumulated_value_and_grad(
        stats_fn, lambda s: s["s"], params, jnp.ones((2, 3))
      )

  def test_docstring_example(self):
    result = doctest.testmod(_accumulate, optionflags=doctest.ELLIPSIS)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)


_REGION_CONFIGS = (
  ("pel_batch", dict(exponent=3.0, batch=True), 0.0),
  ("pel_per_sample_ce", dict(exponent=3.0), 0.5),
  (
    "dice_batch_ce",
    dict(exponent=1.0, fp_weight=0.5, fn_weight=0.5, batch=True),
    0.5,
  ),
  ("dice_per_sample", dict(exponent=1.0, fp_weight=0.5, fn_weight=0.5), 0.0),
  (
    "generalized_batch",
    dict(
      exponent=1.0,
      fp_weight=0.5,
      fn_weight=0.5,
      generalized="square",
      batch=True,
    ),
    0.0,
  ),
  (
    "generalized_per_sample_ce",
    dict(exponent=1.0, fp_weight=0.5, fn_weight=0.5, generalized="square"),
    0.3,
  ),
  # The cross-entropy fused into the region statistics (ce_weight).
  ("pel_batch_fused_ce", dict(exponent=3.0, batch=True, ce_weight=0.7), 0.0),
  (
    "dice_per_sample_fused_ce",
    dict(exponent=1.0, fp_weight=0.5, fn_weight=0.5, ce_weight=0.7),
    0.0,
  ),
)


class AccumulateRegionStatsTest(parameterized.TestCase):
  """The helper with pel_jax.region_stats / loss_from_stats as the stats."""

  @parameterized.named_parameters(
    (f"{name}_k{k}", opts, ce_weight, k)
    for name, opts, ce_weight in _REGION_CONFIGS
    for k in (1, 2, 4, 8)
  )
  def test_equals_full_batch_pel_loss_gradient(self, opts, ce_weight, k):
    opts = dict(opts, from_logits=True, ignore_index=10 + _IGNORE)
    batch = opts.get("batch", False)

    def ce_terms(prm, mb):  # A plain pixel sum: more statistics.
      keep = mb["keep"] & (mb["y"] != 10 + _IGNORE)
      logp = jax.nn.log_softmax(_logits(prm, mb))
      g = jax.nn.one_hot(mb["y"], _C, dtype=logp.dtype)
      return -jnp.sum(keep[..., None] * g * logp), jnp.sum(keep)

    def stats_fn(prm, mb):
      region = pel_jax.region_stats(
        _logits(prm, mb), mb["y"], where=mb["keep"], **opts
      )
      return region, ce_terms(prm, mb)

    def loss_fn(stats):
      region, (ce_sum, count) = stats
      if not batch:  # Stacked [K, B/K, C] -> [B, C]; the CE terms add up.
        region = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), region)
        ce_sum, count = jnp.sum(ce_sum), jnp.sum(count)
      return (
        pel_jax.loss_from_stats(region, **opts) + ce_weight * ce_sum / count
      )

    def full_loss(prm, data):
      ce_sum, count = ce_terms(prm, data)
      return (
        pel_jax.pel_loss(
          _logits(prm, data), data["y"], where=data["keep"], **opts
        )
        + ce_weight * ce_sum / count
      )

    with jax.enable_x64(True):
      data, params = _batch(k), _params(k)
      want_loss, want_grads = jax.value_and_grad(full_loss)(params, data)
      got_loss, got_grads = jax.jit(
        lambda prm, mbs: pel_jax.accumulated_value_and_grad(
          stats_fn, loss_fn, prm, mbs, stack=not batch
        )
      )(params, _split(data, k))
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
    for name in params:
      np.testing.assert_allclose(
        got_grads[name], want_grads[name], rtol=1e-10, atol=1e-13, err_msg=name
      )


class AccumulateDataParallelTest(parameterized.TestCase):
  """Accumulation inside shard_map on 8 devices, batch statistics global."""

  @parameterized.parameters(1, 2)
  def test_equals_full_batch_gradient(self, k):
    opts = dict(
      exponent=3.0, from_logits=True, batch=True, ignore_index=10 + _IGNORE
    )
    mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    spec = jax.sharding.PartitionSpec

    def stats_fn(prm, mb):  # Sums psum-ed over the devices.
      return pel_jax.region_stats(
        _logits(prm, mb), mb["y"], where=mb["keep"], axis_name="d", **opts
      )

    loss_fn = lambda s: pel_jax.loss_from_stats(s, **opts)

    def local_step(prm, data):  # This device's 1 sample per micro-batch.
      mbs = _split(data, k)
      # `prm` is replicated (unvarying over "d"): shard_map's autodiff
      # already sums its cotangent over the devices, so no psum here.
      return pel_jax.accumulated_value_and_grad(stats_fn, loss_fn, prm, mbs)

    with jax.enable_x64(True):
      data = _batch(k + 10)
      data = jax.tree.map(lambda a: np.concatenate([a, a[::-1]]), data)
      params = _params(k)
      want_loss, want_grads = jax.value_and_grad(
        lambda prm: pel_jax.pel_loss(
          _logits(prm, data), data["y"], where=data["keep"], **opts
        )
      )(params)
      step = jax.jit(
        jax.shard_map(
          local_step,
          mesh=mesh,
          in_specs=(spec(), spec("d")),
          out_specs=(spec(), spec()),
        )
      )
      sharded = jax.device_put(
        data, jax.sharding.NamedSharding(mesh, spec("d"))
      )
      loss, grads = step(params, sharded)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    for name in params:
      np.testing.assert_allclose(
        grads[name], want_grads[name], rtol=1e-10, atol=1e-13, err_msg=name
      )

  def test_pmap_sums_the_shard_gradients(self):
    opts = dict(
      exponent=1.0,
      fp_weight=0.5,
      fn_weight=0.5,
      from_logits=True,
      batch=True,
      generalized="square",
    )
    stats_fn = lambda prm, mb: pel_jax.region_stats(
      _logits(prm, mb), mb["y"], where=mb["keep"], axis_name="d", **opts
    )
    loss_fn = lambda s: pel_jax.loss_from_stats(s, **opts)

    def local_step(prm, data):  # pmap: every device's own params copy.
      loss, grads = pel_jax.accumulated_value_and_grad(
        stats_fn, loss_fn, prm, _split(data, 2)
      )
      return loss, jax.tree.map(lambda g: jax.lax.psum(g, "d"), grads)

    with jax.enable_x64(True):
      data = jax.tree.map(lambda a: np.concatenate([a, a[::-1]]), _batch(3))
      params = _params(3)
      want_loss, want_grads = jax.value_and_grad(
        lambda prm: pel_jax.pel_loss(
          _logits(prm, data), data["y"], where=data["keep"], **opts
        )
      )(params)
      loss, grads = jax.pmap(local_step, axis_name="d", in_axes=(None, 0))(
        params, jax.tree.map(lambda a: a.reshape(8, 2, *a.shape[1:]), data)
      )
    np.testing.assert_allclose(loss, np.full(8, want_loss), rtol=1e-12)
    for name in params:
      np.testing.assert_allclose(
        grads[name],
        np.broadcast_to(want_grads[name], grads[name].shape),
        rtol=1e-10,
        atol=1e-13,
      )


if __name__ == "__main__":
  absltest.main()

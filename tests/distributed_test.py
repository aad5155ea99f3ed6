"""Data parallel over 8 simulated CPU devices: pmap, shard_map, sharded jit.

Every device must return the global (one-device) loss, and its gradient must
be its slice of the one-device gradient over the whole batch (no N factor).
"""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

import pel_jax
from tests import reference

_N = 8
_SHAPE = (_N, 4, 3, 3)  # Global batch of 8: one sample per device.

_SETTINGS = (
  ("per_sample_mean", dict(batch=False, reduction="mean")),
  ("per_sample_sum", dict(batch=False, reduction="sum")),
  ("batch_mean", dict(batch=True, reduction="mean")),
  ("batch_sum", dict(batch=True, reduction="sum")),
)


def _data(seed=0):
  rng = np.random.default_rng(seed)
  p = reference.make_predictions(rng, _SHAPE, "softmax")
  t = reference.make_targets(rng, _SHAPE, "int")
  m = reference.make_mask(rng, _SHAPE, 0.8)
  return p, t, m


def _common(settings):
  return dict(
    from_logits=True,
    exponent=2.0,
    ignore_index=2,
    class_weights=np.array([1.0, 2.0, 0.5], np.float32),
    **settings,
  )


def _one_device(p, t, m, kw):
  f = lambda x: pel_jax.pel_loss(x, t, where=m, **kw)
  loss, grad = jax.jit(jax.value_and_grad(f))(p)
  # Anchor the one-device result to the oracle.
  np.testing.assert_allclose(
    loss, reference.pel_numpy(p, t, where=m, **kw), atol=2e-5, rtol=2e-5
  )
  return loss, grad


def _local(kw):
  return lambda x, y, m: pel_jax.pel_loss(x, y, where=m, axis_name="d", **kw)


def _mesh(explicit=False):
  kind = (
    jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto
  )
  return jax.make_mesh((_N,), ("d",), axis_types=(kind,))


def _shard(mesh, *arrays):
  return tuple(jax.device_put(a, NamedSharding(mesh, P("d"))) for a in arrays)


_MESH_SETTINGS = tuple(
  (f"{name}_{mesh}", settings, mesh == "explicit")
  for name, settings in _SETTINGS
  for mesh in ("auto", "explicit")
)


class DataParallelTest(parameterized.TestCase):
  @parameterized.named_parameters(*_SETTINGS)
  def test_pmap(self, settings):
    p, t, m = _data()
    kw = _common(settings)
    want_loss, want_grad = _one_device(p, t, m, kw)
    split = lambda a: a.reshape((_N, 1) + a.shape[1:])
    loss, grad = jax.pmap(jax.value_and_grad(_local(kw)), axis_name="d")(
      split(p), split(t), split(m)
    )
    chex.assert_shape(loss, (_N,))
    chex.assert_trees_all_close(
      loss, jnp.full((_N,), want_loss), rtol=1e-6, atol=1e-7
    )
    chex.assert_trees_all_close(
      grad.reshape(_SHAPE), want_grad, rtol=1e-5, atol=2e-7
    )

  @parameterized.named_parameters(*_MESH_SETTINGS)
  def test_shard_map(self, settings, explicit):
    p, t, m = _data()
    kw = _common(settings)
    want_loss, want_grad = _one_device(p, t, m, kw)
    mesh = _mesh(explicit)
    p, t, m = _shard(mesh, p, t, m)
    specs = (P("d"), P("d"), P("d"))
    # Gradient taken per shard inside shard_map.
    inner = jax.jit(
      jax.shard_map(
        jax.value_and_grad(_local(kw)),
        mesh=mesh,
        in_specs=specs,
        out_specs=(P(), P("d")),
      )
    )
    loss, grad = inner(p, t, m)
    chex.assert_trees_all_close(loss, want_loss, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-5, atol=2e-7)
    # Gradient of the shard_map-ed (replicated) loss from outside.
    sharded_loss = jax.shard_map(
      _local(kw), mesh=mesh, in_specs=specs, out_specs=P()
    )
    loss, grad = jax.jit(jax.value_and_grad(sharded_loss))(p, t, m)
    chex.assert_trees_all_close(loss, want_loss, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-5, atol=2e-7)

  @parameterized.named_parameters(*_SETTINGS)
  def test_shard_map_unchecked_gradient_inside(self, settings):
    # check_vma=False (as pmap): JAX tracks no varying axes, and the gradient
    # taken inside the mapped function is each device's slice, as in pmap.
    p, t, m = _data()
    kw = _common(settings)
    want_loss, want_grad = _one_device(p, t, m, kw)
    mesh = _mesh()
    inner = jax.jit(
      jax.shard_map(
        jax.value_and_grad(_local(kw)),
        mesh=mesh,
        in_specs=(P("d"),) * 3,
        out_specs=(P(), P("d")),
        check_vma=False,
      )
    )
    loss, grad = inner(*_shard(mesh, p, t, m))
    chex.assert_trees_all_close(loss, want_loss, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-5, atol=2e-7)

  @parameterized.named_parameters(*_MESH_SETTINGS)
  def test_jit_named_sharding(self, settings, explicit):
    p, t, m = _data()
    kw = _common(settings)
    want_loss, want_grad = _one_device(p, t, m, kw)
    ps, ts, ms = _shard(_mesh(explicit), p, t, m)
    f = lambda x, y, w: pel_jax.pel_loss(x, y, where=w, **kw)
    loss, grad = jax.jit(jax.value_and_grad(f))(ps, ts, ms)
    chex.assert_trees_all_close(loss, want_loss, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-5, atol=2e-7)

  @parameterized.named_parameters(*_SETTINGS)
  def test_vmap_axis_name(self, settings):
    p, t, m = _data()
    kw = _common(settings)
    want_loss, want_grad = _one_device(p, t, m, kw)
    split = lambda a: a.reshape((_N, 1) + a.shape[1:])
    loss, grad = jax.jit(
      jax.vmap(jax.value_and_grad(_local(kw)), axis_name="d")
    )(split(p), split(t), split(m))
    chex.assert_trees_all_close(
      loss, jnp.full((_N,), want_loss), rtol=1e-6, atol=1e-7
    )
    chex.assert_trees_all_close(
      grad.reshape(_SHAPE), want_grad, rtol=1e-5, atol=2e-7
    )

  @parameterized.parameters(False, True)
  def test_reduction_none(self, batch):
    # batch=False: the local [B_local, C] rows; batch=True: the global [C].
    p, t, m = _data(1)
    kw = _common(dict(batch=batch, reduction="none"))
    want = reference.pel_numpy(p, t, where=m, **kw)
    mesh = _mesh()
    f = jax.shard_map(
      _local(kw),
      mesh=mesh,
      in_specs=(P("d"),) * 3,
      out_specs=P() if batch else P("d"),
    )
    got = jax.jit(f)(*_shard(mesh, p, t, m))
    chex.assert_shape(got, want.shape)
    chex.assert_trees_all_close(got, want, atol=2e-5, rtol=2e-5)

  def test_pmap_two_samples_per_device_sum_of_grads(self):
    # 4 devices x 2 samples; summing per-device parameter gradients gives the
    # one-device gradient: here the "parameter" is a shared logit offset.
    p, t, m = _data(2)
    kw = _common(dict(batch=False, reduction="mean"))
    offset = jnp.zeros((3,), jnp.float32)
    one = jax.jit(
      jax.grad(lambda o: pel_jax.pel_loss(p + o, t, where=m, **kw))
    )(offset)
    split = lambda a: a.reshape((4, 2) + a.shape[1:])
    per_device = jax.pmap(
      jax.grad(
        lambda o, x, y, w: pel_jax.pel_loss(
          x + o, y, where=w, axis_name="d", **kw
        )
      ),
      axis_name="d",
      in_axes=(None, 0, 0, 0),
      devices=jax.devices()[:4],
    )(offset, split(p), split(t), split(m))
    chex.assert_trees_all_close(
      jnp.sum(per_device, 0), one, rtol=1e-5, atol=2e-7
    )


class GlobalSumTest(absltest.TestCase):
  """`global_sum`: psum value, but the one-device gradient slice (1/N here)."""

  def test_global_mean_pmap(self):
    x = jnp.arange(1.0, _N + 1.0)
    mean = lambda v: pel_jax.global_sum(v, "d") / _N
    value, grad = jax.pmap(jax.value_and_grad(mean), axis_name="d")(x)
    # d mean(x) / d x_i = 1/N on one device; plain psum would give 1 (N-fold).
    np.testing.assert_allclose(
      value, np.full(_N, np.mean(np.arange(1, _N + 1)))
    )
    np.testing.assert_allclose(grad, np.full(_N, 1.0 / _N))

  def test_global_mean_shard_map(self):
    mesh = _mesh(False)
    x = jax.device_put(jnp.arange(1.0, _N + 1.0), NamedSharding(mesh, P("d")))
    mean = jax.shard_map(
      lambda v: pel_jax.global_sum(v.sum(), "d") / _N,
      mesh=mesh,
      in_specs=P("d"),
      out_specs=P(),
    )
    value, grad = jax.jit(jax.value_and_grad(mean))(x)
    np.testing.assert_allclose(value, np.mean(np.arange(1, _N + 1)))
    np.testing.assert_allclose(grad, np.full(_N, 1.0 / _N))

  def test_global_mean_shard_map_both_modes_inside(self):
    mesh = _mesh(False)
    x = jax.device_put(jnp.arange(1.0, _N + 1.0), NamedSharding(mesh, P("d")))
    for check_vma in (True, False):
      grad = jax.jit(
        jax.shard_map(
          jax.grad(lambda v: pel_jax.global_sum(v.sum(), "d") / _N),
          mesh=mesh,
          in_specs=P("d"),
          out_specs=P("d"),
          check_vma=check_vma,
        )
      )(x)
      np.testing.assert_allclose(grad, np.full(_N, 1.0 / _N))


if __name__ == "__main__":
  absltest.main()

"""`region_stats` and `loss_from_stats`: identity with `pel_loss`, additivity,
transforms and data parallelism (issue 11, library part)."""

from __future__ import annotations

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

import pel_jax
from tests import family_test
from tests import reference
from tests import reference_family

# The family options that change the statistics or the ratio.
_FAMILY = (
  {},
  dict(generalized="square"),
  dict(average="micro"),
  dict(squared=True, fp_weight=0.5, fn_weight=0.5),
  dict(soft_labels=True, exponent=2.0),
  dict(focal_gamma=1.5),
  dict(log_loss=True, smooth_nr=0.1, smooth_dr=0.1),
  dict(absent_classes="exclude"),
  dict(absent_classes="exclude_per_sample"),
  dict(ce_weight=0.5),
)
_INPUTS = family_test._INPUTS


def _combinations():
  """Every family option x batch x reduction x include_background."""
  for i, (family, batch, reduction, background) in enumerate(
    itertools.product(
      _FAMILY, (False, True), ("mean", "sum", "none"), (True, False)
    )
  ):
    inputs = _INPUTS[i % len(_INPUTS)]
    if "ce_weight" in family:
      if reduction == "none":
        continue  # Refused: see family_test.
      inputs = _INPUTS[1 + i % 3]  # Cross-entropy needs logits.
    yield (
      dict(
        family, batch=batch, reduction=reduction, include_background=background
      ),
      inputs,
    )


def _scalar(f):
  return lambda *a: jnp.sum(f(*a) ** 2)


class IdentityTest(family_test.X64TestCase):
  def test_loss_from_stats_equals_pel_loss_for_every_combination(self):
    count = 0
    for options, (pred_kind, target_kind, masked) in _combinations():
      x, t, kw = family_test.make_case(pred_kind, target_kind, masked)
      kw = {**kw, **options}
      with self.subTest(str(kw)):
        want = pel_jax.pel_loss(x, t, **kw)
        got = pel_jax.loss_from_stats(pel_jax.region_stats(x, t, **kw), **kw)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
        # And both equal the independent oracle.
        np.testing.assert_allclose(
          want,
          reference_family.family_numpy(x, t, **kw),
          rtol=1e-10,
          atol=1e-12,
        )
        count += 1
    self.assertEqual(count, len(_FAMILY) * 12 - 4)

  @parameterized.parameters(*range(len(_FAMILY)))
  def test_gradients_equal_pel_loss(self, index):
    options = dict(_FAMILY[index], batch=bool(index % 2))
    x, t, kw = family_test.make_case(*_INPUTS[1 + index % 3])
    kw = {**kw, **options}
    direct = jax.grad(lambda x: pel_jax.pel_loss(x, t, **kw))(x)
    via = jax.grad(
      lambda x: pel_jax.loss_from_stats(pel_jax.region_stats(x, t, **kw), **kw)
    )(x)
    np.testing.assert_allclose(via, direct, rtol=1e-12, atol=1e-15)

  def test_stats_fields_are_the_published_sums(self):
    x, t, kw = family_test.make_case("softmax", "int", True)
    s = pel_jax.region_stats(x, t, **kw)
    p = reference.np_probabilities(x, True, "softmax")
    g, keep = reference.np_targets(t, 3)
    w = (keep & kw["where"])[..., None]
    for got, want in (
      (s.tp, p * g),
      (s.sum_p, p),
      (s.sum_g, g),
      (s.numer, p**3 * g),
    ):
      np.testing.assert_allclose(got, np.sum(w * want, (1, 2)), rtol=1e-12)
    self.assertIsNone(s.sum_p2)
    sq = pel_jax.region_stats(x, t, squared=True, batch=True, **kw)
    np.testing.assert_allclose(
      sq.sum_p2, np.sum(w * p * p, (0, 1, 2)), rtol=1e-12
    )
    self.assertIsNone(sq.sum_p)


class AdditivityTest(family_test.X64TestCase):
  """Stats of parts, added leaf by leaf, are the stats of the whole."""

  @parameterized.parameters(
    ({},),
    (dict(squared=True),),
    (dict(soft_labels=True),),
    (dict(generalized="simple"),),
  )
  def test_micro_batches_give_the_batch_loss_and_gradient(self, options):
    x, t, kw = family_test.make_case(
      "softmax", "soft", True, shape=(8, 3, 2, 3)
    )
    kw = {**kw, **options, "batch": True}
    where = kw.pop("where")
    whole = lambda x: pel_jax.pel_loss(x, t, where=where, **kw)
    want_loss, want_grad = jax.value_and_grad(whole)(x)
    for k in (1, 2, 4, 8) if not options else (4,):
      parts = [slice(i * 8 // k, (i + 1) * 8 // k) for i in range(k)]
      stats_fn = lambda x, s: pel_jax.region_stats(
        x, t[s], where=where[s], **kw
      )
      # Pass 1: the summed stats; d loss / d stats once.
      pulls = [jax.vjp(lambda x, s=s: stats_fn(x, s), x[s]) for s in parts]
      total = jax.tree.map(lambda *a: sum(a), *[st for st, _ in pulls])
      loss, d_stats = jax.value_and_grad(
        lambda st: pel_jax.loss_from_stats(st, **kw)
      )(total)
      # Pass 2: one VJP per micro-batch with that cotangent.
      grad = jnp.concatenate([pull(d_stats)[0] for _, pull in pulls])
      np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
      np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-14)

  def test_spatial_tiles_give_the_per_sample_stats(self):
    x, t, kw = family_test.make_case(
      "sigmoid", "soft", True, shape=(2, 6, 4, 3)
    )
    where = kw.pop("where")
    whole = pel_jax.region_stats(x, t, where=where, **kw)
    tiles = [
      pel_jax.region_stats(x[:, r], t[:, r], where=where[:, r], **kw)
      for r in (slice(0, 2), slice(2, 5), slice(5, 6))
    ]
    summed = jax.tree.map(lambda *a: sum(a), *tiles)
    chex.assert_trees_all_close(summed, whole, rtol=1e-12)
    np.testing.assert_allclose(
      pel_jax.loss_from_stats(summed, **kw),
      pel_jax.pel_loss(x, t, where=where, **kw),
      rtol=1e-12,
    )


class TransformsTest(parameterized.TestCase):
  def test_jit_vmap_scan(self):
    x, t, kw = family_test.make_case(
      "softmax", "int", False, shape=(4, 3, 2, 3), dtype=np.float32
    )
    kw = {**kw, "squared": True, "batch": True}
    eager = pel_jax.region_stats(x, t, **kw)
    jitted = jax.jit(lambda x: pel_jax.region_stats(x, t, **kw))(x)
    chex.assert_trees_all_close(jitted, eager, rtol=1e-6)
    # vmap over micro-batches of 2, then summed: the batch stats.
    xs, ts = x.reshape(2, 2, 3, 2, 3), t.reshape(2, 2, 3, 2)
    mapped = jax.vmap(lambda x, t: pel_jax.region_stats(x, t, **kw))(xs, ts)
    chex.assert_trees_all_close(
      jax.tree.map(lambda s: s.sum(0), mapped), eager, rtol=1e-6
    )

    # scan accumulating the stats, and its gradient through the loss.
    def accumulate(x):
      def step(acc, xt):
        s = pel_jax.region_stats(*xt, **kw)
        return jax.tree.map(jnp.add, acc, s), None

      zero = jax.tree.map(jnp.zeros_like, eager)
      total, _ = jax.lax.scan(step, zero, (x.reshape(xs.shape), ts))
      return pel_jax.loss_from_stats(total, **kw)

    loss, grad = jax.jit(jax.value_and_grad(accumulate))(x)
    want_loss, want_grad = jax.value_and_grad(
      lambda x: pel_jax.pel_loss(x, t, **kw)
    )(x)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)


_N = 8
_DP_OPTIONS = (
  ("batch_generalized", dict(batch=True, generalized="square")),
  ("batch_soft", dict(batch=True, soft_labels=True)),
  (
    "batch_focal_exclude",
    dict(batch=True, focal_gamma=2.0, absent_classes="exclude"),
  ),
  (
    "sample_generalized_squared",
    dict(batch=False, generalized="simple", squared=True),
  ),
  ("sample_exclude", dict(batch=False, absent_classes="exclude")),
  (
    "sample_exclude_per_sample",
    dict(batch=False, absent_classes="exclude_per_sample"),
  ),
  (
    "batch_exclude_per_sample_sum",
    dict(batch=True, absent_classes="exclude_per_sample", reduction="sum"),
  ),
  ("sample_log_micro", dict(batch=False, log_loss=True, average="micro")),
  ("sample_ce", dict(batch=False, ce_weight=0.5)),
  ("batch_ce_sum", dict(batch=True, ce_weight=0.5, reduction="sum")),
  (
    "sample_ce_smoothing",
    dict(batch=False, ce_weight=0.5, ce_label_smoothing=0.1),
  ),
)


class DataParallelTest(parameterized.TestCase):
  """8 simulated devices, one sample each: the global loss and the slice of
  the one-device gradient (the library's convention, as for `pel_loss`)."""

  def _data(self):
    rng = np.random.default_rng(0)
    shape = (_N, 4, 3, 3)
    x = reference.make_predictions(rng, shape, "softmax")
    t = reference.make_targets(rng, shape, "soft")
    t[:3, ..., 2] = 0  # Absent class in some samples.
    m = reference.make_mask(rng, shape, 0.8)
    return x, t, m

  @parameterized.named_parameters(*_DP_OPTIONS)
  def test_shard_map_pmap_vmap_and_sharded_jit(self, options):
    x, t, m = self._data()
    kw = dict(from_logits=True, **options)
    f = lambda x, t, m, **a: pel_jax.pel_loss(x, t, where=m, **kw, **a)
    want_loss, want_grad = jax.jit(jax.value_and_grad(f))(x, t, m)
    np.testing.assert_allclose(
      want_loss, reference_family.family_numpy(x, t, where=m, **kw), rtol=2e-5
    )
    mesh = jax.make_mesh((_N,), ("d",))
    spec = P("d")
    args = tuple(
      jax.device_put(a, NamedSharding(mesh, spec)) for a in (x, t, m)
    )
    inner = jax.jit(
      jax.shard_map(
        jax.value_and_grad(lambda x, t, m: f(x, t, m, axis_name="d")),
        mesh=mesh,
        in_specs=(spec,) * 3,
        out_specs=(P(), spec),
      )
    )
    loss, grad = inner(*args)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=2e-7)

    # jit with the batch sharded over the mesh, no axis_name: the compiler
    # makes the sums global.
    loss, grad = jax.jit(jax.value_and_grad(f))(*args)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=2e-7)

    # region_stats + loss_from_stats per sample: the same numbers.
    def per_device(x, t, m):
      return jax.value_and_grad(
        lambda x: pel_jax.loss_from_stats(
          pel_jax.region_stats(x, t, where=m, axis_name="d", **kw),
          axis_name="d",
          **kw,
        )
      )(x)

    per_sample = tuple(a.reshape((_N, 1) + a.shape[1:]) for a in (x, t, m))
    # The same under pmap and under vmap with a named axis.
    for transform in (jax.pmap, jax.vmap):
      loss, grad = transform(per_device, axis_name="d")(*per_sample)
      np.testing.assert_allclose(loss, np.full(_N, want_loss), rtol=1e-6)
      np.testing.assert_allclose(
        grad.reshape(x.shape), want_grad, rtol=1e-5, atol=2e-7
      )


class SpatialShardTest(family_test.X64TestCase):
  """An image split over 8 devices along a spatial axis: per-sample stats
  summed with `global_sum` give the whole image's loss and, per device, the
  slice of its gradient."""

  def test_shard_map_over_height(self):
    rng = np.random.default_rng(3)
    shape = (2, 16, 3, 3)  # Height 16 split into 8 rows of 2.
    x = reference.make_predictions(rng, shape, "softmax", np.float64)
    t = reference.make_targets(rng, shape, "int")
    kw = dict(from_logits=True, generalized="square", ce_weight=0.5)
    want_loss, want_grad = jax.value_and_grad(
      lambda x: pel_jax.pel_loss(x, t, **kw)
    )(x)

    def local(x, t):
      stats = pel_jax.region_stats(x, t, **kw)
      # Each leaf is a sum over pixels: add the devices' parts with the
      # library's gradient convention (under pmap, lax.psum's transpose
      # would make the gradient N-fold; global_sum is right in every mode).
      stats = jax.tree.map(lambda s: pel_jax.global_sum(s, "h"), stats)
      return pel_jax.loss_from_stats(stats, **kw)

    mesh = jax.make_mesh((_N,), ("h",))
    spec = P(None, "h")
    loss, grad = jax.jit(
      jax.shard_map(
        jax.value_and_grad(local),
        mesh=mesh,
        in_specs=(spec, spec),
        out_specs=(P(), spec),
      )
    )(*(jax.device_put(a, NamedSharding(mesh, spec)) for a in (x, t)))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-15)
    # pmap: device d holds rows 2d, 2d + 1 of every sample.
    split = lambda a: np.moveaxis(a.reshape((2, _N, 2) + a.shape[2:]), 1, 0)
    loss, grad = jax.pmap(jax.value_and_grad(local), axis_name="h")(
      split(x), split(t)
    )
    np.testing.assert_allclose(loss, np.full(_N, want_loss), rtol=1e-12)
    np.testing.assert_allclose(
      np.moveaxis(np.asarray(grad), 0, 1).reshape(shape),
      want_grad,
      rtol=1e-10,
      atol=1e-15,
    )


class PrecisionTest(parameterized.TestCase):
  @parameterized.parameters(jnp.bfloat16, jnp.float16)
  def test_half_precision_accumulates_in_float32(self, dtype):
    x, t, kw = family_test.make_case(
      "softmax", "soft", True, shape=(2, 16, 16, 3)
    )
    for options in _FAMILY:
      kw_all = {**kw, **options}
      xh, th = jnp.asarray(x, dtype), jnp.asarray(t, dtype)
      with self.subTest(str(options)):
        stats = pel_jax.region_stats(xh, th, **kw_all)
        self.assertEqual(stats.tp.dtype, jnp.float32)
        loss, grad = jax.value_and_grad(
          lambda x: pel_jax.pel_loss(x, th, **kw_all)
        )(xh)
        self.assertEqual(grad.dtype, dtype)
        want = reference_family.family_numpy(
          np.asarray(xh, np.float64), np.asarray(th, np.float64), **kw_all
        )
        np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)

  def test_extreme_logits_finite(self):
    rng = np.random.default_rng(0)
    shape = (2, 4, 3, 3)
    x = rng.choice([-1e4, -30.0, 0.0, 30.0, 1e4], shape).astype(np.float32)
    t_soft = rng.choice([0.0, 0.3, 1.0], shape).astype(np.float32)
    t_int = rng.integers(0, 3, shape[:-1]).astype(np.int32)
    for i, (options, t) in enumerate(
      itertools.product(
        _FAMILY + (dict(soft_labels=True, exponent=0.5),), (t_soft, t_int)
      )
    ):
      act = ("softmax", "sigmoid")[i // 2 % 2]
      kw = dict(from_logits=True, activation=act, **options)
      with self.subTest(f"{options} {act} {t.dtype}"):
        loss, grad = jax.value_and_grad(lambda x: pel_jax.pel_loss(x, t, **kw))(
          x
        )
        self.assertTrue(np.isfinite(loss))
        self.assertTrue(np.all(np.isfinite(grad)))

  def test_all_classes_absent_excluded_is_zero_with_zero_gradient(self):
    x = np.full((1, 3, 2, 2), 0.5, np.float32)
    t = np.zeros((1, 3, 2, 2), np.float32)
    loss, grad = jax.value_and_grad(
      lambda x: pel_jax.pel_loss(x, t, absent_classes="exclude")
    )(x)
    self.assertEqual(float(loss), 0.0)
    np.testing.assert_array_equal(grad, 0.0)


class ValidationTest(parameterized.TestCase):
  def test_bad_stats_and_options_raise(self):
    x, t, _ = family_test.make_case("probs", "onehot", False, dtype=np.float32)
    stats = pel_jax.region_stats(x, t)
    with self.assertRaisesRegex(TypeError, "stats"):
      pel_jax.loss_from_stats(tuple(stats))
    with self.assertRaisesRegex(ValueError, r"batch=True.*\(2, 3\)"):
      pel_jax.loss_from_stats(stats, batch=True)
    with self.assertRaisesRegex(ValueError, "squared"):
      pel_jax.loss_from_stats(stats, squared=True)
    with self.assertRaisesRegex(TypeError, "smoth_nr"):
      pel_jax.region_stats(x, t, smoth_nr=1.0)
    with self.assertRaisesRegex(TypeError, "smoth_nr"):
      pel_jax.loss_from_stats(stats, smoth_nr=1.0)
    with self.assertRaisesRegex(ValueError, "class_weights"):
      pel_jax.loss_from_stats(stats, class_weights=(1.0, 2.0))


if __name__ == "__main__":
  absltest.main()

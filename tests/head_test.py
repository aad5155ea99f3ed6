"""head_loss / head_stats: the fused 1×1 head equals the unfused head + loss.

The reference is autodiff of `pel_loss(features @ kernel + bias, ...)`
(itself checked against the NumPy transcriptions in reference*.py), and
`check_grads` on a tiny case.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np

import pel_jax

_D, _C = 3, 4


def _case(
  spatial, targets, dtype=np.float64, batch=2, classes=_C, seed=0, factors=None
):
  """Features, kernel, bias and targets ("ids", "soft" or "multi").

  With `factors`, the targets are at `spatial` times the factors.
  """
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(batch, *spatial, _D))
  w = rng.normal(size=(_D, classes))
  b = rng.normal(size=(classes,))
  pixels = (batch,) + tuple(np.multiply(spatial, factors or 1))
  if targets == "ids":
    t = jnp.asarray(rng.integers(0, classes, pixels), jnp.int32)
  elif targets == "soft":
    t = jnp.asarray(jax.nn.softmax(rng.normal(size=pixels + (classes,))))
  else:
    t = jnp.asarray(rng.random(pixels + (classes,)) > 0.5, dtype)
  return (
    *(jnp.asarray(x, dtype) for x in (f, w, b)),
    t.astype(t.dtype if targets == "ids" else dtype),
  )


def _mask(spatial, batch=2):
  return jnp.asarray(np.random.default_rng(1).random((batch, *spatial)) > 0.3)


def _both(fused, plain, f, w, b, t, soft):
  """Value and gradients of both losses, in one compiled program."""
  argnums = (0, 1, 2, 3) if soft else (0, 1, 2)
  return jax.jit(
    lambda *a: tuple(
      jax.value_and_grad(fn, argnums)(*a) for fn in (fused, plain)
    )
  )(f, w, b, t)


# (name, spatial, targets, chunk_size, options): chunk sizes divide the
# pixel count or not (the last chunk overlaps), or exceed it.
_CASES = (
  (
    "pel_n3_batch_generalized_ignore_index_2d",
    (5, 6),
    "ids",
    7,
    dict(
      exponent=3.0,
      batch=True,
      generalized="square",
      ignore_index=2,
      ce_weight=1.0,
    ),
  ),
  (
    "dice_ce_smoothing_where_3d",
    (3, 4, 5),
    "ids",
    16,
    dict(
      exponent=1.0,
      fp_weight=0.5,
      fn_weight=0.5,
      ce_weight=0.7,
      ce_label_smoothing=0.1,
      where=_mask((3, 4, 5)),
    ),
  ),
  ("soft_targets_3d", (2, 3, 5), "soft", 4, dict(soft_labels=True)),
  (
    "sigmoid_multi_hot_2d",
    (5, 6),
    "multi",
    64,
    dict(
      activation="sigmoid",
      ce_weight=0.5,
      ce_label_smoothing=0.2,
      where=_mask((5, 6)),
    ),
  ),
  (
    "squared_focal_weights_3d",
    (3, 4, 5),
    "ids",
    10,
    dict(
      squared=True,
      focal_gamma=2.0,
      absent_classes="exclude",
      class_weights=[0.5, 1.0, 2.0, 1.5],
      include_background=False,
      reduction="none",
    ),
  ),
  (
    "upsample_where_ce_3d",
    (3, 2, 2),
    "ids",
    2,
    dict(upsample=(2, 1, 3), where=_mask((6, 2, 6)), ce_weight=1.0),
  ),
)


class HeadLossTest(parameterized.TestCase):
  @parameterized.named_parameters(*_CASES)
  def test_equals_unfused_float64(self, spatial, targets, chunk, options):
    options = dict(options)
    factors = options.pop("upsample", None)
    with jax.enable_x64(True):
      f, w, b, t = _case(spatial, targets, factors=factors)
      soft = targets != "ids"
      reduce = jnp.sum if options.get("reduction") == "none" else (lambda x: x)

      def fused(f, w, b, t):
        return reduce(
          pel_jax.head_loss(
            f, w, b, t, chunk_size=chunk, upsample=factors, **options
          )
        )

      def plain(f, w, b, t):
        # Nearest upsampling of the logits to the targets' resolution.
        logits = jax.image.resize(
          f @ w + b, t.shape[: f.ndim - 1] + w.shape[-1:], "nearest"
        )
        return reduce(pel_jax.pel_loss(logits, t, from_logits=True, **options))

      (value, grads), (want, want_grads) = _both(fused, plain, f, w, b, t, soft)
      self.assertEqual(value.dtype, jnp.float64)
      np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12)
      for got, ref in zip(grads, want_grads):
        self.assertEqual(got.dtype, ref.dtype)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)

  def test_float32_to_rounding_and_stats(self):
    f, w, b, t = _case((4, 5, 6), "ids", np.float32)
    options = dict(ce_weight=1.0, batch=True)
    (value, grads), (want, want_grads) = _both(
      lambda *a: pel_jax.head_loss(*a, **options),
      lambda f, w, b, t: pel_jax.pel_loss(
        f @ w + b, t, from_logits=True, **options
      ),
      f,
      w,
      b,
      t,
      False,
    )
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for got, ref in zip(grads, want_grads):
      self.assertEqual(got.dtype, jnp.float32)
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    stats, want_stats = jax.jit(
      lambda f, w, b, t: (
        pel_jax.head_stats(f, w, b, t, chunk_size=24, **options),
        pel_jax.region_stats(f @ w + b, t, from_logits=True, **options),
      )
    )(f, w, b, t)
    jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5),
      stats,
      want_stats,
    )

  def test_check_grads(self):
    with jax.enable_x64(True):
      f, w, b, t = _case((3, 2), "soft", batch=1, classes=3)
      check_grads(
        jax.jit(
          lambda f, w, b, t: pel_jax.head_loss(
            f, w, b, t, chunk_size=4, ce_weight=0.5
          )
        ),
        (f, w, b, t),
        order=1,
        modes=("rev",),
      )

  def test_axis_name_batch(self):
    # vmap over the batch with a named axis: every sample's gradient is
    # the slice of the whole batch's (as `pel_loss` under `axis_name`).
    f, w, b, t = _case((4, 5), "ids", np.float32)
    o = dict(batch=True, axis_name="i", chunk_size=6)

    def per_sample(f, t):
      return jax.grad(lambda f: pel_jax.head_loss(f[None], w, b, t[None], **o))(
        f
      )

    got = jax.jit(jax.vmap(per_sample, axis_name="i"))(f, t)
    want = jax.jit(
      jax.grad(
        lambda f: pel_jax.pel_loss(f @ w + b, t, from_logits=True, batch=True)
      )
    )(f)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)

  def test_bad_inputs_name_the_argument(self):
    f, w, b, t = _case((2, 3), "ids", np.float32)
    bad = (
      ((f, w[:2], b, t), {}, ValueError, "`kernel`"),
      ((f, w, b[:3], t), {}, ValueError, "`bias`"),
      ((f, w, b[None], t), {}, ValueError, "`bias`"),
      ((f[0, 0], w, b, t), {}, ValueError, "`features`"),
      ((f.astype(jnp.int32), w, b, t), {}, TypeError, "`features`"),
      ((f, w, b, t[:, :1]), {}, ValueError, "targets"),
      ((f, w, b, t), dict(from_logits=False), ValueError, "from_logits"),
      ((f, w, b, t), dict(chunk_size=0), ValueError, "chunk_size"),
      ((f, w, b, t), dict(chunk_size=2.0), TypeError, "chunk_size"),
      ((f, w, b, t), dict(where=t), TypeError, "where"),
      ((f, w, b, t), dict(bogus=1), TypeError, "bogus"),
      ((f, w, b, t), dict(upsample=2), ValueError, "upsample"),
      ((f, w, b, t), dict(upsample=(2, 0)), ValueError, "upsample"),
    )
    for args, kwargs, error, name in bad:
      with (
        self.subTest(name=name, kwargs=kwargs),
        self.assertRaisesRegex(error, name),
      ):
        pel_jax.head_loss(*args, **kwargs)


def _scales(full, factors, classes=3, seed=2):
  """One (features, kernel, bias) per scale: `full` // each factor."""
  rng = np.random.default_rng(seed)
  return [
    tuple(
      jnp.asarray(x)
      for x in (
        rng.normal(size=(2, *np.floor_divide(full, r), _D + s)),
        rng.normal(size=(_D + s, classes)),
        rng.normal(size=classes),
      )
    )
    for s, r in enumerate(factors)
  ]


class DeepSupervisionTest(parameterized.TestCase):
  # (name, full spatial, per-scale factors, targets, options): the weights
  # are nnU-Net's 2^-s normalised (4/7, 2/7, 1/7) or given.
  @parameterized.named_parameters(
    (
      "ids_where_2d",
      (8, 12),
      (1, 2, 4),
      "ids",
      dict(batch=True, ce_weight=1.0, where=_mask((8, 12))),
      None,
      (4 / 7, 2 / 7, 1 / 7),
    ),
    (
      "soft_anisotropic_3d",
      (4, 6, 3),
      ((1, 1, 1), (2, 2, 1), (4, 3, 3)),
      "soft",
      dict(exponent=2.0, soft_labels=True),
      (0.5, 0.0, 0.25),
      (0.5, 0.0, 0.25),
    ),
  )
  def test_equals_unfused_heads_float64(
    self, full, factors, targets, options, weights, want_weights
  ):
    """Against the unfused per-scale `pel_loss` sum, the labels downsampled
    by `jax.image.resize(..., "nearest")`, values and gradients."""
    with jax.enable_x64(True):
      heads = _scales(full, factors)
      *_, t = _case(full, targets, classes=3, seed=3)

      def resize(x, spatial):
        # Float through the resize: integer ids round-trip exactly.
        shape = x.shape[:1] + spatial + x.shape[1 + len(spatial) :]
        return jax.image.resize(x.astype(jnp.float64), shape, "nearest")

      def plain(heads):
        total = 0.0
        for (f, w, b), weight in zip(heads, want_weights):
          spatial = f.shape[1:-1]
          o = dict(options)
          if "where" in o:
            o["where"] = resize(o["where"], spatial) > 0.5
          ts = resize(t, spatial).astype(t.dtype)
          total += weight * pel_jax.pel_loss(
            f @ w + b, ts, from_logits=True, **o
          )
        return total

      def fused(heads):
        return pel_jax.deep_supervision_loss(
          heads, t, weights=weights, chunk_size=5, **options
        )

      (value, grads), (want, want_grads) = jax.jit(
        lambda h: tuple(jax.value_and_grad(fn)(h) for fn in (fused, plain))
      )(heads)
      np.testing.assert_allclose(value, want, rtol=1e-10)
      jax.tree.map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12),
        grads,
        want_grads,
      )

  def test_bad_inputs_name_the_argument(self):
    heads = _scales((4, 4), (1, 2))
    t = jnp.zeros((2, 4, 4), jnp.int32)
    bad = (
      (([], t), {}, "`heads`"),
      (([heads[0][:2]], t), {}, "`heads`"),
      (
        ([heads[0], (jnp.zeros((2, 3, 2, 4)), *heads[1][1:])], t),
        {},
        "heads.1",
      ),
      ((heads, t), dict(weights=(1.0,)), "`weights`"),
      ((heads, t), dict(weights=(1.0, -1.0)), "`weights`"),
      ((heads, t), dict(upsample=2), "`upsample`"),
    )
    for args, kwargs, name in bad:
      with (
        self.subTest(name=name, kwargs=kwargs),
        self.assertRaisesRegex(ValueError, name),
      ):
        pel_jax.deep_supervision_loss(*args, **kwargs)


if __name__ == "__main__":
  absltest.main()

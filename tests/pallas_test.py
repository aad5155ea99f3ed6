"""The Pallas region sums and their pullback (interpret mode on the CPU).

The default form on the CPU is the TPU one (pel_jax._pallas_tpu), run with
2 rows per block so that most cases end in a partial block; the Triton form
is checked on a few cases with `form="triton"`. References: the float64 NumPy oracle of tests/reference.py for values, and
plain-autodiff VJPs of a float64 jnp transcription of the four sums for the
backward. Shapes are tiny: Pallas's interpreter runs one block at a time.
"""

import functools
from typing import NamedTuple
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from pel_jax import _core
from pel_jax import _pallas
from pel_jax import _pallas_tpu
from tests import reference

# name, prediction shape, prediction kind, target kind, options. The TPU
# form's view puts the classes in front (3, 5 classes), on the sublanes
# (1, 2) or on the lanes (128).
_CASES = (
  ("probs_onehot_n3", (2, 5, 4, 3), "probs", "onehot", dict(exponent=3.0)),
  (
    "probs_int_n05_mask",
    (2, 5, 4, 3),
    "probs",
    "int",
    dict(exponent=0.5, mask=True),
  ),
  (
    "probs_soft_n1_batch_3d",
    (2, 3, 2, 3, 2),
    "probs",
    "soft",
    dict(exponent=1.0, batch=True),
  ),
  (
    "sigmoid_binary_n3_mask",
    (2, 6, 5, 1),
    "sigmoid",
    "multihot",
    dict(exponent=3.0, activation="sigmoid", mask=True),
  ),
  (
    "sigmoid_multi_soft_n25",
    (2, 4, 3, 2),
    "sigmoid",
    "soft",
    dict(exponent=2.5, activation="sigmoid"),
  ),
  (
    "softmax_int_n3_ignore_batch",
    (2, 5, 4, 5),
    "softmax",
    "int",
    dict(exponent=3.0, activation="softmax", ignore_index=2, batch=True),
  ),
  (
    "softmax_int_n1",
    (2, 5, 4, 3),
    "softmax",
    "int",
    dict(exponent=1.0, activation="softmax"),
  ),
  (
    "softmax_soft_n05_mask",
    (2, 4, 3, 3),
    "softmax",
    "soft",
    dict(exponent=0.5, activation="softmax", mask=True),
  ),
  (
    "softmax_int_128_classes_mask",
    (2, 3, 2, 128),
    "softmax",
    "int",
    dict(exponent=2.0, activation="softmax", mask=True),
  ),
)
# Rows per block of the TPU form's view (odd row counts end in a partial
# block); the Triton form's blocks hold 8 pixels.
_ROWS = 2


def _inputs(shape, pred_kind, target_kind, mask, seed=0):
  rng = np.random.default_rng(seed)
  x = reference.make_predictions(rng, shape, pred_kind)
  t = reference.make_targets(rng, shape, target_kind)
  if target_kind == "int":
    t[0, 0] = shape[-1] + 1  # An out-of-range id matches no class.
    t[-1, -1] = -1
  m = reference.make_mask(rng, shape) if mask else None
  return x, t, m


_SMOOTH = 1e-5  # smooth_nr = smooth_dr of the reference losses.


def _cfg(activation=None, exponent=3.0, batch=False, ignore_index=None):
  return _core.StatsConfig(
    exponent=exponent,
    activation=activation,
    batch=batch,
    ignore_index=ignore_index,
  )


def _sums(xp, p, g, keep, cfg):
  """`(TP, sum p, sum g, N)` of p, g and the pixel mask, with NumPy or jnp."""
  w = keep[..., None].astype(p.dtype)
  axes = tuple(range(0 if cfg.batch else 1, p.ndim - 1))
  terms = (w * p * g, w * p, w * g, w * p**cfg.exponent * g)
  out = tuple(xp.sum(s, axis=axes) for s in terms)
  return tuple(s[None] for s in out) if cfg.batch else out


def _oracle_stats(x, t, m, cfg):
  """float64 sums from the oracle's own p and g."""
  p = reference.np_probabilities(x, cfg.activation is not None, cfg.activation)
  g, keep = reference.np_targets(t, p.shape[-1], cfg.ignore_index)
  return _sums(np, p, g, keep if m is None else keep & m, cfg)


def _jnp_stats(x, t, m, cfg):
  """The four sums in plain jnp (float64 under x64), for autodiff VJPs."""
  if cfg.activation == "sigmoid":
    p = 1.0 / (1.0 + jnp.exp(-x))
  elif cfg.activation == "softmax":
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    p = e / jnp.sum(e, axis=-1, keepdims=True)
  else:
    p = x
  if jnp.issubdtype(t.dtype, jnp.integer):
    g = jnp.stack([t == k for k in range(x.shape[-1])], -1).astype(p.dtype)
    keep = jnp.ones(t.shape, bool)
    if cfg.ignore_index is not None:
      keep = t != cfg.ignore_index
  else:
    g = t
    keep = jnp.ones(t.shape[:-1], bool)
  return _sums(jnp, p, g, keep if m is None else keep & m, cfg)


def _pallas_loss(cfg, x, t, m):
  """PEL from the Pallas sums, with the Pallas pullback as its VJP."""

  @jax.custom_vjp
  def stats(x, t):
    return _pallas.region_stats(cfg, x, t, m, block_rows=_ROWS)

  def fwd(x, t):
    s = stats(x, t)
    return s, (x, t, s)

  def bwd(res, ct):
    x, t, s = res
    d_x, d_t = _pallas.region_stats_bwd(cfg, x, t, m, s, ct, block_rows=_ROWS)
    return d_x, d_t

  stats.defvjp(fwd, bwd)
  tp, sum_p, sum_g, numer = stats(x, t)
  # fp = fn = 1: D = TP + FP + FN = sum p + sum g - TP.
  denom = sum_p + sum_g - tp + _SMOOTH
  return jnp.mean(1.0 - (numer + _SMOOTH) / denom)


class PallasTest(parameterized.TestCase):
  @parameterized.named_parameters(*_CASES)
  def test_stats_match_float64_oracle(self, *case):
    self._check_stats(*case)

  @parameterized.named_parameters(*_CASES)
  def test_pullback_matches_float64_autodiff(self, *case):
    self._check_pullback(*case)

  @parameterized.named_parameters(_CASES[3], _CASES[5])
  def test_triton_form_matches_float64_references(self, *case):
    """The GPU form (classes padded to a power of two, 8-pixel blocks)."""
    self._check_stats(*case, form="triton")
    self._check_pullback(*case, form="triton")

  def _check_stats(self, shape, pk, tk, options, **form):
    options = dict(options)
    x, t, m = _inputs(shape, pk, tk, options.pop("mask", False))
    cfg = _cfg(**options)
    rows = 8 if form else _ROWS
    got = jax.jit(
      functools.partial(_pallas.region_stats, cfg, block_rows=rows, **form)
    )(x, t, m)
    for g, e in zip(got, _oracle_stats(x, t, m, cfg)):
      self.assertEqual(g.dtype, jnp.float32)
      np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=1e-5)

  def _check_pullback(self, shape, pk, tk, options, **form):
    options = dict(options)
    x, t, m = _inputs(shape, pk, tk, options.pop("mask", False))
    cfg = _cfg(**options)
    stats = _oracle_stats(x, t, m, cfg)
    rng = np.random.default_rng(1)
    ct = tuple(rng.standard_normal(s.shape).astype(np.float32) for s in stats)
    rows = 8 if form else _ROWS
    d_x, d_t = jax.jit(
      functools.partial(_pallas.region_stats_bwd, cfg, block_rows=rows, **form)
    )(x, t, m, stats, ct)
    integer = tk == "int"
    with jax.enable_x64(True):
      x64 = jnp.asarray(x, jnp.float64)
      t64 = jnp.asarray(t) if integer else jnp.asarray(t, jnp.float64)
      if integer:
        _, vjp = jax.vjp(lambda x: _jnp_stats(x, t64, m, cfg), x64)
        (e_x,), e_t = vjp(tuple(jnp.asarray(c, jnp.float64) for c in ct)), None
      else:
        _, vjp = jax.vjp(lambda x, t: _jnp_stats(x, t, m, cfg), x64, t64)
        e_x, e_t = vjp(tuple(jnp.asarray(c, jnp.float64) for c in ct))
      e_x, e_t = np.asarray(e_x), None if e_t is None else np.asarray(e_t)
    self.assertEqual(d_x.shape, x.shape)
    self.assertEqual(d_x.dtype, x.dtype)
    np.testing.assert_allclose(np.asarray(d_x), e_x, rtol=1e-4, atol=1e-5)
    if integer:
      self.assertIsNone(d_t)
    else:
      self.assertEqual(d_t.shape, t.shape)
      np.testing.assert_allclose(np.asarray(d_t), e_t, rtol=1e-4, atol=1e-5)

  def test_tpu_view_follows_the_tpu_layout(self):
    """Views of the layouts libtpu gives `[16, 512, 512, C]` (module doc)."""
    cases = (  # classes, dtype, class axis, block rows
      (21, jnp.float32, 1, 24),  # {2,1,3,0}: [B, C, H, W]
      (1, jnp.bfloat16, 1, 512),  # {2,1,3,0}, 16-row bfloat16 tiles
      (2, jnp.float32, 2, 64),  # {2,3,1,0:T(2,128)}: [B, H, C, W]
      (64, jnp.bfloat16, 2, 8),
      (128, jnp.float32, 3, 8),  # row-major
    )
    for classes, dtype, axis, rows in cases:
      view = _pallas_tpu.view_of((16, 512, 512, classes), dtype)
      self.assertEqual((view.class_axis, view.block_rows), (axis, rows))
      self.assertEqual(view.shape[view.class_axis], classes)
      self.assertEqual(view.shape[3 if axis != 3 else 2], 512)
    three_d = _pallas_tpu.view_of((8, 128, 128, 128, 8), jnp.float32)
    self.assertEqual(three_d.shape, (8, 128 * 128, 8, 128))
    x = np.arange(2 * 3 * 4 * 5 * 21, dtype=np.float32).reshape(2, 3, 4, 5, 21)
    view = _pallas_tpu.view_of(x.shape, x.dtype)
    np.testing.assert_array_equal(
      _pallas_tpu.from_view(view, _pallas_tpu.to_view(view, x), x.shape), x
    )
    with self.assertRaisesRegex(ValueError, "form"):
      _pallas.region_stats(_cfg(), x, x, None, form="mosaic")

  @parameterized.named_parameters(
    (
      "softmax_int_ignore",
      (2, 5, 4, 3),
      "softmax",
      "int",
      dict(exponent=3.0, from_logits=True, ignore_index=1),
    ),
    (
      "sigmoid_binary_batch",
      (2, 6, 5, 1),
      "sigmoid",
      "multihot",
      dict(exponent=2.0, from_logits=True, batch=True),
    ),
    (
      "probs_soft_mask_n05",
      (2, 4, 3, 2),
      "probs",
      "soft",
      dict(exponent=0.5, mask=True),
    ),
  )
  def test_loss_and_gradient_match_reference(self, shape, pk, tk, options):
    """PEL built on the Pallas sums: pel_numpy values, pel_jnp gradients."""
    options = dict(options)
    x, t, m = _inputs(shape, pk, tk, options.pop("mask", False))
    from_logits = options.pop("from_logits", False)
    activation = None
    if from_logits:
      activation = "sigmoid" if shape[-1] == 1 else "softmax"
    cfg = _cfg(
      activation=activation,
      exponent=options["exponent"],
      batch=options.get("batch", False),
      ignore_index=options.get("ignore_index"),
    )
    loss, grad = jax.jit(
      jax.value_and_grad(lambda x: _pallas_loss(cfg, x, t, m))
    )(x)
    kwargs = dict(options, from_logits=from_logits, where=m)
    np.testing.assert_allclose(
      float(loss), reference.pel_numpy(x, t, **kwargs), rtol=2e-5
    )
    expected = jax.grad(lambda x: reference.pel_jnp(x, t, **kwargs))(x)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)

  def test_tpu_form_cuts_wide_rows(self):
    """Blocks of 128 of W's 256 pixels and 8 of 9 rows (a small budget)."""
    x, t, m = _inputs((2, 9, 256, 3), "softmax", "int", True)
    cfg = _cfg(activation="softmax", exponent=2.0)
    with mock.patch.object(_pallas_tpu, "_BLOCK_ELEMENTS", 3 * 8 * 128):
      view = _pallas_tpu.view_of(x.shape, x.dtype)
      self.assertEqual((view.block_rows, view.block_width), (8, 128))
      self.assertEqual(view.grid, (2, 2, 2))
      stats = _pallas.region_stats(cfg, x, t, m)
      ct = tuple(np.ones_like(s) for s in stats)
      d_x, _ = _pallas.region_stats_bwd(cfg, x, t, m, stats, ct)
    for g, e in zip(stats, _oracle_stats(x, t, m, cfg)):
      np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=1e-5)
    whole, _ = _pallas.region_stats_bwd(cfg, x, t, m, stats, ct)
    np.testing.assert_allclose(d_x, whole, rtol=1e-5, atol=1e-6)

  def test_bfloat16_logits_accumulate_in_float32(self):
    """Sums of bf16 logits are float32 sums of their exact values."""
    x, t, m = _inputs((2, 5, 4, 21), "softmax", "int", True)
    x16 = jnp.asarray(x, jnp.bfloat16)
    cfg = _cfg(activation="softmax", exponent=3.0, ignore_index=0)
    stats = _pallas.region_stats(cfg, x16, t, m, block_rows=2)
    exact = np.asarray(x16, np.float32)
    for g, e in zip(stats, _oracle_stats(exact, t, m, cfg)):
      self.assertEqual(g.dtype, jnp.float32)
      np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=1e-5)
    ct = tuple(np.ones_like(e) for e in stats)
    d_x16, _ = _pallas.region_stats_bwd(cfg, x16, t, m, stats, ct, block_rows=2)
    d_x, _ = _pallas.region_stats_bwd(cfg, exact, t, m, stats, ct, block_rows=2)
    self.assertEqual(d_x16.dtype, jnp.bfloat16)
    np.testing.assert_array_equal(d_x16, jnp.asarray(d_x, jnp.bfloat16))

  def test_region_sums_give_pel_loss_of_the_main_options(self):
    """`_pallas.region_sums` in place of the core's: the bench's loss."""
    x, t, m = _inputs((2, 5, 4, 3), "softmax", "int", True)
    options = dict(exponent=3.0, scale=0.5, fp_weight=0.5, fn_weight=0.5)
    cfg = _cfg(activation="softmax", exponent=3.0, ignore_index=2)

    def loss(x):
      stats = _pallas.region_sums(cfg, x, t, m)
      return pel_jax.loss_from_stats(stats, **options)

    value, grad = jax.jit(jax.value_and_grad(loss))(x)
    kwargs = dict(options, from_logits=True, where=m, ignore_index=2)
    np.testing.assert_allclose(
      float(value), reference.pel_numpy(x, t, **kwargs), rtol=2e-5
    )
    expected = jax.grad(lambda x: reference.pel_jnp(x, t, **kwargs))(x)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    # Soft targets, differentiated in both arguments, and unmasked.
    soft = reference.make_targets(np.random.default_rng(2), x.shape, "soft")

    def soft_loss(x, t):
      stats = _pallas.region_sums(_cfg("softmax"), x, t, None)
      return pel_jax.loss_from_stats(stats, **options)

    got = jax.grad(soft_loss, argnums=(0, 1))(x, soft)
    options.update(from_logits=True)
    want = jax.grad(
      lambda x, t: reference.pel_jnp(x, t, **options), argnums=(0, 1)
    )(x, soft)
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    with self.assertRaisesRegex(NotImplementedError, "axis_name"):
      _pallas.region_sums(
        _core.StatsConfig(3.0, "softmax", False, None, axis_name="d"),
        x,
        t,
        m,
      )

  def test_extreme_logits_and_masked_nan_stay_finite(self):
    x = np.array(
      [
        [[-1e4, 0.0, 1e4], [50.0, -50.0, 0.0]],
        [[np.nan, 1.0, 2.0], [0.0, 0.0, 0.0]],
      ],
      np.float32,
    )
    t = np.array([[0, 2], [1, 1]], np.int32)
    m = np.array([[True, True], [False, True]])  # The NaN pixel is excluded.
    cfg = _cfg(activation="softmax", exponent=0.5)
    stats = _pallas.region_stats(cfg, x, t, m)
    ct = tuple(np.ones_like(s) for s in stats)
    d_x, _ = _pallas.region_stats_bwd(cfg, x, t, m, stats, ct)
    for s, e in zip(stats, _oracle_stats(np.nan_to_num(x), t, m, cfg)):
      np.testing.assert_allclose(s, e, rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(np.isfinite(d_x)))
    np.testing.assert_array_equal(d_x[1, 0], 0.0)

  def test_record_cotangent_and_unsupported_options(self):
    """The core's record of sums works as the cotangent; other sums raise."""

    class Stats(NamedTuple):  # Field names of the core's region statistics.
      tp: jax.Array
      sum_p: jax.Array
      sum_g: jax.Array
      numer: jax.Array
      sum_p2: jax.Array | None = None

    x, t, _ = _inputs((2, 4, 3, 3), "softmax", "int", False)
    cfg = _cfg(activation="softmax")
    stats = _pallas.region_stats(cfg, x, t, None)
    ct = tuple(
      np.random.default_rng(3).standard_normal(s.shape, np.float32)
      for s in stats
    )
    as_tuple, _ = _pallas.region_stats_bwd(cfg, x, t, None, stats, ct)
    as_record, _ = _pallas.region_stats_bwd(cfg, x, t, None, stats, Stats(*ct))
    np.testing.assert_array_equal(as_record, as_tuple)
    # Constant float targets: the same logits gradient, no target gradient.
    soft = np.asarray(jax.nn.one_hot(t, 3))
    both = _pallas.region_stats_bwd(cfg, x, soft, None, stats, ct)
    d_x, d_t = _pallas.region_stats_bwd(
      cfg, x, soft, None, stats, ct, target_grad=False
    )
    self.assertIsNone(d_t)
    np.testing.assert_allclose(d_x, both[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d_x, as_tuple, rtol=1e-5, atol=1e-6)

    class Squared(NamedTuple):
      exponent: float = 3.0
      activation: str | None = None
      batch: bool = False
      ignore_index: int | None = None
      squared: bool = True

    with self.assertRaisesRegex(NotImplementedError, "squared"):
      _pallas.region_stats(Squared(), x, t, None)
    with self.assertRaisesRegex(NotImplementedError, "squared"):
      _pallas.region_stats_bwd(Squared(), x, t, None, stats, ct)

  def test_block_layout(self):
    cfg = _cfg()
    layout = _pallas._Layout(cfg, (2, 10, 10, 21), None)
    self.assertEqual((layout.groups, layout.pixels), (2, 100))
    self.assertEqual(layout.padded_classes, 32)
    self.assertEqual(layout.rows, 128)  # min(4096 / 32, next power of 2)
    self.assertEqual(layout.blocks, 1)
    batch = _pallas._Layout(_cfg(batch=True), (2, 10, 10, 1), 8)
    self.assertEqual(
      (batch.groups, batch.pixels, batch.padded_classes), (1, 200, 1)
    )
    self.assertEqual((batch.rows, batch.blocks), (8, 25))

  @parameterized.parameters("cuda", "tpu")
  def test_lowers_for_accelerators(self, platform):
    """Triton (cuda) and Mosaic (tpu) accept the kernels' jaxprs.

    Lowering only: no accelerator here compiles or runs them.
    """
    if platform == "cuda" and jax.__version_info__ < (0, 10):
      # jax 0.8.1's Pallas GPU lowering has no rule for `slice`, which the
      # Triton form's masked block reads use; 0.10.2 lowers it.
      self.skipTest("Pallas GPU lowering of slice needs jax >= 0.10")
    shape = (2, 16, 16, 21)
    x, t, m = _inputs(shape, "softmax", "int", True)
    f, _ = _inputs(shape, "probs", "soft", False)[:2]
    cfg = _cfg(activation="softmax", exponent=2.5, ignore_index=0)
    stats = _oracle_stats(x, t, m, cfg)
    ct = tuple(np.ones_like(s, np.float32) for s in stats)
    calls = (
      (functools.partial(_pallas.region_stats, cfg), (x, t, m)),
      (functools.partial(_pallas.region_stats_bwd, cfg), (x, t, m, stats, ct)),
      (
        functools.partial(_pallas.region_stats_bwd, _cfg(exponent=3.0)),
        (f, f, None, stats, ct),
      ),
    )
    for fn, args in calls:
      text = (
        jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
      )
      self.assertIn("custom_call", text)


if __name__ == "__main__":
  absltest.main()

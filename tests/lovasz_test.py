"""Lovász-softmax and Lovász-hinge against the paper, the peers and misuse.

The oracle is Berman et al. 2018 (arXiv:1705.08790) transcribed in float64
NumPy: for each class, the Jaccard loss of the set of the k largest errors,
counted pixel by pixel, differenced and dotted with the sorted errors.
smp 0.6.0 and kornia 0.9.0 were run by tests/peer_values/make_lovasz_values.py
on inputs with B > 1, C > 1, absent classes and ignored pixels.
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
from pel_jax import _lovasz

_PEERS = json.loads(
  (
    pathlib.Path(__file__).parent / "peer_values" / "lovasz_values.json"
  ).read_text()
)


def _jaccard_loss_of_set(truth: set, mispredicted: set) -> float:
  """Delta_J(M) = 1 - |F minus M| / |F union M| (0 for an empty union)."""
  union = truth | mispredicted
  return 1.0 - len(truth - mispredicted) / len(union) if union else 0.0


def _lovasz_oracle(errors, truth, *, hinge=False) -> float:
  """The Lovász extension of Delta_J at the errors of the kept pixels."""
  errors = np.asarray(errors, np.float64)
  order = np.argsort(-errors, kind="stable")
  truth = {int(i) for i in np.flatnonzero(truth)}
  total, previous, mispredicted = 0.0, 0.0, set()
  for i in order:
    mispredicted.add(int(i))
    jaccard = _jaccard_loss_of_set(truth, mispredicted)
    e = max(errors[i], 0.0) if hinge else errors[i]
    total += e * (jaccard - previous)
    previous = jaccard
  return total


def _softmax_oracle(probs, ids, keep, classes="present", per_image=False):
  """`probs` [B, P, C] float64, `ids` [B, P], `keep` [B, P] bool."""
  groups = (
    [(probs[b], ids[b], keep[b]) for b in range(len(ids))]
    if per_image
    else [(probs.reshape(-1, probs.shape[-1]), ids.ravel(), keep.ravel())]
  )
  losses = []
  for p, g, k in groups:
    p, g = p[k], g[k]
    picked = range(p.shape[-1]) if isinstance(classes, str) else classes
    per_class = [
      _lovasz_oracle(np.abs((g == c) - p[:, c]), g == c)
      for c in picked
      if classes != "present" or np.any(g == c)
    ]
    losses.append(np.mean(per_class) if per_class else 0.0)
  return float(np.mean(losses))


def _hinge_oracle(logits, labels, keep, per_image=False):
  """`logits` [B, P], `labels` [B, P] (1 the foreground), `keep` [B, P]."""
  groups = (
    list(zip(logits, labels, keep, strict=True))
    if per_image
    else [(logits.ravel(), labels.ravel(), keep.ravel())]
  )
  losses = []
  for z, g, k in groups:
    fg = g[k] == 1
    losses.append(_lovasz_oracle(1 - z[k] * (2.0 * fg - 1), fg, hinge=True))
  return float(np.mean(losses))


def _inputs(seed, shape=(3, 4, 5), num_classes=4):
  """Logits, ids with class 2 absent from image 1, and 255 at some pixels."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, shape + (num_classes,))
  ids = rng.integers(0, num_classes, shape)
  ids[1] = np.where(ids[1] == 2, 0, ids[1])
  ignored = ids.copy()
  ignored[0, 0, :3] = 255
  ignored[2, 1] = 255
  return logits, ids, ignored


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


class OracleTest(parameterized.TestCase):
  @parameterized.parameters(
    ("present", False, "none"),
    ("present", True, "ignore_index"),
    ("all", False, "where"),
    ("all", True, "none"),
    ((0, 2), False, "ignore_index"),
    ((0, 2), True, "where"),
  )
  def test_softmax_matches_the_paper(self, classes, per_image, masking):
    logits, ids, ignored = _inputs(0)
    targets = ignored if masking == "ignore_index" else ids
    keep = (ignored != 255) if masking != "none" else np.ones(ids.shape, bool)
    kw = dict(classes=classes, per_image=per_image, from_logits=True)
    if masking == "ignore_index":
      kw["ignore_index"] = 255
    if masking == "where":
      kw["where"] = keep
    with jax.enable_x64(True):
      got = pel_jax.lovasz_softmax_loss(logits, targets, **kw)
    want = _softmax_oracle(
      _softmax(logits).reshape(3, -1, 4),
      targets.reshape(3, -1),
      keep.reshape(3, -1),
      classes,
      per_image,
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)

  @parameterized.parameters(
    (False, "none"), (True, "ignore_index"), (False, "where")
  )
  def test_hinge_matches_the_paper(self, per_image, masking):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (3, 4, 5, 1))
    labels = (rng.random((3, 4, 5)) < 0.4).astype(np.int32)
    labels[1] = 0  # No foreground in image 1.
    keep = np.ones(labels.shape, bool)
    kw = {}
    if masking != "none":
      keep[0, 2] = keep[2, :, 1] = False
    if masking == "ignore_index":
      labels[~keep] = -1
      kw["ignore_index"] = -1
    if masking == "where":
      kw["where"] = keep
    with jax.enable_x64(True):
      got = pel_jax.lovasz_hinge_loss(logits, labels, per_image=per_image, **kw)
    want = _hinge_oracle(
      logits.reshape(3, -1),
      labels.reshape(3, -1),
      keep.reshape(3, -1),
      per_image,
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)

  def test_reductions_over_images(self):
    logits, ids, _ = _inputs(2)
    with jax.enable_x64(True):
      each = pel_jax.lovasz_softmax_loss(
        logits, ids, from_logits=True, per_image=True, reduction="none"
      )
      total = pel_jax.lovasz_softmax_loss(
        logits, ids, from_logits=True, per_image=True, reduction="sum"
      )
    probs, flat = _softmax(logits).reshape(3, -1, 4), ids.reshape(3, -1)
    want = [
      _softmax_oracle(probs[b : b + 1], flat[b : b + 1], flat[b : b + 1] >= 0)
      for b in range(3)
    ]
    np.testing.assert_allclose(each, want, rtol=1e-12)
    np.testing.assert_allclose(total, sum(want), rtol=1e-12)
    # Without per_image the batch has one loss, whatever the reduction.
    batch = pel_jax.lovasz_softmax_loss(
      logits, ids, from_logits=True, reduction="none"
    )
    self.assertEqual(batch.shape, ())


class PublishedValuesTest(absltest.TestCase):
  # kornia tests/losses/test_lovaz_softmax.py (kornia/kornia at 06dd649e,
  # test_foreground_reference / test_foreground_gradient_reference): Berman's
  # lovasz_softmax(classes="all", per_image=True) on [1, 3, 1, 3] inputs.
  _P = np.array([[0.6, 0.21, 0.12], [0.29, 0.68, 0.19], [0.11, 0.11, 0.69]])

  def _kornia(self, probs, labels):
    return pel_jax.lovasz_softmax_loss(
      np.log(probs.T[None]), labels, from_logits=True, classes="all"
    )

  def test_kornia_foreground_reference(self):
    with jax.enable_x64(True):
      cases = (
        (self._P, np.array([[0, 1, 2]]), [0.4, 0.32, 0.31]),
        (self._P, np.zeros((1, 3), int), [0.69, 0.68, 0.69]),
        (self._P[:, :1], np.array([[0]]), [0.4, 0.29, 0.11]),
      )
      for probs, labels, per_class in cases:
        np.testing.assert_allclose(
          self._kornia(probs, labels), np.mean(per_class), rtol=1e-12
        )

  def test_kornia_gradient_reference(self):
    want = np.array(
      [
        [-0.08, 0.0476, 0.0276],
        [0.058, -0.0725333333, 0.0437],
        [0.022, 0.0249333333, -0.0713],
      ]
    )  # [C, W] in kornia's [1, C, 1, W]
    with jax.enable_x64(True):
      grad = jax.grad(
        lambda x: pel_jax.lovasz_softmax_loss(
          x, np.array([[0, 1, 2]]), from_logits=True, classes="all"
        )
      )(np.log(self._P.T[None]))
    np.testing.assert_allclose(grad[0].T, want, atol=1e-9)

  def test_pytorch_optimizer_hinge(self):
    # pytorch-optimizer tests/test_loss_functions.py, test_lovasz_hinge_loss
    # (Berman's hinge): per_image=True 1.625, False 7 / 6.
    logits = np.array([[2.0, -1.0], [0.5, 1.5]])[..., None]
    labels = np.array([[0, 0], [1, 1]])
    with jax.enable_x64(True):
      for per_image, want in ((True, 1.625), (False, 7.0 / 6.0)):
        got = pel_jax.lovasz_hinge_loss(logits, labels, per_image=per_image)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _peer_loss(case):
  """The pel_jax call that maps the peer's case, and its channels-last x."""
  x = np.moveaxis(np.asarray(case["logits"]), 1, -1)
  t = np.asarray(case["targets"])
  s, name = case["settings"], case["name"]
  per_image = s.get("per_image", True)  # kornia is per image.
  ignore = s.get("ignore_index")
  if "multiclass" in name or name == "kornia_lovasz_softmax_loss":
    classes = "all" if case["peer"] == "kornia" else "present"
    fn = lambda x: pel_jax.lovasz_softmax_loss(
      x,
      t,
      from_logits=True,
      classes=classes,
      per_image=per_image,
      ignore_index=ignore,
    )
  elif "multilabel" in name:
    # smp's multilabel is one hinge over every channel's pixels.
    flat = np.moveaxis(t, 1, -1).reshape(len(t), -1)
    fn = lambda x: pel_jax.lovasz_hinge_loss(
      x.reshape(len(x), -1, 1), flat, per_image=per_image
    )
  else:
    fn = lambda x: pel_jax.lovasz_hinge_loss(
      x, t, per_image=per_image, ignore_index=ignore
    )
  return fn, x


class PeerRunTest(parameterized.TestCase):
  @parameterized.named_parameters((c["name"], c) for c in _PEERS["cases"])
  def test_value_and_gradient(self, case):
    fn, x = _peer_loss(case)
    with jax.enable_x64(True):
      value, grad = jax.value_and_grad(fn)(x)
    # smp ran in float32 (its lovasz_grad is float32); kornia in float64.
    rtol, atol = (1e-6, 1e-7) if case["dtype"] == "float32" else (1e-12, 1e-14)
    np.testing.assert_allclose(value, case["value"], rtol=rtol)
    want = np.moveaxis(np.asarray(case["grad"]), 1, -1)
    np.testing.assert_allclose(grad, want, rtol=rtol, atol=atol)

  def test_every_peer_mode_is_covered(self):
    names = [c["name"] for c in _PEERS["cases"]]
    for prefix in (
      "smp_multiclass_per_image=True_ignore=255",
      "smp_binary_image_all_ignored",
      "smp_multilabel",
      "kornia_lovasz_softmax_loss",
      "kornia_lovasz_hinge_loss",
    ):
      self.assertTrue(any(n.startswith(prefix) for n in names), prefix)


class SortKeyTest(parameterized.TestCase):
  @parameterized.parameters(np.float32, np.float64)
  def test_keyed_sort_is_the_float_sort(self, dtype):
    rng = np.random.default_rng(3)
    x = np.concatenate(
      [
        rng.normal(0, 1, 500),
        rng.normal(0, 1e-40, 50),  # subnormal in float32
        [np.inf, -np.inf, 0.0, 1e30, -1e30, np.finfo(dtype).max],
      ]
    ).astype(dtype)
    x = np.unique(x)  # Distinct values: ties may sort either way.
    rng.shuffle(x)
    with jax.enable_x64(dtype == np.float64):
      keys = _lovasz.sort_keys(jnp.asarray(x))
    self.assertEqual(
      keys.dtype, jnp.int32 if dtype == np.float32 else jnp.int64
    )
    np.testing.assert_array_equal(
      np.argsort(np.asarray(keys)), np.argsort(x, kind="stable")
    )

  def test_signed_zeros_keep_their_order(self):
    keys = np.asarray(_lovasz.sort_keys(jnp.array([-0.0, 0.0, -1e-45])))
    self.assertLess(keys[2], keys[0])
    self.assertLess(keys[0], keys[1])

  def test_float64_needs_its_own_keys(self):
    # Distinct float64 errors that one float32 rounds together keep their
    # order only with int64 keys.
    x = np.array([1.0 + 2e-12, 1.0 + 1e-12, 1.0])
    with jax.enable_x64(True):
      keys = np.asarray(_lovasz.sort_keys(jnp.asarray(x)))
    self.assertEqual(len(set(np.asarray(x, np.float32))), 1)
    np.testing.assert_array_equal(np.argsort(keys), [2, 1, 0])


class GradientTest(parameterized.TestCase):
  @parameterized.parameters((False, "present"), (True, "all"))
  def test_softmax_check_grads(self, per_image, classes):
    logits, _, ignored = _inputs(4, shape=(3, 2, 3), num_classes=3)
    fn = lambda x: pel_jax.lovasz_softmax_loss(
      x,
      ignored,
      from_logits=True,
      classes=classes,
      per_image=per_image,
      ignore_index=255,
    )
    with jax.enable_x64(True):
      jtu.check_grads(fn, (logits,), order=1, modes=("rev", "fwd"), eps=1e-6)

  def test_hinge_check_grads(self):
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, (2, 3, 4, 1))
    labels = (rng.random((2, 3, 4)) < 0.5).astype(np.int32)
    fn = lambda x: pel_jax.lovasz_hinge_loss(x, labels, per_image=True)
    with jax.enable_x64(True):
      jtu.check_grads(fn, (logits,), order=1, modes=("rev", "fwd"), eps=1e-6)


class TransformTest(absltest.TestCase):
  def test_jit_and_vmap(self):
    logits, ids, ignored = _inputs(6)
    fn = lambda x, t: pel_jax.lovasz_softmax_loss(
      x, t, from_logits=True, per_image=True, ignore_index=255
    )
    eager = fn(logits, ignored)
    np.testing.assert_allclose(jax.jit(fn)(logits, ignored), eager, rtol=1e-6)
    stacked = jax.vmap(fn)(
      np.stack([logits, logits[::-1]]), np.stack([ignored, ignored[::-1]])
    )
    np.testing.assert_allclose(
      stacked, [eager, fn(logits[::-1], ignored[::-1])], rtol=1e-6
    )
    hinge = lambda z, t: pel_jax.lovasz_hinge_loss(z, t % 2)
    np.testing.assert_allclose(
      jax.jit(hinge)(logits[..., :1], ids),
      hinge(logits[..., :1], ids),
      rtol=1e-6,
    )


class EdgeCaseTest(absltest.TestCase):
  def test_nothing_kept_is_zero_with_zero_gradient(self):
    logits, ids, _ = _inputs(7)
    where = np.zeros(ids.shape, bool)
    for loss, x in (
      (
        lambda x: pel_jax.lovasz_softmax_loss(
          x, ids, from_logits=True, where=where
        ),
        logits,
      ),
      (
        lambda x: pel_jax.lovasz_hinge_loss(x, ids % 2, where=where),
        logits[..., :1],
      ),
    ):
      value, grad = jax.value_and_grad(loss)(x)
      self.assertEqual(float(value), 0.0)
      np.testing.assert_array_equal(grad, 0.0)

  def test_an_all_ignored_image_counts_as_zero(self):
    logits, ids, _ = _inputs(8)
    ids = ids.copy()
    ids[2] = 255
    with jax.enable_x64(True):
      each = pel_jax.lovasz_softmax_loss(
        logits,
        ids,
        from_logits=True,
        per_image=True,
        ignore_index=255,
        reduction="none",
      )
      mean = pel_jax.lovasz_softmax_loss(
        logits, ids, from_logits=True, per_image=True, ignore_index=255
      )
    self.assertEqual(float(each[2]), 0.0)
    self.assertGreater(float(each[0]), 0.0)
    np.testing.assert_allclose(mean, np.asarray(each).sum() / 3, rtol=1e-12)

  def test_extreme_and_masked_nan_logits_stay_finite(self):
    logits, ids, ignored = _inputs(9)
    logits = np.float32(1e30) * np.sign(logits).astype(np.float32)
    logits[0, 0, 0] = np.nan  # ignored pixel
    logits[2, 1, 2] = np.inf  # ignored pixel
    for loss, x in (
      (
        lambda x: pel_jax.lovasz_softmax_loss(
          x, ignored, from_logits=True, ignore_index=255
        ),
        logits,
      ),
      (
        lambda x: pel_jax.lovasz_hinge_loss(
          x, np.where(ignored == 255, 255, ignored % 2), ignore_index=255
        ),
        logits[..., :1],
      ),
    ):
      value, grad = jax.value_and_grad(loss)(x)
      self.assertTrue(np.isfinite(value), value)
      self.assertTrue(np.all(np.isfinite(grad)))
      self.assertEqual(float(grad[0, 0, 0].sum()), 0.0)

  def test_half_precision_is_computed_in_float32(self):
    logits, ids, _ = _inputs(10)
    x = jnp.asarray(logits, jnp.bfloat16)
    got = pel_jax.lovasz_softmax_loss(x, ids, from_logits=True)
    self.assertEqual(got.dtype, jnp.float32)
    want = pel_jax.lovasz_softmax_loss(
      np.asarray(x, np.float32), ids, from_logits=True
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)


class BadInputTest(absltest.TestCase):
  def test_errors_name_the_argument_and_shapes(self):
    x = np.zeros((2, 3, 4, 5), np.float32)
    ids = np.zeros((2, 3, 4), np.int32)
    softmax = pel_jax.lovasz_softmax_loss
    hinge = pel_jax.lovasz_hinge_loss
    cases = (
      (TypeError, "soft targets", softmax, (x, np.zeros_like(x)), {}),
      (ValueError, r"\(2, 3, 4, 5\)", softmax, (x, ids[:, :2]), {}),
      (ValueError, "C >= 2", softmax, (x[..., :1], ids), {}),
      (ValueError, "`classes`", softmax, (x, ids), {"classes": [0, 5]}),
      (ValueError, "`classes`", softmax, (x, ids), {"classes": "some"}),
      (TypeError, "`per_image`", softmax, (x, ids), {"per_image": "yes"}),
      (ValueError, "`where`", softmax, (x, ids), {"where": ids[0] > 0}),
      (ValueError, "`reduction`", softmax, (x, ids), {"reduction": "max"}),
      (
        ValueError,
        r"`predictions` \(logits\) .*\(2, 3, 4, 5\)",
        hinge,
        (x, ids),
        {},
      ),
      (TypeError, "soft targets", hinge, (x[..., :1], ids * 0.5), {}),
      (TypeError, "`predictions`", hinge, (ids[..., None], ids), {}),
    )
    for error, match, fn, args, kw in cases:
      with self.assertRaisesRegex(error, match):
        fn(*args, **kw)

  def test_bool_targets_are_the_foreground(self):
    rng = np.random.default_rng(11)
    z = rng.normal(size=(2, 3, 4, 1)).astype(np.float32)
    fg = rng.random((2, 3, 4)) < 0.5
    np.testing.assert_allclose(
      pel_jax.lovasz_hinge_loss(z, fg),
      pel_jax.lovasz_hinge_loss(z, fg.astype(np.int32)),
      rtol=0,
    )


if __name__ == "__main__":
  absltest.main()

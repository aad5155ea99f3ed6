"""Property tests: random shapes, dtypes and parameters against the oracle."""

from absl.testing import absltest
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests import reference

_SETTINGS = hypothesis.settings(
  max_examples=25,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)

_EXPONENTS = st.one_of(
  st.sampled_from([0.5, 1.0, 2.0, 3.0]),
  st.floats(0.3, 4.0, allow_nan=False),
)


# 0 or a float32-representable weight (a 1e-300 weight underflows in the
# float32 accumulation, an artefact of the test, not of the loss).
_WEIGHTS = st.one_of(st.just(0.0), st.floats(0.01, 2.0))


@st.composite
def _problems(draw):
  batch_size = draw(st.integers(1, 3))
  spatial = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2)))
  num_classes = draw(st.integers(1, 4))
  shape = (batch_size,) + spatial + (num_classes,)
  dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16]))
  kinds = ["probs", "sigmoid"] + (["softmax"] if num_classes > 1 else [])
  kind = draw(st.sampled_from(kinds))
  target_kind = draw(
    st.sampled_from(["int", "onehot", "multihot", "soft", "bool"])
  )
  seed = draw(st.integers(0, 2**31 - 1))
  kw = dict(
    exponent=draw(_EXPONENTS),
    scale=draw(st.sampled_from([1.0, 0.5, 2.0])),
    fp_weight=draw(_WEIGHTS),
    fn_weight=draw(_WEIGHTS),
    smooth_nr=draw(st.sampled_from([0.0, 1e-5, 0.1, 1.0])),
    smooth_dr=draw(st.sampled_from([0.0, 1e-5, 0.1, 1.0])),
    batch=draw(st.booleans()),
    reduction=draw(st.sampled_from(["mean", "sum", "none"])),
  )
  if kind != "probs":
    kw["from_logits"] = True
    if num_classes > 1:
      kw["activation"] = kind
  if num_classes > 1:
    kw["include_background"] = draw(st.booleans())
  use_mask = draw(st.booleans())
  use_weights = draw(st.booleans())
  use_ignore = target_kind == "int" and draw(st.booleans())

  rng = np.random.default_rng(seed)
  x = jnp.asarray(reference.make_predictions(rng, shape, kind), dtype)
  t = reference.make_targets(rng, shape, target_kind)
  if target_kind not in ("int", "bool"):
    t = jnp.asarray(t, dtype)
  if use_mask:
    kw["where"] = reference.make_mask(rng, shape)
  if use_weights:
    kw["class_weights"] = rng.uniform(0.1, 2.0, num_classes).astype(np.float32)
  if use_ignore:
    kw["ignore_index"] = int(rng.integers(0, num_classes))
  return x, t, kw


def _loss_fn(kw):
  """pel_loss jitted with `where` as an argument (None allowed)."""
  static = {k: v for k, v in kw.items() if k != "where"}
  return jax.jit(lambda a, b, w: pel_jax.pel_loss(a, b, where=w, **static))


def _rounded_np(a):
  a = np.asarray(a)
  return a.astype(np.float32) if a.dtype == bool else a


class PropertyTest(absltest.TestCase):
  @_SETTINGS
  @hypothesis.given(_problems())
  def test_matches_oracle_and_is_finite(self, problem):
    x, t, kw = problem
    soft = jnp.issubdtype(jnp.asarray(t).dtype, jnp.floating)
    argnums = (0, 1) if soft else 0
    # One compiled program per example (eager dispatch would compile every
    # primitive for every new shape).
    got, grads = jax.jit(
      jax.value_and_grad(
        lambda a, b: jnp.sum(pel_jax.pel_loss(a, b, **kw)), argnums
      )
    )(x, t)
    loss = _loss_fn(kw)(x, t, kw.get("where"))
    want = reference.pel_numpy(np.asarray(x), _rounded_np(t), **kw)
    self.assertEqual(loss.shape, np.shape(want))
    self.assertEqual(loss.dtype, jnp.float32)
    np.testing.assert_allclose(
      loss, want, rtol=2e-4, atol=2e-4, err_msg=str(kw)
    )
    np.testing.assert_allclose(got, np.sum(want), rtol=2e-4, atol=2e-4)
    chex.assert_tree_all_finite(grads)
    gx = grads[0] if soft else grads
    self.assertEqual(gx.dtype, x.dtype)
    # float32 gradients against autodiff of the reference (denominator > 0).
    if x.dtype == jnp.float32 and kw["smooth_dr"] > 0:
      want_gx = jax.jit(
        jax.grad(lambda a: jnp.sum(reference.pel_jnp(a, t, **kw)))
      )(x)
      scale = float(jnp.max(jnp.abs(want_gx))) + 1e-12
      np.testing.assert_allclose(
        gx, want_gx, rtol=2e-3, atol=2e-4 * scale, err_msg=str(kw)
      )

  @_SETTINGS
  @hypothesis.given(_problems(), st.randoms(use_true_random=False))
  def test_permutation_symmetry(self, problem, random):
    # Shuffling pixels (jointly in x, t, where) leaves every loss unchanged;
    # shuffling the batch permutes the per-sample rows.
    x, t, kw = problem
    kw = dict(kw, reduction="none")
    shape = x.shape
    n_pix = int(np.prod(shape[1:-1]))
    perm_pix = np.array(random.sample(range(n_pix), n_pix))
    perm_b = np.array(random.sample(range(shape[0]), shape[0]))

    def shuffle(a, spatial_rank, perm):
      a = np.asarray(a)
      flat = a.reshape((a.shape[0], n_pix) + a.shape[1 + spatial_rank :])
      return flat[:, perm].reshape(a.shape)

    rank = len(shape) - 2
    t_np = np.asarray(t)
    where = kw.get("where")
    f = _loss_fn(kw)
    base = f(x, t, where)
    moved = f(
      jnp.asarray(shuffle(x, rank, perm_pix)),
      shuffle(t_np, rank, perm_pix),
      None if where is None else shuffle(where, rank, perm_pix),
    )
    np.testing.assert_allclose(moved, base, rtol=1e-5, atol=1e-5)
    if not kw["batch"]:
      rows = f(
        jnp.asarray(np.asarray(x)[perm_b]),
        t_np[perm_b],
        None if where is None else where[perm_b],
      )
      np.testing.assert_allclose(
        rows, np.asarray(base)[perm_b], rtol=1e-6, atol=1e-6
      )


if __name__ == "__main__":
  absltest.main()

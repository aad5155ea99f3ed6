"""pel_loss under jit, vmap, grad and their compositions; retracing."""

import functools
import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax
from tests import reference

_SHAPE = (2, 5, 4, 3)
_K = 3  # Extra leading (vmapped) axis.


def _stacked(kind, target_kind, seed=0):
  rng = np.random.default_rng(seed)
  p = reference.make_predictions(rng, (_K,) + _SHAPE, kind)
  t = np.stack(
    [reference.make_targets(rng, _SHAPE, target_kind) for _ in range(_K)]
  )
  return p, t


_OPTIONS = (
  ("probs_int", "probs", "int", dict(exponent=2.0)),
  (
    "softmax_int_batch",
    "softmax",
    "int",
    dict(from_logits=True, batch=True, ignore_index=0),
  ),
  (
    "sigmoid_soft_none",
    "sigmoid",
    "soft",
    dict(
      from_logits=True, activation="sigmoid", reduction="none", exponent=0.5
    ),
  ),
)


class VmapGradTest(parameterized.TestCase):
  @parameterized.named_parameters(*_OPTIONS)
  def test_vmap_matches_per_example(self, kind, target_kind, options):
    p, t = _stacked(kind, target_kind)
    f = functools.partial(pel_jax.pel_loss, **options)
    got = jax.jit(jax.vmap(f))(p, t)
    want = np.stack(
      [reference.pel_numpy(p[k], t[k], **options) for k in range(_K)]
    )
    chex.assert_trees_all_close(got, want, atol=2e-5, rtol=2e-5)

  @parameterized.named_parameters(*_OPTIONS)
  def test_vmap_of_grad_and_grad_of_vmap(self, kind, target_kind, options):
    p, t = _stacked(kind, target_kind)
    f = lambda x, y: jnp.sum(pel_jax.pel_loss(x, y, **options))
    ref = jax.jit(
      jax.grad(lambda x, y: jnp.sum(reference.pel_jnp(x, y, **options)))
    )
    want = np.stack([ref(p[k], t[k]) for k in range(_K)])
    vmap_of_grad = jax.jit(jax.vmap(jax.grad(f)))(p, t)
    grad_of_vmap = jax.jit(jax.grad(lambda x, y: jnp.sum(jax.vmap(f)(x, y))))(
      p, t
    )
    chex.assert_trees_all_close(vmap_of_grad, want, rtol=2e-4, atol=1e-6)
    chex.assert_trees_all_close(grad_of_vmap, want, rtol=2e-4, atol=1e-6)

  def test_vmap_over_targets_only(self):
    # One prediction, several soft-target candidates (in_axes=(None, 0)).
    rng = np.random.default_rng(1)
    p = reference.make_predictions(rng, _SHAPE)
    t = np.stack(
      [reference.make_targets(rng, _SHAPE, "soft") for _ in range(_K)]
    )
    got = jax.vmap(pel_jax.pel_loss, in_axes=(None, 0))(p, t)
    want = [reference.pel_numpy(p, t[k]) for k in range(_K)]
    chex.assert_trees_all_close(got, np.array(want), atol=2e-5)

  def test_jit_eager_agree(self):
    p, t = _stacked("softmax", "int")
    f = functools.partial(pel_jax.pel_loss, from_logits=True, exponent=3.0)
    vg = jax.value_and_grad(f)
    chex.assert_trees_all_close(
      jax.jit(vg)(p[0], t[0]), vg(p[0], t[0]), rtol=1e-5, atol=1e-7
    )


class RetraceTest(absltest.TestCase):
  def test_no_retrace_on_same_shapes(self):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(x, y):
      return jax.value_and_grad(
        lambda z: pel_jax.pel_loss(z, y, from_logits=True)
      )(x)

    rng = np.random.default_rng(2)
    for _ in range(4):
      x = reference.make_predictions(rng, _SHAPE, "softmax")
      y = reference.make_targets(rng, _SHAPE, "int")
      loss, grad = step(x, y)
      np.testing.assert_allclose(
        loss, reference.pel_numpy(x, y, from_logits=True), atol=2e-5
      )
      chex.assert_tree_all_finite(grad)

  def test_changed_hyperparameter_is_a_new_trace(self):
    # Hyperparameters are static; a different value compiles a new program
    # (and must not reuse the old one).
    rng = np.random.default_rng(3)
    x = reference.make_predictions(rng, _SHAPE)
    y = reference.make_targets(rng, _SHAPE, "int")
    f = jax.jit(pel_jax.pel_loss, static_argnames=("exponent",))
    for n in (1.0, 2.0, 3.0):
      np.testing.assert_allclose(
        f(x, y, exponent=n), reference.pel_numpy(x, y, exponent=n), atol=2e-5
      )


def _flag_grid():
  """Every combination of the flags (with both kinds of targets)."""
  for act, tgt, where, ignore, weights, bg, batch, red in itertools.product(
    (None, "sigmoid", "softmax"),
    ("int", "soft"),
    (False, True),
    (None, 1),
    (False, True),
    (True, False),
    (False, True),
    ("mean", "sum", "none"),
  ):
    if tgt == "soft" and ignore is not None:
      continue  # ignore_index needs integer targets (a ValueError).
    yield dict(
      act=act,
      tgt=tgt,
      where=where,
      ignore=ignore,
      weights=weights,
      bg=bg,
      batch=batch,
      red=red,
    )


def _build(flags, rng, shape=(2, 3, 2, 3)):
  kind = "probs" if flags["act"] is None else flags["act"]
  p = reference.make_predictions(rng, shape, kind)
  t = reference.make_targets(rng, shape, flags["tgt"])
  kw = dict(
    exponent=0.5 if flags["batch"] else 3.0,
    from_logits=flags["act"] is not None,
    activation=flags["act"],
    where=reference.make_mask(rng, shape) if flags["where"] else None,
    ignore_index=flags["ignore"],
    class_weights=(
      np.array([0.5, 1.0, 2.0], np.float32) if flags["weights"] else None
    ),
    include_background=flags["bg"],
    batch=flags["batch"],
    reduction=flags["red"],
  )
  return p, t, kw


class FlagGridTest(absltest.TestCase):
  def test_every_flag_combination_traces_under_jit(self):
    rng = np.random.default_rng(4)
    count = 0
    for flags in _flag_grid():
      p, t, kw = _build(flags, rng)
      where = kw.pop("where")
      f = lambda x, y, m, kw=kw: jnp.sum(pel_jax.pel_loss(x, y, where=m, **kw))
      # Tracing under jit with abstract values: no value-dependent Python.
      jaxpr = jax.make_jaxpr(jax.jit(jax.value_and_grad(f)))(p, t, where)
      self.assertTrue(jaxpr.eqns, msg=str(flags))
      count += 1
    self.assertEqual(count, 3 * 3 * 2 * 2 * 2 * 2 * 3)

  def test_sampled_flag_combinations_compile_and_match(self):
    grid = list(_flag_grid())
    rng = np.random.default_rng(5)
    picks = rng.choice(len(grid), size=10, replace=False)
    for i in picks:
      flags = grid[i]
      p, t, kw = _build(flags, rng)
      value, grad = jax.jit(
        jax.value_and_grad(lambda x: jnp.sum(pel_jax.pel_loss(x, t, **kw)))
      )(p)
      want = np.sum(reference.pel_numpy(p, t, **kw))
      np.testing.assert_allclose(
        value, want, atol=3e-5, rtol=3e-5, err_msg=str(flags)
      )
      want_grad = jax.jit(
        jax.grad(lambda x: jnp.sum(reference.pel_jnp(x, t, **kw)))
      )(p)
      chex.assert_trees_all_close(grad, want_grad, rtol=2e-4, atol=1e-6)


if __name__ == "__main__":
  absltest.main()

"""`implementation="pallas"` on the public losses (`pel_jax._implementation`).

On the CPU the Pallas kernels run in interpret mode. Values are checked
against the float64 oracle of tests/reference_family.py and gradients (in
the logits and in soft targets) against central differences of it; the
options the kernels lack raise a ValueError naming them.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

import pel_jax
from tests import reference
from tests import reference_family

# name, shape, prediction kind, target kind, options (mask: a `where`).
_CASES = (
  (
    "softmax_ids_bench_loss_mask",
    (2, 3, 2, 3),
    "softmax",
    "int",
    dict(
      exponent=3.0,
      scale=0.5,
      fp_weight=0.5,
      fn_weight=0.5,
      from_logits=True,
      ignore_index=1,
      mask=True,
    ),
  ),
  (
    "sigmoid_multihot_batch_generalized",
    (2, 3, 2, 2),
    "sigmoid",
    "multihot",
    dict(
      exponent=2.0,
      from_logits=True,
      activation="sigmoid",
      batch=True,
      generalized="simple",
    ),
  ),
  (
    "probs_soft_n05_log_absent",
    (2, 3, 2, 3),
    "probs",
    "soft",
    dict(exponent=0.5, log_loss=True, absent_classes="exclude"),
  ),
)


class PallasImplementationTest(parameterized.TestCase):
  @parameterized.named_parameters(*_CASES)
  def test_value_and_gradients_match_oracle(self, shape, pk, tk, options):
    rng = np.random.default_rng(11)
    kw = dict(options)
    x = reference.make_predictions(rng, shape, pk, np.float64)
    t = reference.make_targets(rng, shape, tk, np.float64)
    if kw.pop("mask", False):
      kw["where"] = reference.make_mask(rng, shape)
    soft = tk != "int"
    oracle = lambda x, t: reference_family.family_numpy(x, t, **kw)
    with jax.enable_x64(True):
      loss = lambda x, t: pel_jax.pel_loss(x, t, implementation="pallas", **kw)
      value, grads = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1) if soft else 0)
      )(x, t)
      self.assertIn("pallas_call", str(jax.make_jaxpr(loss)(x, t)))
    np.testing.assert_allclose(value, oracle(x, t), rtol=1e-10)
    grads = grads if soft else (grads,)
    np.testing.assert_allclose(
      grads[0],
      reference.central_differences(lambda x: oracle(x, t), x),
      rtol=1e-6,
      atol=1e-9,
    )
    # (Generalized weights carry no gradient, by design: not the oracle's.)
    if soft and "generalized" not in kw:
      np.testing.assert_allclose(
        grads[1],
        reference.central_differences(lambda t: oracle(x, t), t),
        rtol=1e-6,
        atol=1e-9,
      )

  def test_family_wrapper_and_float32_logits(self):
    rng = np.random.default_rng(12)
    x = reference.make_predictions(rng, (2, 4, 3, 4), "softmax") * 4
    t = rng.integers(0, 4, (2, 4, 3)).astype(np.int32)
    kw = dict(from_logits=True, average="micro")
    got = pel_jax.dice_loss(x, t, implementation="pallas", **kw)
    expected = reference_family.family_numpy(
      x.astype(np.float64),
      t,
      exponent=1.0,
      fp_weight=0.5,
      fn_weight=0.5,
      **kw,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)

  @parameterized.named_parameters(
    ("squared", dict(squared=True), "int", "squared"),
    ("soft_labels", dict(soft_labels=True), "soft", "soft_labels"),
    ("ce", dict(ce_weight=0.5, from_logits=True), "int", "ce_weight"),
    ("axis_name", dict(axis_name="d"), "int", "axis_name"),
  )
  def test_options_the_kernels_lack_raise(self, options, tk, name):
    rng = np.random.default_rng(13)
    x = reference.make_predictions(rng, (2, 3, 3, 3), "probs")
    t = reference.make_targets(rng, (2, 3, 3, 3), tk)
    with self.assertRaisesRegex(ValueError, f"'pallas'.*{name}"):
      pel_jax.pel_loss(x, t, implementation="pallas", **options)

  def test_unknown_implementation_raises(self):
    x = np.full((1, 2, 2, 2), 0.5, np.float32)
    t = np.zeros((1, 2, 2), np.int32)
    for bad in ("triton", None):
      with self.assertRaisesRegex(ValueError, "`implementation` must be"):
        pel_jax.pel_loss(x, t, implementation=bad)
      with self.assertRaisesRegex(ValueError, "`implementation` must be"):
        pel_jax.loss_from_stats(pel_jax.region_stats(x, t), implementation=bad)


if __name__ == "__main__":
  absltest.main()

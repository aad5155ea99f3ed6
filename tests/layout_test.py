"""Legal shapes that are almost certainly a layout mistake (issue 25).

The refusals themselves are cases of validation_test's `_BAD`; these tests
show that real data passes and that the reshapes the errors offer keep the
loss value.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import pel_jax


def _traces(loss_fn, p_shape, t_shape, t_dtype=np.float32):
  """Traces `loss_fn` on abstract inputs: checks run, nothing compiles."""
  jax.eval_shape(
    loss_fn,
    jax.ShapeDtypeStruct(p_shape, np.float32),
    jax.ShapeDtypeStruct(t_shape, t_dtype),
  )


class PlausibleLayoutTest(parameterized.TestCase):
  """The layout refusals leave real data alone (issue 25)."""

  @parameterized.named_parameters(
    ("sequences_batch_32", (32, 1000, 4), (32, 1000), np.int32),
    ("sequences_much_longer", (64, 512, 5), (64, 512), np.int32),
    ("small_image_like", (48, 48, 2), (48, 48, 2), np.float32),
    ("sequences_as_rank_4", (128, 128, 1, 5), (128, 128, 1), np.int32),
    ("channels_last", (2, 64, 64, 3), (2, 64, 64, 3), np.float32),
    ("cityscapes", (2, 512, 1024, 19), (2, 512, 1024, 19), np.float32),
    ("thin_volume", (2, 16, 128, 128, 104), (2, 16, 128, 128, 104), bool),
    ("twelve_leads", (2, 12, 5000, 4), (2, 12, 5000, 4), np.float32),
    ("first_axis_short_ids", (2, 3, 64, 64), (2, 3, 64), np.int32),
  )
  def test_accepts(self, p_shape, t_shape, t_dtype):
    _traces(pel_jax.pel_loss, p_shape, t_shape, t_dtype)

  def test_every_entry_point_refuses(self):
    # Each public function that reads targets runs the same check.
    for name in (
      "dice_loss",
      "lovasz_softmax_loss",
      "boundary_loss",
      "confusion_stats",
    ):
      with self.subTest(name), self.assertRaisesRegex(ValueError, "one image"):
        _traces(getattr(pel_jax, name), (64, 64, 3), (64, 64), np.int32)

  def test_opt_ins_keep_the_value(self):
    # The reshapes the errors offer for real data change no value.
    rng = np.random.default_rng(0)
    p = rng.random((3, 7, 4), np.float32)
    ids = rng.integers(0, 4, (3, 7)).astype(np.int32)
    np.testing.assert_allclose(
      pel_jax.dice_loss(p[:, :, None], ids[:, :, None]),
      pel_jax.dice_loss(p, ids),
      rtol=1e-6,
    )
    q = rng.random((2, 3, 5, 4), np.float32)
    g = rng.random((2, 3, 5, 4), np.float32)
    moved = [jnp.moveaxis(x, 1, -2) for x in (q, g)]
    np.testing.assert_allclose(
      pel_jax.dice_loss(*moved), pel_jax.dice_loss(q, g), rtol=1e-6
    )


if __name__ == "__main__":
  absltest.main()

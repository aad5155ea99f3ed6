"""Tests of examples/unet/models.py."""

import dataclasses

from examples_unet_helpers import tiny
from flax import nnx
import jax
import numpy as np
import pytest

from examples.unet import checkpoint
from examples.unet import models


def test_model_shapes_and_mixed_precision():
  cfg = tiny(bf16=True)
  model = models.make_model(cfg, in_channels=3)
  out = jax.eval_shape(model, jax.ShapeDtypeStruct((2, 16, 16, 3), np.float32))
  assert out.shape == (2, 16, 16, 2) and out.dtype == np.float32
  assert model.down[0].conv1.dtype == jax.numpy.bfloat16  # bf16 compute
  assert model.head.kernel[...].dtype == np.float32  # f32 params


def test_resize_upsampling_has_no_period_two_pattern():
  # A constant feature map stays constant through resize + conv (away from
  # the zero-padded border); a stride-2 transposed convolution gives each
  # pixel of a 2x2 cell its own tap: the stripes of issue 25.
  x = np.ones((1, 4, 4, 2), np.float32)
  rngs = nnx.Rngs(0)
  y = np.asarray(models.Upsample(2, 3, np.float32, rngs)(x))
  assert y.shape == (1, 8, 8, 3)
  inner = y[:, 1:-1, 1:-1]
  np.testing.assert_allclose(
    inner, np.broadcast_to(inner[:, :1, :1], inner.shape), rtol=1e-6
  )
  t = np.asarray(nnx.ConvTranspose(2, 3, (2, 2), strides=(2, 2), rngs=rngs)(x))
  assert np.abs(t[:, 0::2] - t[:, 1::2]).max() > 1e-3


def test_checkpoint_without_upsample_loads_as_transpose(tmp_path):
  # Checkpoints written before the field existed used the transposed conv.
  cfg = tiny(upsample="transpose", depth=1)
  model = models.make_model(cfg, 1)
  meta_cfg = {
    k: v for k, v in dataclasses.asdict(cfg).items() if k != "upsample"
  }
  arch = {
    k: v for k, v in models.architecture(cfg, 1).items() if k != "upsample"
  }
  ckpts = checkpoint.Checkpoints(tmp_path / "checkpoints")
  ckpts.save(
    1, nnx.state(model), nnx.state(model), {"model": arch, "config": meta_cfg}
  )
  ckpts.close()
  loaded, got = checkpoint.load_model(tmp_path)
  assert got.upsample == "transpose"
  assert isinstance(loaded.up[0], nnx.ConvTranspose)
  with pytest.raises(checkpoint.CheckpointError, match="upsample"):
    checkpoint.restore(
      checkpoint.Checkpoints(tmp_path, create=False),
      models.make_model(tiny(depth=1), 1),
      architecture=models.architecture(tiny(depth=1), 1),
    )

"""Tests of examples/unet/models.py."""

from examples_unet_helpers import tiny
import jax
import numpy as np

from examples.unet import models


def test_model_shapes_and_mixed_precision():
  cfg = tiny(bf16=True)
  model = models.make_model(cfg, in_channels=3)
  out = jax.eval_shape(model, jax.ShapeDtypeStruct((2, 16, 16, 3), np.float32))
  assert out.shape == (2, 16, 16, 2) and out.dtype == np.float32
  assert model.down[0].conv1.dtype == jax.numpy.bfloat16  # bf16 compute
  assert model.head.kernel[...].dtype == np.float32  # f32 params

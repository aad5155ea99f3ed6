"""A 2D UNet in Flax NNX, channels last: `[B, H, W, C_in] -> [B, H, W, classes]`."""

from __future__ import annotations

import math
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

NORMS = ("group", "layer", "batch", "none")
UPSAMPLES = ("resize", "transpose")


def _norm(kind: str, features: int, dtype, axis_name, rngs: nnx.Rngs):
  # Group/layer norm are per-example, so a sharded step equals the
  # one-device step exactly; BatchNorm statistics are global under jit
  # (GSPMD) and need `axis_name` to be synchronised under pmap/shard_map.
  if kind == "group":
    return nnx.GroupNorm(
      features, num_groups=math.gcd(8, features), dtype=dtype, rngs=rngs
    )
  if kind == "layer":
    return nnx.GroupNorm(features, num_groups=1, dtype=dtype, rngs=rngs)
  if kind == "batch":
    return nnx.BatchNorm(
      features, momentum=0.9, dtype=dtype, axis_name=axis_name, rngs=rngs
    )
  if kind == "none":
    return lambda x: x
  raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class ConvBlock(nnx.Module):
  """(3x3 conv -> norm -> ReLU) x 2."""

  def __init__(
    self, cin: int, cout: int, norm: str, dtype, axis_name, rngs: nnx.Rngs
  ):
    kw = dict(
      kernel_size=(3, 3), use_bias=norm == "none", dtype=dtype, rngs=rngs
    )
    self.conv1 = nnx.Conv(cin, cout, **kw)
    self.norm1 = _norm(norm, cout, dtype, axis_name, rngs)
    self.conv2 = nnx.Conv(cout, cout, **kw)
    self.norm2 = _norm(norm, cout, dtype, axis_name, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.norm1(self.conv1(x)))
    return nnx.relu(self.norm2(self.conv2(x)))


class Upsample(nnx.Module):
  """x2 nearest-neighbour resize, then a 3x3 conv (Odena et al., 2016).

  The stride-2 2x2 transposed convolution it replaces gives each of the four
  pixels of an output 2x2 cell its own kernel tap, so any imbalance between
  the taps repeats with period 2: the striped masks and banded weight maps
  the example showed on he-types. Resizing first gives every output pixel
  the same weights.
  """

  def __init__(self, cin: int, cout: int, dtype, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, (3, 3), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


def _upsample(kind: str, cin: int, cout: int, dtype, rngs: nnx.Rngs):
  if kind == "resize":
    return Upsample(cin, cout, dtype, rngs)
  if kind == "transpose":
    return nnx.ConvTranspose(
      cin, cout, (2, 2), strides=(2, 2), dtype=dtype, rngs=rngs
    )
  raise ValueError(f"upsample must be one of {UPSAMPLES}, got {kind!r}")


class HeadInputs(NamedTuple):
  """What the last 1×1 conv reads, and its parameters (`--fused-head`).

  `pel_jax.head_loss(*head_inputs, labels, ...)` is the loss of
  `features @ kernel + bias`, the logits `UNet.__call__` returns, without
  building them.
  """

  features: jax.Array  # [B, H, W, D], the last decoder stage
  kernel: jax.Array  # [D, C], the 1x1 conv's kernel without its 1x1 window
  bias: jax.Array  # [C]

  def labels(self) -> jax.Array:
    """`argmax` of the logits, one sample's logits at a time."""
    return jax.lax.map(
      lambda f: jnp.argmax(jnp.dot(f, self.kernel) + self.bias, -1),
      self.features,
    )


def outputs(model, image: jax.Array, fused_head: bool):
  """What the loss reads: logits, or `HeadInputs` with `--fused-head`."""
  return model.head_inputs(image) if fused_head else model(image)


def predicted_labels(out) -> jax.Array:
  """The argmax class of logits or of `HeadInputs`."""
  return out.labels() if isinstance(out, HeadInputs) else jnp.argmax(out, -1)


class UNet(nnx.Module):
  """UNet with `depth` poolings; level i has `width * 2**i` channels.

  Inputs need H and W divisible by `2**depth` (`self.depth`: the one
  source of it for padding at inference). `upsample` is "resize" (nearest
  x2 then a 3x3 conv, `Upsample`) or "transpose" (a stride-2 transposed
  convolution, this example's layer before 0.3.0). Parameters are float32;
  `dtype=jnp.bfloat16` runs the convolutions in bf16 (mixed precision) and
  the logits are returned in float32 so the loss accumulates in f32.
  """

  def __init__(
    self,
    in_channels: int,
    num_classes: int,
    *,
    width: int = 16,
    depth: int = 3,
    norm: str = "group",
    upsample: str = "resize",
    dtype=jnp.float32,
    axis_name: str | None = None,
    rngs: nnx.Rngs,
  ):
    chans = [width * 2**i for i in range(depth + 1)]
    args = (norm, dtype, axis_name, rngs)
    self.down = nnx.List(
      [
        ConvBlock(cin, cout, *args)
        for cin, cout in zip([in_channels] + chans[:-2], chans[:-1])
      ]
    )
    self.bottom = ConvBlock(chans[-2], chans[-1], *args)
    self.up = nnx.List(
      [_upsample(upsample, c * 2, c, dtype, rngs) for c in reversed(chans[:-1])]
    )
    self.up_blocks = nnx.List(
      [ConvBlock(c * 2, c, *args) for c in reversed(chans[:-1])]
    )
    self.head = nnx.Conv(width, num_classes, (1, 1), dtype=dtype, rngs=rngs)
    self.in_channels, self.depth = in_channels, depth

  def decode(self, x: jax.Array) -> jax.Array:
    """The last decoder stage, `[B, H, W, width]`: the 1×1 head's input."""
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = self.bottom(x)
    for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
      x = block(jnp.concatenate([up(x), skip.astype(x.dtype)], axis=-1))
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.decode(x)).astype(jnp.float32)

  def head_inputs(self, x: jax.Array) -> HeadInputs:
    """`decode(x)` and the head's parameters, in the head's compute dtype.

    The same parameters as `__call__`'s head, so checkpoints of fused and
    plain runs are interchangeable.
    """
    features = self.decode(x)
    kernel, bias = (
      jnp.asarray(p[...], features.dtype)
      for p in (self.head.kernel, self.head.bias)
    )
    return HeadInputs(features, kernel.reshape(kernel.shape[-2:]), bias)


# Config fields that fix the architecture; saved with every checkpoint so a
# restore can check it and `predict` can rebuild the model.
ARCHITECTURE = ("classes", "width", "depth", "norm", "upsample")
# What a checkpoint saved before a field existed was built with.
LEGACY_ARCHITECTURE = {"upsample": "transpose"}


def architecture(cfg, in_channels: int) -> dict:
  """The architecture fields of `cfg` plus the input channels."""
  return {
    **{k: getattr(cfg, k) for k in ARCHITECTURE},
    "in_channels": in_channels,
  }


def make_model(cfg, in_channels: int) -> UNet:
  """The UNet of a run config (`configs.Config`), seeded by `cfg.seed`."""
  return UNet(
    in_channels,
    cfg.classes,
    width=cfg.width,
    depth=cfg.depth,
    norm=cfg.norm,
    upsample=cfg.upsample,
    dtype=jnp.bfloat16 if cfg.bf16 else jnp.float32,
    rngs=nnx.Rngs(cfg.seed),
  )

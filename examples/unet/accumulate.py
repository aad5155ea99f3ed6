"""`--accumulate K`: one optimizer step over K micro-batches, exactly.

The global batch is cut into K micro-batches;
`pel_jax.accumulated_value_and_grad` sums their region statistics (and the
CE sum and pixel count) before taking the loss, so the step is that of the
whole batch, with the activation memory of one micro-batch (two forwards and
one backward per micro-batch).
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

import pel_jax

from . import models


def check(batch_size: int, micro: int, devices: int) -> None:
  """Refuses a K that does not split every device's rows into equal parts."""
  if micro < 1 or batch_size % (micro * devices):
    raise ValueError(
      f"--accumulate {micro}: needs K >= 1 dividing the per-device"
      f" batch, but --batch-size {batch_size} over {devices} device(s) is"
      f" {batch_size / devices:g} rows each"
    )


def micro_batches(x: jax.Array, micro: int, devices: int) -> jax.Array:
  """`[B, ...]` -> `[K, B/K, ...]`; micro-batch k takes rows of every device.

  Each device's `B/D` rows split into K runs, so with the batch sharded over
  D devices every micro-batch stays sharded the same way (no data moves).
  Which rows meet in a micro-batch does not change the sums.
  """
  check(x.shape[0], micro, devices)
  rest = x.shape[1:]
  x = x.reshape(devices, micro, -1, *rest).swapaxes(0, 1)
  return x.reshape(micro, -1, *rest)


def train_step(
  model,
  optimizer,
  batch,
  stats_loss,
  num_classes: int,
  micro: int,
  devices: int = 1,
  sharding=None,
  fused_head: bool = False,
):
  """`steps.train_step` over K = `micro` micro-batches, in one's memory.

  `pel_jax.accumulated_value_and_grad` sums the statistics of
  `stats_loss` (a `losses.StatsLoss`) over the micro-batches, so the loss
  and gradient are those of the whole batch, not a mean of micro-batch
  losses. `sharding` (the batch's, over `devices`) keeps each micro-batch
  spread over every device. `fused_head`: `stats_loss` takes the model's
  `HeadInputs` (`--fused-head`).
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  parts = {k: micro_batches(v, micro, devices) for k, v in batch.items()}
  if sharding is not None:
    spec = P(None, *sharding.spec)
    parts = jax.lax.with_sharding_constraint(
      parts, NamedSharding(sharding.mesh, spec)
    )

  # accumulated_value_and_grad returns no auxiliary output: the confusion
  # counts come out as the gradient of a zero probe (the loss is unchanged,
  # and argmax has no gradient, so neither are the parameters' gradients;
  # float32 counts are exact below 2**24 pixels per step).
  def stats(wrt, mb):
    params, probe = wrt
    out = models.outputs(
      nnx.merge(graphdef, params, rest), mb["image"], fused_head
    )
    pred = models.predicted_labels(out)
    counts = jnp.bincount(
      (mb["mask"] * num_classes + pred).ravel(), length=num_classes**2
    ).astype(jnp.float32)
    return stats_loss.stats(out, mb["mask"]), jnp.vdot(probe, counts)

  step = optimizer.step[...]  # the boundary term's ramp (losses.make_loss)

  def loss(s):
    region, probe_term = s
    return stats_loss.loss(region, step) + probe_term.sum()

  probe = jnp.zeros(num_classes**2, jnp.float32)
  loss_value, (grads, counts) = pel_jax.accumulated_value_and_grad(
    stats, loss, (params, probe), parts, stack=stats_loss.stack
  )
  cm = counts.astype(jnp.int32).reshape(num_classes, num_classes)
  optimizer.update(model, grads)
  return loss_value, cm, optax.tree.norm(grads)

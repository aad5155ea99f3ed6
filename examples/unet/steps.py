"""One optimizer step, plain or data-parallel: the optimizer, the step, the Mesh.

`DataParallel` runs a step with `jit` over a `Mesh(devices, ('data',))`: the
batch is sharded on 'data', the parameters and optimizer state are
replicated, and the compiler makes the PEL/Dice sums global, so N devices
give the one-device update on the whole batch (no `axis_name` needed).
"""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from . import accumulate
from . import configs
from . import losses
from . import models

AXIS = "data"


def make_optimizer(cfg: configs.Config, model: nnx.Module) -> nnx.Optimizer:
  """AdamW, linear warmup + cosine decay to lr/100, clipping by global norm."""
  warmup = min(cfg.warmup, cfg.steps // 2)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, cfg.lr, warmup, max(cfg.steps, warmup + 1), end_value=cfg.lr * 0.01
  )
  tx = optax.chain(
    optax.clip_by_global_norm(cfg.clip),
    optax.adamw(schedule, weight_decay=cfg.weight_decay),
  )
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def train_step(
  model, optimizer, batch, loss_fn, num_classes: int, fused_head: bool = False
):
  """One optimizer step in place; returns (loss, confusion matrix, |grad|).

  `fused_head`: `loss_fn` takes the model's `HeadInputs` instead of its
  logits (`losses.make_loss` of a `--fused-head` config).
  """

  step = optimizer.step[...]  # the boundary term's ramp (losses.make_loss)

  def objective(model):
    out = models.outputs(model, batch["image"], fused_head)
    return loss_fn(out, batch["mask"], step), out

  (loss, out), grads = nnx.value_and_grad(objective, has_aux=True)(model)
  pred = models.predicted_labels(out)
  cm = jnp.bincount(
    (batch["mask"] * num_classes + pred).ravel(), length=num_classes**2
  ).reshape(num_classes, num_classes)
  optimizer.update(model, grads)
  return loss, cm, optax.tree.norm(grads)


class DataParallel:
  """`jit` over a Mesh of every device: the batch sharded, the state replicated."""

  def __init__(
    self,
    loss_fn,
    num_classes: int,
    *,
    micro: int = 1,
    stats_loss: losses.StatsLoss | None = None,
    fused_head: bool = False,
  ):
    """`micro` > 1 (`--accumulate`): `accumulate.train_step` on `stats_loss`.

    `fused_head`: the losses take `HeadInputs` (`--fused-head`).
    """
    self.mesh = Mesh(np.array(jax.devices()), (AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
    if micro == 1:
      step = functools.partial(
        train_step,
        loss_fn=loss_fn,
        num_classes=num_classes,
        fused_head=fused_head,
      )
    else:
      step = functools.partial(
        accumulate.train_step,
        stats_loss=stats_loss,
        num_classes=num_classes,
        micro=micro,
        devices=self.mesh.size,
        sharding=self.batch_sharding,
        fused_head=fused_head,
      )
    self._step = nnx.jit(step, donate_argnames=("model", "optimizer"))

  def put(self, x) -> jax.Array:
    """Host array (identical on every host) -> global replicated array."""
    return jax.make_array_from_process_local_data(
      self.replicated, np.asarray(x)
    )

  def replicate(self, *nodes) -> None:
    """Lays the state of modules/optimizers out replicated over the mesh."""
    nnx.update(nodes, jax.tree.map(self.put, nnx.state(nodes)))

  def shard(self, local_batch: dict) -> dict:
    """This host's rows of the global batch -> global arrays sharded on 'data'."""
    return {
      k: jax.make_array_from_process_local_data(self.batch_sharding, v)
      for k, v in local_batch.items()
    }

  def step(self, model, optimizer, local_batch: dict):
    return self._step(model, optimizer, self.shard(local_batch))

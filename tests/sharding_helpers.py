"""A loss under `shard_map` over the batch, for the multi-device tests."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def shard_map_value_and_grad(loss, *args):
  """`value_and_grad` of `loss(*args, axis_name="d")` (first argument),
  every argument's batch split over all devices by `shard_map`: the value
  replicated, the gradient sharded like the first argument."""
  mesh = jax.make_mesh(
    (jax.device_count(),), ("d",), axis_types=(jax.sharding.AxisType.Auto,)
  )
  sharded = [jax.device_put(a, NamedSharding(mesh, P("d"))) for a in args]
  local = jax.value_and_grad(lambda *a: loss(*a, axis_name="d"))
  return jax.jit(
    jax.shard_map(
      local,
      mesh=mesh,
      in_specs=(P("d"),) * len(args),
      out_specs=(P(), P("d")),
    )
  )(*sharded)

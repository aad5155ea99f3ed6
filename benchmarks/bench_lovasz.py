"""Lovász-softmax against the Dice loss: value+grad time on this machine.

Run from the repository root:

    python benchmarks/bench_lovasz.py              # [8, 128, 128, C], C = 2, 21
    python benchmarks/bench_lovasz.py --tiny --rounds 1   # smoke run

Prints a markdown table of medians (milliseconds) of `jax.value_and_grad`
of each loss, jitted, on logits and integer ids, float32. The variants of a
size are timed round-robin in the same rounds, so the ratios stay
meaningful on a shared machine. The last two rows of each size time the
loss's sort alone (the forward one, without the loss's gathers and
backward): `lax.sort` of `[C, B * P]` keys carrying the pixel positions, by
the float32 errors (negated) and by the int32 keys the loss sorts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

import pel_jax
from pel_jax import _lovasz


def _variants(shape):
  """`name -> (jitted fn, args)` for one `[B, *S, C]` size."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ids = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)

  def grad_of(loss):
    return jax.jit(jax.value_and_grad(lambda x: loss(x, ids)))

  errors = jnp.abs(jax.nn.softmax(logits, -1).reshape(-1, shape[-1]).T - 0.5)
  index = lax.broadcasted_iota(jnp.int32, errors.shape, 1)

  @jax.jit
  def float_sort(e, i):
    return lax.sort((-e, i), num_keys=1)[1]

  @jax.jit
  def int_sort(e, i):
    return lax.sort((~_lovasz.sort_keys(e), i), num_keys=1)[1]

  return {
    "dice_loss": (
      grad_of(lambda x, t: pel_jax.dice_loss(x, t, from_logits=True)),
      (logits,),
    ),
    "lovasz_softmax_loss": (
      grad_of(lambda x, t: pel_jax.lovasz_softmax_loss(x, t, from_logits=True)),
      (logits,),
    ),
    "lovasz_softmax_loss per_image": (
      grad_of(
        lambda x, t: pel_jax.lovasz_softmax_loss(
          x, t, from_logits=True, per_image=True
        )
      ),
      (logits,),
    ),
    "sort only, float32 keys": (float_sort, (errors, index)),
    "sort only, int32 keys": (int_sort, (errors, index)),
  }


def _time(fn, args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--tiny", action="store_true", help="[2, 16, 16, C]")
  args = parser.parse_args(argv)
  spatial = (2, 16, 16) if args.tiny else (8, 128, 128)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
  print("| shape | variant | median ms | vs dice_loss |")
  print("|---|---|---:|---:|")
  for classes in (2, 21):
    shape = (*spatial, classes)
    variants = _variants(shape)
    for fn, fn_args in variants.values():
      _time(fn, fn_args)  # compile
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
      for name, (fn, fn_args) in variants.items():
        times[name].append(_time(fn, fn_args))
    base = statistics.median(times["dice_loss"])
    for name, ts in times.items():
      ms = statistics.median(ts)
      print(f"| {list(shape)} | {name} | {1e3 * ms:.2f} | {ms / base:.1f}x |")


if __name__ == "__main__":
  main()

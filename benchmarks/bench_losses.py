"""MCC, Wasserstein Dice, unified focal, focal CE and weighted CE against Dice.

Run from the repository root:

    python benchmarks/bench_losses.py              # [8, 128, 128, C], C = 2, 21
    python benchmarks/bench_losses.py --tiny --rounds 1   # smoke run

Prints a markdown table of medians (milliseconds) of `jax.value_and_grad`
of each loss, jitted, on float32 logits and integer ids. The losses of a
size are timed round-robin in the same rounds, so the ratios to
`dice_loss` stay meaningful on a shared machine.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import pel_jax


def loss_functions(classes: int) -> dict:
  """`name -> loss(logits, ids)` of the table (float32 logits, int ids)."""
  dist = 1 - np.eye(classes, dtype=np.float32)
  weights = np.linspace(0.5, 2.0, classes, dtype=np.float32)
  return {
    "dice_loss": lambda x, t: pel_jax.dice_loss(x, t, from_logits=True),
    "mcc_loss": lambda x, t: pel_jax.mcc_loss(x, t, from_logits=True),
    "generalized_wasserstein_dice_loss": (
      lambda x, t: pel_jax.generalized_wasserstein_dice_loss(
        x, t, dist_matrix=dist, from_logits=True
      )
    ),
    "unified_focal_loss": lambda x, t: pel_jax.unified_focal_loss(
      x, t, from_logits=True
    ),
    "focal_cross_entropy": lambda x, t: pel_jax.focal_cross_entropy(
      x, t, from_logits=True
    ),
    # The fused CE term against the weighted one (a pass of its own).
    "dice_loss + CE": lambda x, t: pel_jax.dice_loss(
      x, t, from_logits=True, ce_weight=1.0
    ),
    "dice_loss + CE, ce_class_weights": lambda x, t: pel_jax.dice_loss(
      x, t, from_logits=True, ce_weight=1.0, ce_class_weights=weights
    ),
  }


def _losses(shape):
  """`name -> jitted value_and_grad` of one `[B, *S, C]` size, and logits."""
  rng = np.random.default_rng(0)
  classes = shape[-1]
  logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ids = jnp.asarray(rng.integers(0, classes, shape[:-1]), jnp.int32)
  return {
    k: jax.jit(jax.value_and_grad(functools.partial(f, t=ids)))
    for k, f in loss_functions(classes).items()
  }, logits


def _time(fn, x) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(x))
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--tiny", action="store_true", help="[2, 16, 16, C]")
  parser.add_argument("--classes", type=int, nargs="+", default=[2, 21])
  args = parser.parse_args(argv)
  spatial = (2, 16, 16) if args.tiny else (8, 128, 128)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
  print("| shape | loss | median ms | vs dice_loss |")
  print("|---|---|---:|---:|")
  for classes in args.classes:
    shape = (*spatial, classes)
    losses, x = _losses(shape)
    for fn in losses.values():
      _time(fn, x)  # compile
    times = {name: [] for name in losses}
    for _ in range(args.rounds):
      for name, fn in losses.items():
        times[name].append(_time(fn, x))
    base = statistics.median(times["dice_loss"])
    for name, ts in times.items():
      ms = statistics.median(ts)
      print(f"| {list(shape)} | {name} | {1e3 * ms:.2f} | {ms / base:.2f}x |")


if __name__ == "__main__":
  main()

"""Compiled (not timed) value+grad of the losses beyond the Dice family.

`bench_compiled.py`'s harness (deviceless compile for a TPU or an NVIDIA
GPU, bytes accessed of XLA's cost analysis, temporaries of its buffer
assignment) applied to Lovász-softmax, MCC, generalized Wasserstein Dice,
unified focal, focal cross-entropy and boundary loss, beside `dice_loss`
and optax's softmax cross-entropy on the same logits, and to the distance
transform on a mask of the same pixels. Every ratio is to `a * a` on the
logits, compiled for the same target in the same process.

    /work/venv-tpu/bin/python benchmarks/bench_compiled_losses.py --target tpu-v5e
    /work/venv-gpu/bin/python benchmarks/bench_compiled_losses.py --target h100

(From a checkout whose `pel_jax` is not the installed one: `PYTHONPATH=.`
in front.) A loop's body is counted once by XLA's cost analysis, whatever
its trip count: the distance transform's offset loop and the sort's
passes are not multiplied out, so its bytes are a floor, not an estimate.
"""

from __future__ import annotations

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# pylint: disable=wrong-import-position
import bench_compiled  # noqa: E402  (sets the deviceless environment)
import bench_losses  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import pel_jax  # noqa: E402


def _losses(classes: int) -> dict:
  """name -> loss(logits, ids): `bench_losses.py`'s, then those only
  compiled here (float32 logits, int ids)."""
  return {
    **bench_losses.loss_functions(classes),
    "optax softmax CE": lambda x, t: jnp.mean(
      optax.losses.softmax_cross_entropy_with_integer_labels(x, t)
    ),
    "cross_entropy (class weights)": lambda x, t: pel_jax.cross_entropy(
      x, t, class_weights=jnp.linspace(0.5, 1.5, classes)
    ),
    "lovasz_softmax_loss": lambda x, t: pel_jax.lovasz_softmax_loss(
      x, t, from_logits=True
    ),
    "boundary_loss": lambda x, t: pel_jax.boundary_loss(x, t, from_logits=True),
  }


def rows(
  target_key: str, classes: int, spatial, only=None
) -> list[tuple[str, float, float]]:
  """(name, bytes ÷ a*a, temporaries ÷ logits' bytes) of each program."""
  target = bench_compiled.TARGETS[target_key]
  sharding = bench_compiled.device_sharding(target)
  x = jax.ShapeDtypeStruct((*spatial, classes), jnp.float32, sharding=sharding)
  t = jax.ShapeDtypeStruct(tuple(spatial), jnp.int32, sharding=sharding)
  mask = jax.ShapeDtypeStruct(tuple(spatial), jnp.bool_, sharding=sharding)
  logits_bytes = x.size * x.dtype.itemsize

  def compiled(fn, *args):
    nbytes, _, temp, _ = bench_compiled.compile_one(fn, args, target.family)
    return nbytes, temp

  floor, _ = compiled(lambda a: a * a, x)
  out = []
  for name, loss in _losses(classes).items():
    if only and name not in only:
      continue
    nbytes, temp = compiled(jax.value_and_grad(loss), x, t)
    out.append((name, nbytes / floor, temp / logits_bytes))
  if only:
    return out
  nbytes, temp = compiled(pel_jax.signed_distance, mask)
  out.append(
    (
      "signed_distance of the mask (forward)",
      nbytes / floor,
      temp / logits_bytes,
    )
  )
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--target", default="h100", choices=sorted(bench_compiled.TARGETS)
  )
  parser.add_argument("--classes", type=int, nargs="+", default=[2, 21])
  parser.add_argument(
    "--spatial", type=int, nargs="+", default=[16, 512, 512], help="B, *S"
  )
  parser.add_argument(
    "--only", nargs="+", help="these programs (their names in the table)"
  )
  args = parser.parse_args(argv)
  target = bench_compiled.TARGETS[args.target]
  why = bench_compiled.missing(target.family)
  if why:
    raise SystemExit(f"cannot compile for {target.label}: {why}")
  print(f"{target.label}, jax {jax.__version__}, compiled (not timed)")
  print(
    "| logits | program (value+grad) | bytes ÷ a*a | temporaries ÷ logits |"
  )
  print("|---|---|---:|---:|")
  for classes in args.classes:
    shape = [*args.spatial, classes]
    for name, over_floor, temp in rows(
      args.target, classes, args.spatial, args.only
    ):
      print(f"| {shape} | {name} | {over_floor:.2f} | {temp:.2f} |")


if __name__ == "__main__":
  main()

"""Before/after ratio of pel_jax's core against a git revision, one process.

Run from the repository root:

    python benchmarks/compare_core.py --base 0a9e41d           # full sizes
    python benchmarks/compare_core.py --base HEAD~1 --rounds 5 --quick

Loads `pel_jax/_core.py` as it was at ``--base`` (`git show`) next to the
working tree's, and times `jax.jit(jax.value_and_grad(pel_loss))` through
each (the public `pel_loss` of the working tree, its core swapped) with the
order shuffled every round, so both see the same machine load. Prints, per
case and `batch`, the medians, new / old, and XLA's temporary bytes of
`value_and_grad` and of `grad` over the gradient's size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_loss  # pylint: disable=g-import-not-at-top,wrong-import-position

import pel_jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from pel_jax import _loss  # pylint: disable=g-import-not-at-top,wrong-import-position


def load_core(rev: str):
  """The module `pel_jax/_core.py` as it was at git revision `rev`."""
  source = subprocess.run(
    ["git", "show", f"{rev}:pel_jax/_core.py"],
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  path = os.path.join(tempfile.mkdtemp(), "base_core.py")
  with open(path, "w") as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location("base_core", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules["base_core"] = module  # dataclasses look their module up.
  spec.loader.exec_module(module)
  return module


def cases(quick: bool) -> list[bench_loss.Case]:
  scale = 4 if quick else 1
  return [
    bench_loss.Case("binary logits f32", (16 // scale, 512, 512, 1)),
    bench_loss.Case(
      "2-class logits, int labels", (16 // scale, 512, 512, 2), int_labels=True
    ),
    bench_loss.Case(
      "8-class logits, int labels", (8 // scale, 256, 256, 8), int_labels=True
    ),
    bench_loss.Case(
      "21-class logits, int labels", (8 // scale, 256, 256, 21), int_labels=True
    ),
    bench_loss.Case(
      "3D 2-class logits, int labels",
      (2, 128 // scale, 128, 128, 2),
      int_labels=True,
    ),
  ]


def shuffled_medians(fns, args, rounds: int, inner: int = 3) -> dict:
  order = list(fns)
  rng = random.Random(0)
  samples = {k: [] for k in fns}
  for _ in range(rounds):
    rng.shuffle(order)
    for k in order:
      t0 = time.perf_counter()
      for _ in range(inner):
        out = fns[k](*args[k])
      jax.block_until_ready(out)
      samples[k].append((time.perf_counter() - t0) / inner)
  return {k: float(np.median(v)) * 1e3 for k, v in samples.items()}


def compiled(core, fn, *args):
  """`jax.jit(fn)` compiled with `core` in place of pel_jax's own."""
  own = _loss._core
  _loss._core = core
  try:
    return jax.jit(fn).lower(*args).compile()
  finally:
    _loss._core = own


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--base", required=True, help="git revision to compare to")
  ap.add_argument("--rounds", type=int, default=25)
  ap.add_argument("--quick", action="store_true")
  args = ap.parse_args(argv)
  cores = {"old": load_core(args.base), "new": _loss._core}
  print(
    "| case | batch | old ms | new ms | new ÷ old | temp ÷ grad,"
    " value+grad old → new | temp ÷ grad, grad old → new |"
  )
  print("|---|---|---:|---:|---:|---|---|")
  for case in cases(args.quick):
    x, t, _, _ = bench_loss.make_inputs(case)
    fns, temps = {}, {}
    for batch in (False, True):
      loss = lambda x, t, b=batch: pel_jax.pel_loss(  # pylint: disable=g-long-lambda
        x, t, from_logits=True, batch=b
      )
      for name, core in cores.items():
        k = (name, batch)
        fns[k] = compiled(core, jax.value_and_grad(loss), x, t)
        temps[k] = (
          fns[k].memory_analysis().temp_size_in_bytes,
          compiled(core, jax.grad(loss), x, t)
          .memory_analysis()
          .temp_size_in_bytes,
        )
    for f in fns.values():
      jax.block_until_ready(f(x, t))
    ms = shuffled_medians(fns, {k: (x, t) for k in fns}, args.rounds)
    size = x.size * x.dtype.itemsize
    for batch in (False, True):
      o, n = ("old", batch), ("new", batch)
      print(
        f"| {case.name} {list(case.shape)} | {batch} | {ms[o]:.2f} |"
        f" {ms[n]:.2f} | {ms[n] / ms[o]:.2f} |"
        f" {temps[o][0] / size:.2f} → {temps[n][0] / size:.2f} |"
        f" {temps[o][1] / size:.2f} → {temps[n][1] / size:.2f} |",
        flush=True,
      )


if __name__ == "__main__":
  main()

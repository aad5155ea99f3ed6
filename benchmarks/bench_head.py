"""The fused 1×1 head loss against autodiff of the head + `pel_loss`.

Run from the repository root:

    python benchmarks/bench_head.py                  # the table in README
    python benchmarks/bench_head.py --tiny --rounds 1   # smoke run

For each `[B, *S]` volume with D = 32 features and C classes: the XLA
temporaries of the compiled value+grad (`memory_analysis()
.temp_size_in_bytes`, for features, kernel and bias) and its CPU time
(median of `--rounds`, jitted, the two variants timed round-robin), of

* plain: `jax.value_and_grad` of `pel_loss(features @ kernel + bias, ids,
  from_logits=True, batch=True, ce_weight=1.0)` (batch Dice + CE);
* fused: the same through `pel_jax.head_loss`, default chunk size.

The "up 2x" rows take features at half the labels' resolution: plain
resizes the logits (`jax.image.resize`, nearest), fused passes
`upsample=2`.

Times are the best (and the median) of `--rounds` runs: on a shared machine
the best run is the one least slowed by other jobs. `--cpu-time` times the
process's CPU time (all threads) instead of the wall clock: on a loaded
machine it leaves out the time the process waits for a core, so ratios
repeat far better (pin to one core, `taskset -c 0`, so that threads do not
add up). `--classes 2,16` picks the class counts; `--chunk N` sets the fused
`chunk_size` (default: `head_loss`'s). `--compile-only` also
compiles `[2, 128^3]` with 118 classes without running it. float32,
integer ids.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import pel_jax

OPTIONS = dict(batch=True, ce_weight=1.0)
FEATURES = 32


def _functions(factor, chunk=None):
  def plain(f, w, b, t):
    logits = f @ w + b
    if factor > 1:
      logits = jax.image.resize(logits, t.shape + w.shape[-1:], "nearest")
    return pel_jax.pel_loss(logits, t, from_logits=True, **OPTIONS)

  def fused(f, w, b, t):
    return pel_jax.head_loss(
      f,
      w,
      b,
      t,
      chunk_size=chunk,
      upsample=factor if factor > 1 else None,
      **OPTIONS,
    )

  return {
    name: jax.jit(jax.value_and_grad(fn, (0, 1, 2)))
    for name, fn in (("plain", plain), ("fused", fused))
  }


def _inputs(batch, spatial, classes, concrete, factor=1):
  shapes = (
    ((batch, *spatial, FEATURES), jnp.float32),
    ((FEATURES, classes), jnp.float32),
    ((classes,), jnp.float32),
    ((batch, *(s * factor for s in spatial)), jnp.int32),
  )
  if not concrete:
    return [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
  rng = np.random.default_rng(0)
  f, w, b, _ = (rng.normal(size=s) for s, _ in shapes)
  ids = rng.integers(0, classes, shapes[3][0])
  return [
    jnp.asarray(x, d)
    for x, (_, d) in zip((f, w / np.sqrt(FEATURES), b, ids), shapes)
  ]


CLOCK = [time.perf_counter]  # time.process_time with --cpu-time


def _time(fn, args) -> float:
  start = CLOCK[0]()
  jax.block_until_ready(fn(*args))
  return CLOCK[0]() - start


def _row(batch, spatial, classes, rounds, run, factor=1, chunk=None):
  functions = _functions(factor, chunk)
  args = _inputs(batch, spatial, classes, run, factor)
  compiled = {n: fn.lower(*args).compile() for n, fn in functions.items()}
  temp = {
    n: c.memory_analysis().temp_size_in_bytes for n, c in compiled.items()
  }
  logits = batch * int(np.prod(spatial)) * factor ** len(spatial) * classes * 4
  times = {n: [float("nan")] for n in compiled}
  if run:
    times = {n: [] for n in compiled}
    for c in compiled.values():
      jax.block_until_ready(c(*args))
    for _ in range(rounds):
      for n, c in compiled.items():
        times[n].append(1e3 * _time(c, args))
  best = {n: min(t) for n, t in times.items()}
  median = {n: statistics.median(t) for n, t in times.items()}
  shape = f"[{batch}, {'x'.join(map(str, spatial))}]"
  if factor > 1:
    shape += f" up {factor}x"
  mib = 1 << 20
  print(
    f"| {shape} | {classes} | {logits / mib:.1f} |"
    f" {temp['plain'] / mib:.1f} | {temp['fused'] / mib:.2f} |"
    f" {100 * temp['fused'] / logits:.1f}% |"
    f" {best['plain']:.1f} ({median['plain']:.0f}) |"
    f" {best['fused']:.1f} ({median['fused']:.0f}) |"
    f" {best['plain'] / best['fused']:.2f}x |",
    flush=True,
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="smoke-test shapes")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument(
    "--compile-only",
    action="store_true",
    help="also compile (not run) [2, 128^3] with 118 classes",
  )
  parser.add_argument(
    "--cpu-time",
    action="store_true",
    help="time the process's CPU time, not the wall clock",
  )
  parser.add_argument(
    "--classes", help="comma-separated class counts (default 2,16,118)"
  )
  parser.add_argument("--chunk", type=int, help="the fused chunk_size")
  args = parser.parse_args(argv)
  CLOCK[0] = time.process_time if args.cpu_time else time.perf_counter
  classes = (3,) if args.tiny else (2, 16, 118)
  if args.classes:
    classes = tuple(int(c) for c in args.classes.split(","))
  volumes = [(1, (8, 8, 8))] if args.tiny else [(1, (32,) * 3), (1, (64,) * 3)]
  print(
    f"jax {jax.__version__}, {jax.devices()[0].platform}, D = {FEATURES},"
    f" options {OPTIONS}, float32, integer ids, chunk_size {args.chunk};"
    " temporaries in MiB, times in ms"
    f" ({'CPU' if args.cpu_time else 'wall'}): best (median) of"
    f" {args.rounds}\n"
  )
  print(
    "| volume | C | logits MiB | plain temp | fused temp | fused/logits"
    " | plain ms | fused ms | speedup (best) |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for batch, spatial in volumes:
    for c in classes:
      _row(batch, spatial, c, args.rounds, run=True, chunk=args.chunk)
  # Features at half the resolution of the labels (`upsample=2`): the
  # volume column is the features', the logits column the labels'.
  for c in () if args.tiny else classes[-2:]:
    _row(*volumes[0], c, args.rounds, run=True, factor=2, chunk=args.chunk)
  if args.compile_only:
    _row(2, (128,) * 3, 118, 0, run=False)


if __name__ == "__main__":
  main()

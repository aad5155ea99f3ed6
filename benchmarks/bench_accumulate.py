"""Cost of exact gradient accumulation (`pel_jax.accumulated_value_and_grad`).

Run from the repository root:

    python benchmarks/bench_accumulate.py           # [16, 64, 64, 16] batch
    python benchmarks/bench_accumulate.py --quick   # tiny, a few seconds

A per-pixel two-layer model feeds a batch PEL (`batch=True`). Rows: plain
`jax.value_and_grad` of `pel_loss` on the whole batch, and the two-pass
accumulation over K micro-batches. Columns: median value+grad time (all
variants timed round-robin in the same rounds, so ratios survive a shared
machine), XLA's temporary buffer size of the compiled step (the memory that
accumulation is for), and the largest gradient difference to the plain one.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import pel_jax


def variants(shape, hidden, num_classes, ks):
  """`{name: (jitted fn, args)}`: plain value_and_grad and each K."""
  b, h, w, f = shape
  keys = jax.random.split(jax.random.key(0), 4)
  params = dict(
    w1=0.2 * jax.random.normal(keys[0], (f, hidden)),
    w2=0.2 * jax.random.normal(keys[1], (hidden, num_classes)),
  )
  x = jax.random.normal(keys[2], shape)
  y = jax.random.randint(keys[3], shape[:-1], 0, num_classes)
  model = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
  opts = dict(from_logits=True, batch=True)
  out = {
    "plain value_and_grad": jax.jit(
      jax.value_and_grad(
        lambda p, x, y: pel_jax.pel_loss(model(p, x), y, **opts)
      )
    )
  }
  stats_fn = lambda p, mb: pel_jax.region_stats(model(p, mb[0]), mb[1], **opts)
  loss_fn = lambda s: pel_jax.loss_from_stats(s, **opts)
  for k in ks:
    out[f"accumulated K={k}"] = jax.jit(
      lambda p, x, y, k=k: pel_jax.accumulated_value_and_grad(
        stats_fn,
        loss_fn,
        p,
        (x.reshape(k, b // k, h, w, f), y.reshape(k, b // k, h, w)),
      )
    )
  return out, (params, x, y)


def measure(fns, args, rounds, error):
  """`{name: dict(temp, err, ms)}` for jitted `fns` on `args`.

  XLA's temporary bytes of each compiled function, `error(output)`, and the
  median time, all variants timed round-robin in the same rounds.
  """
  rows, times = {}, {name: [] for name in fns}
  for name, fn in fns.items():
    temp = fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
    rows[name] = dict(temp=temp, err=error(jax.block_until_ready(fn(*args))))
  for _ in range(rounds):  # Round-robin: every variant sees the same load.
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - start)
  for name in fns:
    rows[name]["ms"] = 1e3 * float(np.median(times[name]))
  return rows


def run(shape, hidden, num_classes, ks, rounds):
  fns, args = variants(shape, hidden, num_classes, ks)
  _, ref = fns["plain value_and_grad"](*args)
  return measure(
    fns,
    args,
    rounds,
    lambda out: max(float(jnp.max(jnp.abs(out[1][k] - ref[k]))) for k in ref),
  )


def table(
  rows,
  base="plain value_and_grad",
  base_label="plain",
  time_label="value+grad",
  err_label="max abs grad diff",
):
  """A Markdown table of `measure`'s rows, as ratios to the row `base`."""
  ref = rows[base]
  lines = [
    f"| variant | {time_label} (ms) | vs {base_label} | XLA temp (MiB)"
    f" | vs {base_label} | {err_label} |",
    "|---|---|---|---|---|---|",
  ]
  for name, r in rows.items():
    lines.append(
      f"| {name} | {r['ms']:.1f} | {r['ms'] / ref['ms']:.2f}x |"
      f" {r['temp'] / 2**20:.1f} | {r['temp'] / max(ref['temp'], 1):.2f}x"
      f" | {r['err']:.1e} |"
    )
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--rounds", type=int, default=7)
  a = parser.parse_args()
  if a.quick:
    shape, hidden, ks = (4, 8, 8, 4), 8, (1, 2, 4)
  else:
    shape, hidden, ks = (16, 64, 64, 16), 64, (1, 4, 16)
  print(
    f"predictions {shape} -> {hidden} -> 4 classes, batch PEL n=3,"
    f" {jax.devices()[0].platform}, median of {a.rounds} rounds"
  )
  print(table(run(shape, hidden, 4, ks, a.rounds)))


if __name__ == "__main__":
  main()

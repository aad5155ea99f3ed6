"""Memory and time of the UNet example's step with `--accumulate K`.

Run from the repository root:

    python benchmarks/bench_accumulate_example.py           # batch 16, 64 px
    python benchmarks/bench_accumulate_example.py --quick   # tiny, seconds

One device. Rows: the example's plain step (`steps.train_step`, what
`--accumulate 1` runs) and `accumulate.train_step` for each K (K = 1: the
two-pass scan's own cost, on the whole batch), on the same global batch and
loss (`--loss pel+ce`, batch PEL). Columns:
median step time (all rows timed round-robin in the same rounds, so the
ratios survive a shared machine), XLA's temporary buffer size of the
compiled step (`memory_analysis().temp_size_in_bytes`: activations, which
accumulation divides by about K), and the loss difference to the plain step.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys

from flax import nnx
import jax
import optax

# The repository root (the example) and benchmarks/ (the shared measuring).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_accumulate

from examples.unet import accumulate
from examples.unet import configs
from examples.unet import data
from examples.unet import losses
from examples.unet import models
from examples.unet import steps

PLAIN = "plain step (K=1)"


def step_variants(cfg, ks):
  """`{name: (jitted pure step, (state, batch))}` for the plain step and each K."""
  ds = data.synthetic(cfg.seed, cfg.batch_size, cfg.image_size, cfg.classes)
  batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, cfg.image_size)
  model = models.make_model(cfg, 1)
  optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  variants = {
    PLAIN: functools.partial(
      steps.train_step, loss_fn=losses.make_loss(cfg), num_classes=cfg.classes
    )
  }
  for k in ks:
    variants[f"accumulate K={k}"] = functools.partial(
      accumulate.train_step,
      stats_loss=losses.make_stats_loss(cfg),
      num_classes=cfg.classes,
      micro=k,
    )

  def pure(step):  # no donation: every round starts from the same state
    def run(state, batch):
      model, optimizer = nnx.merge(graphdef, state)
      loss, _, _ = step(model, optimizer, batch)
      return loss, nnx.state((model, optimizer))

    return jax.jit(run)

  return {name: pure(step) for name, step in variants.items()}, (state, batch)


def run(cfg, ks, rounds):
  fns, args = step_variants(cfg, ks)
  ref = float(fns[PLAIN](*args)[0])
  return bench_accumulate.measure(
    fns, args, rounds, lambda out: abs(float(out[0]) - ref)
  )


def table(rows):
  return bench_accumulate.table(
    rows, base=PLAIN, base_label="K=1", time_label="step", err_label="loss diff"
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--rounds", type=int, default=5)
  a = parser.parse_args()
  if a.quick:
    cfg = configs.get_config(image_size=16, batch_size=8, width=4, depth=1)
  else:
    cfg = configs.get_config(image_size=64, batch_size=16, width=8, depth=3)
  ks = (1, 2, 4)
  print(
    f"UNet width {cfg.width} depth {cfg.depth}, batch {cfg.batch_size} x"
    f" {cfg.image_size}^2, loss {cfg.loss}, {jax.devices()[0].platform},"
    f" median of {a.rounds} rounds"
  )
  print(table(run(cfg, ks, a.rounds)))


if __name__ == "__main__":
  main()

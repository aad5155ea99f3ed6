"""Benchmark suite of pel_jax: value+grad time and gradient memory vs baselines.

Run from the repository root:

    python benchmarks/bench_loss.py --quick    # small sizes, < 2 min on 2 cores
    python benchmarks/bench_loss.py            # full sizes (issue 4 cases)
    python benchmarks/bench_loss.py --classes all --quick   # class-count sweep
    python benchmarks/bench_loss.py --options  # per-option table alone

Prints markdown tables; the default run ends with the per-option table
(each family option of `pel_loss` against the plain option). It writes
nothing unless asked: ``--json PATH`` saves the numbers to a new file
(``--overwrite`` to replace one), and ``--write-results`` replaces the
committed ``results_cpu.json`` and ``results_cpu.md``. Every variant of a
case is timed round-robin in the same rounds (medians), so ratios stay
meaningful on a noisy, shared machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
import datetime
import inspect
import json
import os
import platform
import random
import re
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pel_jax


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  shape: tuple[int, ...]  # predictions [B, *S, C]
  dtype: str = "float32"
  logits: bool = True
  int_labels: bool = False
  soft_targets: bool = False  # float targets in (0, 1), not 0/1


def full_cases() -> list[Case]:
  b = (16, 512, 512, 1)
  return [
    Case("binary probs f32", b, logits=False),
    Case("binary logits f32", b),
    Case("binary probs bf16", b, "bfloat16", logits=False),
    Case("binary logits bf16", b, "bfloat16"),
    Case("8-class logits, int labels", (8, 256, 256, 8), int_labels=True),
    Case("21-class logits, int labels", (8, 256, 256, 21), int_labels=True),
    Case(
      "3D 2-class logits, int labels", (2, 128, 128, 128, 2), int_labels=True
    ),
  ]


def quick_cases() -> list[Case]:
  return [
    dataclasses.replace(c, shape=s)
    for c, s in zip(
      full_cases(),
      [
        (4, 256, 256, 1),
        (4, 256, 256, 1),
        (4, 256, 256, 1),
        (4, 256, 256, 1),
        (2, 128, 128, 8),
        (2, 128, 128, 21),
        (1, 64, 64, 64, 2),
      ],
    )
  ]


def tiny_cases() -> list[Case]:
  return [
    dataclasses.replace(
      c, shape=(2,) + (8,) * (len(c.shape) - 2) + c.shape[-1:]
    )
    for c in full_cases()
  ]


# Class counts of the sweep (`--classes all`). At one size, the 2D and 3D
# cases have the same number of pixels, so rows differ only in C or layout.
SWEEP_CLASSES = (1, 2, 4, 8, 16, 21, 32, 64, 128)
_SWEEP_PIXELS = {
  "full": {2: (4, 128, 128), 3: (2, 32, 32, 32)},
  "quick": {2: (2, 64, 64), 3: (1, 16, 16, 32)},
  "tiny": {2: (2, 8, 8), 3: (2, 4, 4, 4)},
}


def sweep_cases(classes, size: str = "full", dims=(2, 3)) -> list[Case]:
  """Logits with integer labels, one case per class count and dimensionality."""
  return [
    Case(
      f"{c}-class {d}D logits, int labels",
      _SWEEP_PIXELS[size][d] + (c,),
      int_labels=True,
    )
    for d in dims
    for c in classes
  ]


# ----------------------------------------------------------------- variants


def plain_pel(
  x,
  g,
  *,
  logits,
  exponent=3.0,
  batch=False,
  smooth=1e-5,
  scale=1.0,
  fp_weight=1.0,
  fn_weight=1.0,
):
  """A straightforward jnp PEL (one-hot targets), differentiated by autodiff."""
  x = x.astype(jnp.float32)
  g = g.astype(jnp.float32)
  if logits:
    p = jax.nn.sigmoid(x) if x.shape[-1] == 1 else jax.nn.softmax(x, -1)
  else:
    p = x
  axes = tuple(range(0 if batch else 1, x.ndim - 1))
  tp = jnp.sum(p * g, axes)
  fp = jnp.sum(p * (1 - g), axes)
  fn = jnp.sum((1 - p) * g, axes)
  num = jnp.sum(p**exponent * g, axes)
  denom = tp + fp_weight * fp + fn_weight * fn + smooth
  return jnp.mean(1 - scale * (num + smooth) / denom)


def make_inputs(case: Case, seed: int = 0):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  dtype = jnp.dtype(case.dtype)
  c = case.shape[-1]
  x = jax.random.normal(k1, case.shape, jnp.float32) * 2
  if not case.logits:
    x = jax.nn.sigmoid(x)
  x = x.astype(dtype)
  if case.int_labels:
    labels = jax.random.randint(k2, case.shape[:-1], 0, c)
    onehot = jax.nn.one_hot(labels, c, dtype=dtype)
    targets = labels
  elif case.soft_targets:  # on the simplex for C > 1, in (0, 1) for C = 1
    z = jax.random.normal(k2, case.shape) * 2
    onehot = (jax.nn.sigmoid(z) if c == 1 else jax.nn.softmax(z)).astype(dtype)
    targets = onehot
  else:
    onehot = (jax.random.uniform(k2, case.shape) > 0.5).astype(dtype)
    targets = onehot
  other = jax.random.uniform(k2, case.shape).astype(dtype)  # for a * b
  return x, targets, onehot, other


def variants(case: Case) -> dict[str, tuple[Callable, str]]:
  """name -> (loss(x, targets, onehot), kind); kind picks what a*b means."""
  lg = case.logits
  out = {
    "pel_jax": (
      lambda x, t, oh: pel_jax.pel_loss(x, t, from_logits=lg),
      "loss",
    ),
    "pel_jax batch=True": (
      lambda x, t, oh: pel_jax.pel_loss(x, t, from_logits=lg, batch=True),
      "loss",
    ),
    "plain jnp autodiff": (
      lambda x, t, oh: plain_pel(x, oh, logits=lg),
      "loss",
    ),
    "pel_jax dice (n=1)": (
      lambda x, t, oh: pel_jax.dice_loss(
        x, t, from_logits=lg, smooth_nr=1.0, smooth_dr=1.0
      ),
      "loss",
    ),
  }
  if lg:  # optax's apply_softmax=False checks values: it cannot be jitted.
    out["optax dice (one-hot)"] = (
      lambda x, t, oh: jnp.mean(
        optax.losses.dice_loss(x, oh, apply_softmax=True)
      ),
      "loss",
    )
  return out


def sweep_variants(case: Case) -> dict[str, tuple[Callable, str]]:
  """The class-count sweep compares pel_jax with optax and plain autodiff."""
  every = variants(case)
  return {
    k: every[k]
    for k in ("pel_jax", "plain jnp autodiff", "optax dice (one-hot)")
  }


# ------------------------------------------------------------ option table

# Per-option rows (issue 10, issue 12): each family option's value+grad time
# against the plain option on the same inputs, timed in the same rounds.
PLAIN = "plain"
CE_FUSED = "ce_weight=1.0 (fused)"
CE_APART = "pel + optax CE (apart)"
CE_SMOOTHED = "ce_weight=1.0, ce_label_smoothing=0.1 (fused)"
CE_SMOOTHED_APART = "pel + optax CE, labels smoothed 0.1 (apart)"
OVERHEAD_GOAL = 0.10  # an option's time over the plain option's, minus 1
# The cross-entropy rows add a second loss: the 10% goal does not apply.
NO_GOAL = (CE_FUSED, CE_APART, CE_SMOOTHED, CE_SMOOTHED_APART)
_OPTION_SHAPES = {
  "full": ((8, 256, 256, 8), (16, 512, 512, 1), (8, 256, 256, 21)),
  "quick": ((2, 128, 128, 8), (4, 256, 256, 1), (2, 128, 128, 21)),
  "tiny": ((2, 8, 8, 8), (2, 8, 8, 1), (2, 8, 8, 21)),
}


def option_cases(size: str = "full") -> list[Case]:
  """The option table's cases: logits, integer ids or soft float targets."""
  multi, binary, wide = _OPTION_SHAPES[size]
  return [
    Case("8-class logits, int labels", multi, int_labels=True),
    Case("8-class logits, soft targets", multi, soft_targets=True),
    Case("binary logits, soft targets", binary, soft_targets=True),
    Case("21-class logits, int labels", wide, int_labels=True),
  ]


def has_label_smoothing() -> bool:
  """Whether this pel_jax has the fused CE's `ce_label_smoothing` option."""
  return "ce_label_smoothing" in inspect.signature(pel_jax.pel_loss).parameters


def _cross_entropy_apart(case: Case, smoothing: float = 0.0) -> Callable:
  """optax's cross-entropy mean, the loss `ce_weight` fuses (per case)."""
  c = case.shape[-1]
  if c == 1:
    return lambda x, t, oh: optax.sigmoid_binary_cross_entropy(x, t).mean()
  if case.int_labels and not smoothing:
    return lambda x, t, oh: optax.softmax_cross_entropy_with_integer_labels(
      x, t
    ).mean()
  return lambda x, t, oh: optax.softmax_cross_entropy(
    x, optax.smooth_labels(oh, smoothing) if smoothing else oh
  ).mean()


def option_variants(
  case: Case, exponent: float | None = None
) -> dict[str, tuple[Callable, str]]:
  """Option name -> (loss(x, targets, onehot), kind), plain first.

  Options that only change the `[G, C]` ratio (generalized, focal, log,
  absent classes, micro) are timed on integer ids with several classes;
  those that change the per-pixel pass (squared, soft labels, batch, CE)
  on every case where they apply (soft labels: float targets only).
  Every pel_jax row, plain included, takes `exponent` when given.
  """
  fixed = {} if exponent is None else dict(exponent=exponent)

  def pel(**options):
    options = {**fixed, **options}
    return lambda x, t, oh: pel_jax.pel_loss(x, t, from_logits=True, **options)

  rows = {PLAIN: {}}
  if case.int_labels and case.shape[-1] > 1:
    rows.update(
      {
        f'generalized="{kind}"': dict(generalized=kind)
        for kind in ("square", "simple", "uniform")
      }
    )
  rows["squared=True"] = dict(squared=True)
  if not case.int_labels:
    rows["soft_labels=True"] = dict(soft_labels=True)
  if case.int_labels and case.shape[-1] > 1:
    rows["focal_gamma=2"] = dict(focal_gamma=2.0)
    rows["log_loss=True"] = dict(log_loss=True)
    rows['absent_classes="exclude"'] = dict(absent_classes="exclude")
    rows['average="micro"'] = dict(average="micro")
  rows["batch=True"] = dict(batch=True)
  rows[CE_FUSED] = dict(ce_weight=1.0)
  out = {name: (pel(**o), "loss") for name, o in rows.items()}
  plain, ce = out[PLAIN][0], _cross_entropy_apart(case)
  out[CE_APART] = (lambda x, t, oh: plain(x, t, oh) + ce(x, t, oh), "loss")
  if case.int_labels and case.shape[-1] > 1 and has_label_smoothing():
    smoothed = _cross_entropy_apart(case, 0.1)
    out[CE_SMOOTHED] = (pel(ce_weight=1.0, ce_label_smoothing=0.1), "loss")
    out[CE_SMOOTHED_APART] = (
      lambda x, t, oh: plain(x, t, oh) + smoothed(x, t, oh),
      "loss",
    )
  return out


MONAI = "MONAI DiceLoss (torch CPU, 2 threads)"


def monai_missing() -> str | None:
  """Why the MONAI row cannot run here, or None when it can."""
  try:
    import monai.losses  # noqa: F401
    import torch  # noqa: F401
  except ImportError as e:
    return f"torch and monai are not both importable ({e})"
  return None


def monai_step(case: Case, x, targets) -> Callable[[], object]:
  """One value+grad step of MONAI's DiceLoss on the case's inputs (-> loss).

  Channels-first copies of the inputs are made once, outside the timing;
  the activation follows the case (sigmoid for one channel, else softmax),
  integer labels go through MONAI's own `to_onehot_y`.
  """
  # pylint: disable=import-outside-toplevel
  from monai.losses import DiceLoss
  import torch

  torch.set_num_threads(2)
  dtype = torch.bfloat16 if case.dtype == "bfloat16" else torch.float32
  first = (0, x.ndim - 1) + tuple(range(1, x.ndim - 1))
  xt = torch.from_numpy(np.asarray(x, np.float32).transpose(first).copy())
  xt = xt.to(dtype).requires_grad_(True)
  options = {}
  if case.logits:
    options = dict(sigmoid=True) if x.shape[-1] == 1 else dict(softmax=True)
  if case.int_labels:
    yt = torch.from_numpy(np.asarray(targets, np.int64)[:, None].copy())
    options["to_onehot_y"] = True
  else:
    yt = torch.from_numpy(
      np.asarray(targets, np.float32).transpose(first).copy()
    ).to(dtype)
  loss_fn = DiceLoss(**options)

  def step():
    xt.grad = None
    loss = loss_fn(xt, yt)
    loss.backward()
    return loss.detach()

  return step


# ------------------------------------------------------------------ timing


def _time_round_robin(
  fns: dict[str, Callable],
  args: dict[str, tuple],
  rounds: int,
  min_sample_s: float,
  samples_out: dict | None = None,
  faults_out: dict | None = None,
):
  """Median ms of each function; `samples_out` receives the per-round times.

  `faults_out` receives the median minor page faults per call (the whole
  process's, XLA's threads included): on glibc, a buffer over its 32 MiB
  mmap ceiling is mapped afresh on every call and each of its 4 KiB pages
  faults on first write, a cost the ms include (benchmarks/README.md).
  """
  inner = {}
  for k, f in fns.items():
    jax.block_until_ready(f(*args[k]))  # compile + warm up
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args[k]))
    dt = time.perf_counter() - t0
    inner[k] = max(1, min(20, int(min_sample_s / max(dt, 1e-6))))
  samples = {k: [] for k in fns}
  faults = {k: [] for k in fns}
  # A new order every round (seeded), so that no variant always follows the
  # same one: in a fixed order the plain option, always right after the
  # roofline, ran 10-20% off options that compile to its very program
  # (benchmarks/README.md).
  order, shuffle = list(fns), random.Random(0).shuffle
  for _ in range(rounds):
    shuffle(order)
    for k in order:
      f = fns[k]
      f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      t0 = time.perf_counter()
      for _ in range(inner[k]):
        out = f(*args[k])
      jax.block_until_ready(out)
      samples[k].append((time.perf_counter() - t0) / inner[k])
      f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      faults[k].append((f1 - f0) / inner[k])
  if samples_out is not None:
    samples_out.update(samples)
  if faults_out is not None:
    faults_out.update({k: float(np.median(v)) for k, v in faults.items()})
  return {k: float(np.median(v)) * 1e3 for k, v in samples.items()}


def _temp_bytes(fn, *args) -> int | None:
  try:
    mem = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(mem.temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


ROOFLINE = "a * b (roofline)"


def time_variants(
  case: Case,
  losses: dict[str, tuple[Callable, str]],
  rounds: int,
  min_sample_s: float,
  extra: dict[str, Callable] | None = None,
  samples_out: dict | None = None,
  faults_out: dict | None = None,
):
  """`(ms, temp_bytes, grad_bytes, full_size_arrays)` of each loss's
  value+grad, and the time and temp bytes of `a * b`.

  Every loss and the roofline run in the same interleaved rounds; `extra`
  steps (no arguments, no XLA temp) join them; `samples_out` receives the
  per-round times and `faults_out` the page faults per call.
  """
  x, targets, onehot, other = make_inputs(case)
  fns = {ROOFLINE: jax.jit(lambda a, b: a * b)}
  args = {ROOFLINE: (x, other)}
  temps = {ROOFLINE: _temp_bytes(lambda a, b: a * b, x, other)}
  arrays = {}
  for name, (loss, _) in losses.items():
    vg = jax.value_and_grad(lambda x, t, oh, loss=loss: loss(x, t, oh))
    fns[name] = jax.jit(vg)
    args[name] = (x, targets, onehot)
    temps[name] = _temp_bytes(
      jax.grad(lambda x, t, oh, loss=loss: loss(x, t, oh)), x, targets, onehot
    )
    arrays[name] = full_size_arrays(vg, x, targets, onehot, shape=case.shape)
  for name, step in (extra or {}).items():
    fns[name], args[name], temps[name] = step, (), None
  ms = _time_round_robin(
    fns, args, rounds, min_sample_s, samples_out, faults_out
  )
  return ms, temps, x.size * x.dtype.itemsize, arrays


_VIEWS = ("parameter", "tuple", "get-tuple-element", "bitcast")


def full_size_arrays(fn, *args, shape) -> int | None:
  """Arrays of `shape` (any dtype) XLA writes in the compiled `jit(fn)`.

  Counted from the top-level (ENTRY) instructions of the optimised HLO:
  fusions and other ops whose result has the predictions' shape, the
  returned gradient included; parameters, tuples and bitcasts are views.
  """
  try:
    text = jax.jit(fn).lower(*args).compile().as_text()
  except Exception:  # pylint: disable=broad-except
    return None
  entry = text[text.find("\nENTRY ") :].split("\n}", 1)[0]
  dims = ",".join(map(str, shape))
  count = 0
  for line in entry.splitlines()[2:]:  # after the signature
    parsed = re.match(r"(\(.*?\)|\S+) ([\w-]+)\(", line.partition(" = ")[2])
    if parsed is None or parsed[2] in _VIEWS:
      continue
    result = parsed[1]
    # A multi-output fusion's result is a tuple of shapes: count each.
    count += re.findall(r"\[([\d,]*)\]", result).count(dims)
  return count


def run_case(
  case: Case,
  rounds: int,
  min_sample_s: float,
  variant_set=variants,
  monai: bool = False,
) -> list[dict]:
  """Rows of one case: every variant timed in the same interleaved rounds.

  `monai` adds MONAI's DiceLoss (see `monai_missing`) to the rounds.
  """
  extra = {}
  if monai:
    x, targets, _, _ = make_inputs(case)
    extra[MONAI] = monai_step(case, x, targets)
  faults = {}
  ms, temps, grad_bytes, _ = time_variants(
    case, variant_set(case), rounds, min_sample_s, extra, faults_out=faults
  )
  rows = []
  for name in ms:
    rows.append(
      dict(
        case=case.name,
        shape=list(case.shape),
        dtype=case.dtype,
        variant=name,
        ms=ms[name],
        vs_roofline=ms[name] / ms[ROOFLINE],
        over_pel=ms[name] / ms["pel_jax"],
        plain_over_this=ms["plain jnp autodiff"] / ms[name],
        optax_over_this=(
          ms["optax dice (one-hot)"] / ms[name]
          if "optax dice (one-hot)" in ms
          else None
        ),
        temp_bytes=temps[name],
        grad_bytes=grad_bytes,
        temp_over_grad=(
          None if temps[name] is None else temps[name] / grad_bytes
        ),
        faults_per_call=faults[name],
      )
    )
  return rows


def run_option_case(
  case: Case, rounds: int, min_sample_s: float, exponent: float | None = None
):
  """Rows of the option table for one case (all options in the same rounds).

  `over_plain` is the median over rounds of each option's time over the
  plain option's in the same round (paired: a drift of the machine's speed
  between rounds cancels); the fused CE row also gets `apart_over_this`,
  the CE computed apart over fused.
  """
  samples = {}
  ms, temps, grad_bytes, arrays = time_variants(
    case,
    option_variants(case, exponent),
    rounds,
    min_sample_s,
    samples_out=samples,
  )
  paired = lambda name: float(
    np.median(np.divide(samples[name], samples[PLAIN]))
  )
  apart = {CE_FUSED: CE_APART, CE_SMOOTHED: CE_SMOOTHED_APART}
  targets = (
    "int labels" if case.int_labels else "soft" if case.soft_targets else "0/1"
  )
  rows = []
  for name in ms:
    if name == ROOFLINE:
      continue
    rows.append(
      dict(
        table="options",
        case=case.name,
        shape=list(case.shape),
        dtype=case.dtype,
        targets=targets,
        variant=name,
        ms=ms[name],
        plain_ms=ms[PLAIN],
        over_plain=paired(name),
        vs_roofline=ms[name] / ms[ROOFLINE],
        apart_over_this=(ms[apart[name]] / ms[name] if name in apart else None),
        temp_bytes=temps[name],
        grad_bytes=grad_bytes,
        temp_over_grad=(
          None if temps[name] is None else temps[name] / grad_bytes
        ),
        full_size_arrays=arrays[name],
      )
    )
  return rows


def median_rows(runs: list[list[dict]]) -> list[dict]:
  """Per (case, variant), the median over repeated runs of every number.

  Each run's ratios come from its own interleaved rounds; the median of
  those is steadier than one run on a machine whose speed drifts by 2x.
  """
  merged = []
  for same in zip(*runs):
    row = dict(same[0], repeats=len(same))
    for key, value in same[0].items():
      if isinstance(value, float):
        row[key] = float(np.median([r[key] for r in same]))
    merged.append(row)
  return merged


# ------------------------------------------------------------- UNet share


def unet_share(quick: bool, rounds: int) -> dict:
  """Train-step time of the example UNet with CE only and with CE + PEL."""
  from flax import nnx  # pylint: disable=import-outside-toplevel

  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  try:
    from examples.unet.models import UNet  # pylint: disable=import-outside-toplevel

    source = "examples.unet.models.UNet"
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"examples.unet not importable: {e!r}"}
  if quick:
    b, hw, width, depth, classes = 2, 64, 8, 2, 8
  else:
    b, hw, width, depth, classes = 8, 256, 32, 4, 8
  model = UNet(3, classes, width=width, depth=depth, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
  x = jax.random.normal(jax.random.PRNGKey(1), (b, hw, hw, 3))
  y = jax.random.randint(jax.random.PRNGKey(2), (b, hw, hw), 0, classes)

  def make_step(with_pel):
    @nnx.jit
    def step(model, opt, x, y):
      def loss_fn(model):
        logits = model(x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        if with_pel:
          ce = ce + pel_jax.pel_loss(logits, y, from_logits=True)
        return ce

      loss, grads = nnx.value_and_grad(loss_fn)(model)
      opt.update(model, grads)
      return loss

    return step

  steps = {"CE": make_step(False), "CE + PEL": make_step(True)}
  for s in steps.values():
    jax.block_until_ready(s(model, opt, x, y))
  samples = {k: [] for k in steps}
  for _ in range(rounds):
    for k, s in steps.items():
      t0 = time.perf_counter()
      jax.block_until_ready(s(model, opt, x, y))
      samples[k].append(time.perf_counter() - t0)
  ms = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
  logits_shape = (b, hw, hw, classes)
  lx = jax.random.normal(jax.random.PRNGKey(3), logits_shape)
  vg = jax.jit(
    jax.value_and_grad(lambda z: pel_jax.pel_loss(z, y, from_logits=True))
  )
  pel_ms = _time_round_robin({"pel": vg}, {"pel": (lx,)}, rounds * 3, 0.05)[
    "pel"
  ]
  return dict(
    model=source,
    input=[b, hw, hw, 3],
    width=width,
    depth=depth,
    classes=classes,
    step_ce_ms=ms["CE"],
    step_ce_pel_ms=ms["CE + PEL"],
    share_from_difference=(ms["CE + PEL"] - ms["CE"]) / ms["CE + PEL"],
    pel_value_grad_ms=pel_ms,
    share_isolated=pel_ms / ms["CE + PEL"],
  )


# ------------------------------------------------------------------ output


def machine() -> dict:
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  dev = jax.devices()[0]
  info = dict(
    cpu=cpu,
    cores=os.cpu_count(),
    jax=jax.__version__,
    backend=jax.default_backend(),
    device=str(dev.device_kind),
    date=datetime.date.today().isoformat(),
    load=" ".join(f"{v:.2f}" for v in os.getloadavg()),
    glibc_tunables=os.environ.get("GLIBC_TUNABLES"),
  )
  if monai_missing() is None:
    import monai  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    info.update(monai=monai.__version__, torch=torch.__version__)
  return info


def _fmt_bytes(n):
  if n is None:
    return "n/a"
  return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _opt(v):
  return "–" if v is None else f"{v:.2f}"


def _faults(r: dict) -> str:
  faults = r.get("faults_per_call")  # absent from older result files
  return "–" if faults is None else f"{faults:.0f}"


def _case_cell(r: dict) -> str:
  return f"{r['case']} [{'×'.join(map(str, r['shape']))}]"


def _markdown(columns, rows: list[dict]) -> str:
  """A markdown table; `columns` are `(header, right-aligned, cell(row))`."""
  lines = [
    "| " + " | ".join(head for head, _, _ in columns) + " |",
    "|" + "|".join("---:" if right else "---" for _, right, _ in columns) + "|",
  ]
  for r in rows:
    lines.append("| " + " | ".join(cell(r) for _, _, cell in columns) + " |")
  return "\n".join(lines)


def _temp_columns():
  return [
    ("grad temp", True, lambda r: _fmt_bytes(r["temp_bytes"])),
    ("temp ÷ grad", True, lambda r: _opt(r["temp_over_grad"])),
  ]


def table(rows: list[dict]) -> str:
  columns = [
    ("case", False, _case_cell),
    ("variant", False, lambda r: r["variant"]),
    ("ms", True, lambda r: f"{r['ms']:.2f}"),
    ("× a*b", True, lambda r: f"{r['vs_roofline']:.2f}"),
    ("÷ pel_jax", True, lambda r: f"{r['over_pel']:.2f}"),
    ("plain autodiff ÷ this", True, lambda r: f"{r['plain_over_this']:.2f}"),
    ("optax dice ÷ this", True, lambda r: _opt(r["optax_over_this"])),
  ]
  faults = [("page faults/call", True, _faults)]
  return _markdown(columns + _temp_columns() + faults, rows)


def _goal(r: dict) -> str:
  if r["variant"] in NO_GOAL:
    return "– (CE)"
  return "yes" if r["over_plain"] <= 1 + OVERHEAD_GOAL else "**no**"


def option_table(rows: list[dict]) -> str:
  """One line per (case, option): time, ratio to plain, XLA temporaries."""
  columns = [
    ("case", False, _case_cell),
    ("option", False, lambda r: r["variant"]),
    ("ms", True, lambda r: f"{r['ms']:.2f}"),
    ("÷ plain", True, lambda r: f"{r['over_plain']:.2f}"),
    ("× a*b", True, lambda r: f"{r['vs_roofline']:.2f}"),
    (f"≤ {1 + OVERHEAD_GOAL:.2f}× plain", False, _goal),
    ("CE apart ÷ fused", True, lambda r: _opt(r["apart_over_this"])),
  ]
  arrays = [("full-size arrays", True, lambda r: str(r["full_size_arrays"]))]
  return _markdown(columns + _temp_columns() + arrays, rows)


def sweep_table(rows: list[dict]) -> str:
  """One line per case: pel_jax against optax's Dice and plain autodiff."""
  by_case = {}
  for r in rows:
    by_case.setdefault(r["case"], {})[r["variant"]] = r
  head = (
    "| case | pel_jax ms | optax dice ms | plain autodiff ms |"
    " optax ÷ pel_jax | plain ÷ pel_jax | pel_jax temp ÷ grad |"
    " optax temp ÷ grad |\n|---|---:|---:|---:|---:|---:|---:|---:|"
  )
  lines = [head]
  for case, v in by_case.items():
    pel, opt, plain = (
      v["pel_jax"],
      v["optax dice (one-hot)"],
      v["plain jnp autodiff"],
    )
    shape = "×".join(map(str, pel["shape"]))
    lines.append(
      f"| {case} [{shape}] | {pel['ms']:.2f} | {opt['ms']:.2f} |"
      f" {plain['ms']:.2f} | {pel['optax_over_this']:.2f} |"
      f" {pel['plain_over_this']:.2f} | {_opt(pel['temp_over_grad'])} |"
      f" {_opt(opt['temp_over_grad'])} |"
    )
  return "\n".join(lines)


_HERE = os.path.dirname(os.path.abspath(__file__))


def save(path: str, text: str, overwrite: bool) -> None:
  """Writes `text` to `path`, refusing to replace a file unless `overwrite`."""
  mode = "w" if overwrite else "x"
  try:
    with open(path, mode) as f:
      f.write(text)
  except FileExistsError:
    raise SystemExit(
      f"{path} exists: pass --overwrite to replace it, or"
      " choose another --json path"
    ) from None


def parse_classes(text: str) -> tuple[int, ...]:
  if text == "all":
    return SWEEP_CLASSES
  try:
    classes = tuple(int(c) for c in text.split(","))
  except ValueError:
    classes = ()
  if not classes or min(classes) < 1:
    raise argparse.ArgumentTypeError(
      f"--classes takes 'all' or positive integers like 2,8,21; got {text!r}"
    )
  return classes


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  size = ap.add_mutually_exclusive_group()
  size.add_argument("--quick", action="store_true", help="small shapes")
  size.add_argument(
    "--tiny",
    action="store_true",
    help="toy shapes: checks the harness, times nothing useful",
  )
  ap.add_argument(
    "--classes",
    type=parse_classes,
    default=None,
    help="class-count sweep instead of the suite: 'all' ("
    + ",".join(map(str, SWEEP_CLASSES))
    + ") or a list",
  )
  ap.add_argument(
    "--dims", default="2,3", help="sweep dimensionalities (default 2,3)"
  )
  ap.add_argument(
    "--options",
    action="store_true",
    help="only the per-option table (every family option against plain)",
  )
  ap.add_argument(
    "--no-options",
    action="store_true",
    help="leave the per-option table out of the default run",
  )
  ap.add_argument(
    "--only",
    default=None,
    help="run only the suite cases (with --options: the option-table"
    " cases) whose name contains this",
  )
  ap.add_argument("--json", default=None, help="save the numbers to this file")
  ap.add_argument(
    "--overwrite",
    action="store_true",
    help="let --json replace an existing file",
  )
  ap.add_argument(
    "--write-results",
    action="store_true",
    help="replace the committed results_cpu[_classes|_options].{json,md}"
    " (full sizes, whole suite only)",
  )
  ap.add_argument(
    "--exponent",
    type=float,
    default=None,
    help="the option table's exponent n, plain row included (default:"
    " pel_loss's)",
  )
  ap.add_argument("--rounds", type=int, default=None)
  ap.add_argument("--no-unet", action="store_true")
  ap.add_argument(
    "--no-monai",
    action="store_true",
    help="leave out MONAI's DiceLoss even when importable",
  )
  ap.add_argument(
    "--repeat",
    type=int,
    default=None,
    help="whole-suite runs; medians reported (default 3, quick 1)",
  )
  args = ap.parse_args(argv)
  small = args.quick or args.tiny
  if args.write_results and (small or args.only):
    ap.error(
      "--write-results replaces the committed full-size results: it"
      " cannot be combined with --quick, --tiny or --only"
    )
  if args.write_results and args.exponent is not None:
    ap.error("--write-results takes the default exponent (no --exponent)")
  if args.options and (args.classes or args.no_options):
    ap.error("--options cannot be combined with --classes or --no-options")
  if args.json and os.path.exists(args.json) and not args.overwrite:
    ap.error(f"--json {args.json} exists: pass --overwrite to replace it")
  rounds = args.rounds or (1 if args.tiny else 7 if args.quick else 25)
  repeat = args.repeat or (1 if small else 3)
  sample_s = 0.0 if args.tiny else 0.02 if args.quick else 0.05
  sized = "tiny" if args.tiny else "quick" if args.quick else "full"
  matches = lambda c: args.only is None or args.only in c.name
  option_set = []
  if args.classes:
    dims = tuple(int(d) for d in args.dims.split(","))
    cases, variant_set = sweep_cases(args.classes, sized, dims), sweep_variants
    stem = "results_cpu_classes"
  elif args.options:
    cases, variant_set, stem = [], variants, "results_cpu_options"
    option_set = [c for c in option_cases(sized) if matches(c)]
  else:
    cases = {"tiny": tiny_cases, "quick": quick_cases, "full": full_cases}[
      sized
    ]()
    cases = [c for c in cases if matches(c)]
    variant_set, stem = variants, "results_cpu"
    if not (args.only or args.no_options):
      option_set = option_cases(sized)
  if not cases and not option_set:
    ap.error(f"no case matches --only {args.only!r}")
  missing = "left out (--no-monai)" if args.no_monai else monai_missing()
  monai = not args.classes and missing is None
  info = machine()
  out = [
    f"Machine: {info['cpu']}, {info['cores']} cores, jax {info['jax']},"
    f" backend {info['backend']} ({info['device']}), {info['date']},"
    f" load average {info['load']}"
    + (
      f", GLIBC_TUNABLES={info['glibc_tunables']}"
      if info["glibc_tunables"]
      else ""
    )
  ]
  print(out[0], flush=True)
  runs, option_runs = [], []
  for i in range(repeat):
    rows, option_rows = [], []
    for case in cases:
      rows += run_case(case, rounds, sample_s, variant_set, monai)
      print(
        f"  run {i + 1}/{repeat} done: {case.name}", file=sys.stderr, flush=True
      )
    for case in option_set:
      option_rows += run_option_case(case, rounds, sample_s, args.exponent)
      print(
        f"  run {i + 1}/{repeat} done: options, {case.name}",
        file=sys.stderr,
        flush=True,
      )
    runs.append(rows)
    option_runs.append(option_rows)
  rows, option_rows = median_rows(runs), median_rows(option_runs)
  out.append(f"Medians of {repeat} whole-suite run(s), {rounds} rounds each.")
  if cases:
    out.append(sweep_table(rows) if args.classes else table(rows))
  if cases and not args.classes:
    out.append(
      f"MONAI row: {missing}"
      if missing
      else f"MONAI row: monai {info.get('monai')}, torch {info.get('torch')}"
    )
  if option_set:
    smoothing = (
      "" if has_label_smoothing() else " (no ce_label_smoothing here: no row)"
    )
    out.append(
      "Family options, value+grad against the plain option on the same"
      f" inputs (goal: ≤ {1 + OVERHEAD_GOAL:.2f}× plain, CE aside)"
      f"{'' if args.exponent is None else f', exponent {args.exponent:g}'}"
      f"{smoothing}:"
    )
    out.append(option_table(option_rows))
  unet = None
  if not (args.no_unet or args.classes or args.only or args.options):
    unet = unet_share(small, 3 if small else 5)
    out.append("UNet train step: " + json.dumps(unet, indent=1))
  print("\n".join(out[1:]))
  payload = json.dumps(
    dict(
      machine=info,
      size=sized,
      rounds=rounds,
      repeat=repeat,
      rows=rows,
      runs=runs,
      options=option_rows,
      option_runs=option_runs,
      unet=unet,
    ),
    indent=1,
  )
  if args.json:
    save(args.json, payload, args.overwrite)
  if args.write_results:
    save(os.path.join(_HERE, stem + ".json"), payload, overwrite=True)
    save(
      os.path.join(_HERE, stem + ".md"), "\n".join(out) + "\n", overwrite=True
    )
  return rows + option_rows, unet


if __name__ == "__main__":
  main()

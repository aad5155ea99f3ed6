"""The training loss of the example: a weighted sum of pel_jax losses and CE.

One home for the PEL authors' setting (`AUTHORS_PEL`) and the loss names
(`REGION_LOSSES`), which the study (experiments/) imports too. The
`boundary` term (`pel_jax.boundary_loss`) has a weight that ramps up with
the optimizer step (`boundary_weight`).
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import inspect
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pel_jax

# The authors' PEL: 1 - 20 * sum((p g)^3) / (sum p + sum g), batch sums.
AUTHORS_PEL = dict(
  exponent=3.0, scale=10.0, fp_weight=0.5, fn_weight=0.5, batch=True
)

# `--loss` names of the region losses; "ce" is the softmax cross-entropy.
REGION_LOSSES: dict[str, Callable[..., jax.Array]] = {
  "dice": pel_jax.dice_loss,
  "jaccard": pel_jax.jaccard_loss,
  "tversky": pel_jax.tversky_loss,
  "pel": pel_jax.pel_loss,
}
# Terms that are a mean of per-pixel (CE) or per-sample-and-class
# (boundary) values: `_mean_term`.
LOSS_NAMES = (*REGION_LOSSES, "ce", "boundary")


def parse_loss(spec: str) -> tuple[tuple[float, str], ...]:
  """'pel+0.5*ce' -> ((1.0, 'pel'), (0.5, 'ce')); weights finite and > 0."""
  names = "|".join(LOSS_NAMES)
  terms = []
  for term in spec.replace(" ", "").split("+"):
    m = re.fullmatch(rf"(?:([^*]+)\*)?({names})", term)
    if not m:
      raise ValueError(
        f"bad --loss term {term!r} in {spec!r}: use"
        f" {', '.join(LOSS_NAMES)}, optionally 'w*' weighted"
      )
    try:
      weight = float(m.group(1) or 1.0)
    except ValueError:
      weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
      raise ValueError(
        f"bad --loss weight {m.group(1)!r} in {spec!r}: a"
        " weight must be a finite number > 0"
      )
    terms.append((weight, m.group(2)))
  return tuple(terms)


def region_loss_fn(name: str, cfg) -> Callable[..., jax.Array]:
  """The pel_jax loss `name` with the config's hyperparameters bound.

  `pel` defaults to the authors' weights (0.5/0.5); `tversky` to pel_jax's.
  """
  if name == "pel":
    return functools.partial(
      pel_jax.pel_loss,
      exponent=cfg.exponent,
      scale=cfg.scale,
      fp_weight=(
        AUTHORS_PEL["fp_weight"] if cfg.fp_weight is None else cfg.fp_weight
      ),
      fn_weight=(
        AUTHORS_PEL["fn_weight"] if cfg.fn_weight is None else cfg.fn_weight
      ),
    )
  if name == "tversky":
    kw = {
      k: v
      for k, v in (("fp_weight", cfg.fp_weight), ("fn_weight", cfg.fn_weight))
      if v is not None
    }
    return functools.partial(pel_jax.tversky_loss, **kw)
  return REGION_LOSSES[name]


def boundary_weight(cfg, step) -> jax.Array:
  """The ramp factor of the `boundary` term at optimizer step `step`.

  Linear from 0.01 to 1 over R = `cfg.boundary_ramp` steps (unset: the
  whole run, `cfg.steps`), then 1; R = 0: always 1.

      r(t) = clip(t / R, 0.01, 1)

  Kervadec et al. (MIDL 2019) start the boundary weight at 0.01 and add
  0.01 per epoch; the example counts steps, not epochs, so the run plays
  the part of their first 100 epochs. `step` may be traced (the
  optimizer's count, on the device).
  """
  ramp = cfg.steps if cfg.boundary_ramp is None else cfg.boundary_ramp
  if ramp < 0:
    raise ValueError(
      f"--boundary-ramp {ramp}: a number of steps >= 0 (0: no ramp)"
    )
  if ramp == 0:
    return jnp.float32(1.0)
  return jnp.clip(jnp.asarray(step, jnp.float32) / ramp, 0.01, 1.0)


def _ramp(name: str, cfg, step):
  """The schedule factor of term `name` (1 for every term but boundary)."""
  return boundary_weight(cfg, step) if name == "boundary" else 1.0


def _mean_term(name: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The values whose mean is term `name`: CE per pixel, boundary per
  sample and foreground class (`pel_jax.boundary_loss`, which computes the
  targets' signed distance maps inside the step, on the device; class 0 is
  left out, as the reference code's `idc=[1]`)."""
  if name == "ce":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return pel_jax.boundary_loss(
    logits,
    labels,
    from_logits=True,
    include_background=False,
    reduction="none",
  )


def make_loss(cfg) -> Callable[..., jax.Array]:
  """`loss(logits, labels, step=0)` for the weighted sum in `cfg.loss`.

  `step` (the optimizer's step count) sets the `boundary` term's ramp
  (`boundary_weight`); the other terms ignore it. Under `jit` with the
  batch sharded over a mesh, every term is the global batch value: the
  compiler makes the sums global, no `axis_name` needed.
  With `cfg.fused_head`, `loss(head_inputs, labels, step=0)`
  (`models.HeadInputs`): the same loss by `pel_jax.head_loss`, without the
  logits (`head_calls`, which refuses a `boundary` term).
  """
  if cfg.fused_head:
    calls = head_calls(cfg)
    return lambda head, labels, step=0: sum(
      w * pel_jax.head_loss(*head, labels, **o) for w, o in calls
    )
  terms = [
    (w, name, region_loss_fn(name, cfg) if name in REGION_LOSSES else None)
    for w, name in parse_loss(cfg.loss)
  ]

  def loss(logits: jax.Array, labels: jax.Array, step=0) -> jax.Array:
    logits = logits.astype(jnp.float32)
    total = 0.0
    for w, name, fn in terms:
      if fn is None:
        value = _mean_term(name, logits, labels).mean()
      else:
        value = fn(logits, labels, from_logits=True, batch=cfg.batch_dice)
      total = total + w * _ramp(name, cfg, step) * value
    return total

  return loss


# fp/fn weights that the fixed-weight variants pass to `pel_loss`.
_FIXED_WEIGHTS = {"dice": (0.5, 0.5), "jaccard": (1.0, 1.0)}


def region_options(name: str, cfg) -> dict:
  """The `pel_loss` options that equal `region_loss_fn(name, cfg)`.

  One dict serves `pel_jax.region_stats` and `pel_jax.loss_from_stats`.
  """
  if name == "pel":
    return dict(region_loss_fn(name, cfg).keywords)
  if name == "tversky":
    defaults = inspect.signature(pel_jax.tversky_loss).parameters
    fp, fn = (
      defaults[k].default if v is None else v
      for k, v in (("fp_weight", cfg.fp_weight), ("fn_weight", cfg.fn_weight))
    )
  else:
    fp, fn = _FIXED_WEIGHTS[name]
  return dict(exponent=1.0, scale=1.0, fp_weight=fp, fn_weight=fn)


def head_calls(cfg) -> list[tuple[float, dict]]:
  """`make_loss(cfg)` as weighted `pel_jax.head_loss` calls, one per region term.

  The CE rides on the first call (`ce_weight`, the same pixel mean as
  optax's); CE alone is a Dice call whose classes all weigh 0. Every
  `--loss` term can be written so; a term that could not would be refused
  here, naming `--fused-head`.
  """
  terms = parse_loss(cfg.loss)
  unsupported = sorted({n for _, n in terms} - {*REGION_LOSSES, "ce"})
  if unsupported:
    raise ValueError(
      f"--fused-head: the --loss terms {unsupported} are not functions of"
      " the region sums that pel_jax.head_loss computes; drop --fused-head"
    )
  region = [(w, region_options(n, cfg)) for w, n in terms if n != "ce"]
  if not region:
    zeros = np.zeros(cfg.classes, np.float32)
    region = [(1.0, dict(region_options("dice", cfg), class_weights=zeros))]
  calls = [
    (w, dict(o, from_logits=True, batch=cfg.batch_dice)) for w, o in region
  ]
  ce = sum(w for w, n in terms if n == "ce")
  if ce:
    calls[0][1]["ce_weight"] = ce / calls[0][0]
  return calls


class StatsLoss(NamedTuple):
  """`make_loss` split into additive statistics and the loss of their sum.

  `loss(stats(logits, labels), step)` is `make_loss(cfg)(logits, labels,
  step)`, and the
  statistics of micro-batches added leaf by leaf (or stacked along a new
  leading axis, when `stack`: per-sample region losses) give the loss of
  the whole batch: what `pel_jax.accumulated_value_and_grad` takes.
  """

  stats: Callable[[jax.Array, jax.Array], list]
  loss: Callable[[list], jax.Array]
  stack: bool


def make_stats_loss(cfg) -> StatsLoss:
  """`make_loss(cfg)` as a `StatsLoss`: CE and boundary as a sum and a count.

  With `cfg.fused_head`, `stats(head_inputs, labels)`: `pel_jax.head_stats`
  of each of `head_calls(cfg)`.
  """
  if cfg.fused_head:
    return _head_stats_loss(cfg)
  terms = [
    (
      w,
      name,
      None
      if name not in REGION_LOSSES
      else dict(
        region_options(name, cfg), from_logits=True, batch=cfg.batch_dice
      ),
    )
    for w, name in parse_loss(cfg.loss)
  ]
  stack = not cfg.batch_dice

  def stats(logits: jax.Array, labels: jax.Array) -> list:
    logits = logits.astype(jnp.float32)
    out = []
    for _, name, o in terms:
      if o is None:  # a mean as a sum and a count: both add up
        v = _mean_term(name, logits, labels)
        out.append((v.sum(), jnp.asarray(v.size, jnp.float32)))
      else:
        out.append(pel_jax.region_stats(logits, labels, **o))
    return out

  def loss(stats: list, step=0) -> jax.Array:
    total = 0.0
    for (w, name, o), s in zip(terms, stats):
      if o is None:
        value = s[0].sum() / s[1].sum()  # stacked [K] or summed: the same
      else:
        value = pel_jax.loss_from_stats(_stacked(s, stack), **o)
      total = total + w * _ramp(name, cfg, step) * value
    return total

  return StatsLoss(stats, loss, stack)


def _stacked(stats, stack: bool):
  """`[K, B/K, ...]` per-sample statistics of K micro-batches -> `[B, ...]`."""
  if not stack:
    return stats
  return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), stats)


def _head_stats_loss(cfg) -> StatsLoss:
  calls = head_calls(cfg)
  stack = not cfg.batch_dice

  def stats(head, labels: jax.Array) -> list:
    return [pel_jax.head_stats(*head, labels, **o) for _, o in calls]

  def loss(stats: list, step=0) -> jax.Array:
    del step  # No `boundary` term here (`head_calls`).
    return sum(
      w * pel_jax.loss_from_stats(_stacked(s, stack), **o)
      for (w, o), s in zip(calls, stats)
    )

  return StatsLoss(stats, loss, stack)

"""The training loss of the example: a weighted sum of pel_jax losses and CE.

One home for the PEL authors' setting (`AUTHORS_PEL`) and the loss names
(`REGION_LOSSES`), which the study (experiments/) imports too.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import pel_jax

# The authors' PEL: 1 - 20 * sum((p g)^3) / (sum p + sum g), batch sums.
AUTHORS_PEL = dict(exponent=3.0, scale=10.0, fp_weight=0.5, fn_weight=0.5,
                   batch=True)

# `--loss` names of the region losses; "ce" is the softmax cross-entropy.
REGION_LOSSES: dict[str, Callable[..., jax.Array]] = {
    "dice": pel_jax.dice_loss, "jaccard": pel_jax.jaccard_loss,
    "tversky": pel_jax.tversky_loss, "pel": pel_jax.pel_loss}
LOSS_NAMES = (*REGION_LOSSES, "ce")


def parse_loss(spec: str) -> tuple[tuple[float, str], ...]:
  """'pel+0.5*ce' -> ((1.0, 'pel'), (0.5, 'ce')); weights finite and > 0."""
  names = "|".join(LOSS_NAMES)
  terms = []
  for term in spec.replace(" ", "").split("+"):
    m = re.fullmatch(rf"(?:([^*]+)\*)?({names})", term)
    if not m:
      raise ValueError(f"bad --loss term {term!r} in {spec!r}: use"
                       f" {', '.join(LOSS_NAMES)}, optionally 'w*' weighted")
    try:
      weight = float(m.group(1) or 1.0)
    except ValueError:
      weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
      raise ValueError(f"bad --loss weight {m.group(1)!r} in {spec!r}: a"
                       " weight must be a finite number > 0")
    terms.append((weight, m.group(2)))
  return tuple(terms)


def region_loss_fn(name: str, cfg) -> Callable[..., jax.Array]:
  """The pel_jax loss `name` with the config's hyperparameters bound.

  `pel` defaults to the authors' weights (0.5/0.5); `tversky` to pel_jax's.
  """
  if name == "pel":
    return functools.partial(
        pel_jax.pel_loss, exponent=cfg.exponent, scale=cfg.scale,
        fp_weight=(AUTHORS_PEL["fp_weight"] if cfg.fp_weight is None
                   else cfg.fp_weight),
        fn_weight=(AUTHORS_PEL["fn_weight"] if cfg.fn_weight is None
                   else cfg.fn_weight))
  if name == "tversky":
    kw = {k: v for k, v in (("fp_weight", cfg.fp_weight),
                            ("fn_weight", cfg.fn_weight)) if v is not None}
    return functools.partial(pel_jax.tversky_loss, **kw)
  return REGION_LOSSES[name]


def make_loss(cfg) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`loss(logits, labels)` for the weighted sum in `cfg.loss`.

  Under `jit` with the batch sharded over a mesh, every term is the global
  batch value: the compiler makes the sums global, no `axis_name` needed.
  """
  terms = [(w, None if name == "ce" else region_loss_fn(name, cfg))
           for w, name in parse_loss(cfg.loss)]

  def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32)
    total = 0.0
    for w, fn in terms:
      if fn is None:
        value = optax.softmax_cross_entropy_with_integer_labels(
            logits, labels).mean()
      else:
        value = fn(logits, labels, from_logits=True, batch=cfg.batch_dice)
      total = total + w * value
    return total

  return loss

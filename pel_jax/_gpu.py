"""The softmax region sums as XLA GPU rewards them (lowered for CUDA only).

Designed from programs compiled for an H100 and an A100 without the device
(benchmarks/bench_compiled.py; numbers in benchmarks/README.md). What XLA
GPU does with the generic core, and what this layout does instead:

* It fuses an elementwise producer into a reduction, but it does not
  duplicate an expensive one (an `exp`) into several consumers: the softmax
  `p`, read by each region sum and by the backward, was written out as a
  full-size array. Here every sum is one row of a single reduction over
  `[..., K, C]`, each row `exp(a_k l)` times a cheap coefficient, with
  `l = x - lse` the log-probabilities: the exponential sits after the
  broadcast to K rows, so nothing is shared and nothing written.
* The class max and the sum of exponentials are one row reduction (an
  online log-sum-exp, a variadic reduce), and its result, `lse` per pixel
  (`1/C` of the logits), is the custom VJP's residual: the backward reads
  it instead of reducing over the classes again.
* The backward is one row reduction (`sum_c v_c`) and one elementwise pass
  that writes the gradient: `dL/dx = v - p sum_c v`, with `v = dL/dl`.

Two classes get their own form: the softmax of two logits is the sigmoid
of their difference, `log p_c = log_sigmoid(x_c - x_other)`, so neither
pass reduces over the classes and no `lse` is kept (per pixel, it would
weigh half the logits). The forward computes each row's log-sigmoid from
the difference broadcast to its row (a log-sigmoid shared by the rows
would be written out, as `p` was), and the backward is elementwise:
`dL/dx_c = p_other v_c - p_c v_other`.

It serves the softmax with two classes or `C >= MIN_CLASSES` (not
`soft_labels`): with three, the compiled generic core moved fewer bytes.
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pel_jax import _numerics
from pel_jax import _sums

# Where this layout is lowered; tests set ("cpu",) to run it here.
PLATFORMS = ("cuda",)
# With 3 classes the generic core moved fewer bytes on the H100.
MIN_CLASSES = 4


def handles(cfg, classes: int) -> bool:
  """Whether `cfg` (a `_sums.StatsConfig`) takes this layout on GPU."""
  return (
    cfg.activation == "softmax"
    and not cfg.soft_labels
    and (classes == 2 or classes >= MIN_CLASSES)
  )


def per_platform(branch) -> dict:
  """`lax.platform_dependent` keywords lowering `branch` for `PLATFORMS`."""
  return {platform: branch for platform in PLATFORMS}


@jax.custom_jvp
def log_sum_exp(x: jax.Array) -> jax.Array:
  """`log sum_c exp(x_c)` per pixel, `[B, *S, 1]`, in one variadic reduce.

  Pairs (m, t) combine as (max, t_a e^(m_a - M) + t_b e^(m_b - M)): the class
  max and the shifted sum in one pass (two row reductions otherwise). Its
  derivative is the softmax (`_log_sum_exp_jvp`): JAX's JVP of a variadic
  reduce fails on a symbolic-zero tangent, and every platform's branch is
  differentiated (forward-over-reverse differentiates the custom VJP's
  forward), the CPU's included.
  """

  def combine(a, b):
    (m_a, t_a), (m_b, t_b) = a, b
    m = jnp.maximum(m_a, m_b)
    # Where both are -inf (a row of -inf logits) the shifts are 0, not NaN.
    shift_a = jnp.where(m_a == m, 0, m_a - m)
    shift_b = jnp.where(m_b == m, 0, m_b - m)
    return m, t_a * jnp.exp(shift_a) + t_b * jnp.exp(shift_b)

  init = (jnp.array(-jnp.inf, x.dtype), jnp.array(0, x.dtype))
  peak, total = lax.reduce((x, jnp.ones_like(x)), init, combine, (x.ndim - 1,))
  return (peak + jnp.log(total))[..., None]


@log_sum_exp.defjvp
def _log_sum_exp_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  lse = log_sum_exp(x)
  return lse, jnp.sum(jnp.exp(x - lse) * dx, axis=-1, keepdims=True)


def keeps_lse(classes: int) -> bool:
  """Whether `forward` returns a per-pixel `lse` (not with two classes)."""
  return classes != 2


def _two_class_log_p(x: jax.Array, rows: int) -> jax.Array:
  """`log p`, `[B, *S, rows, 2]`, of two classes' logits `x`, `[B, *S, 2]`.

  Each of the `rows` copies is its own log-sigmoid of `±(x_1 - x_0)`: the
  signs are a constant of the rows' shape, so XLA cannot hoist the
  log-sigmoid before the broadcast and share (and write out) it.
  """
  d = x[..., 1] - x[..., 0]
  signs = np.tile(np.array([-1, 1], x.dtype), (rows, 1))
  return jax.nn.log_sigmoid(d[..., None, None] * signs)


def _targets(cfg, x, targets):
  """`(g, keep)`: targets as floats `[B, *S, C]` and the kept pixels or None."""
  keep = None
  if jnp.issubdtype(targets.dtype, jnp.integer):
    if cfg.ignore_index is not None:
      keep = targets != cfg.ignore_index
    g = _sums._is_label(targets, x.shape[-1]).astype(x.dtype)
  else:
    g = targets.astype(x.dtype)
  return g, keep


def _inputs(cfg, predictions, targets, mask):
  """`(x, g, w)`: masked logits and targets (compute dtype), weight or None."""
  x = predictions.astype(_numerics.compute_dtype(predictions.dtype))
  g, keep = _targets(cfg, x, targets)
  if mask is not None:
    keep = mask if keep is None else keep & mask
  w = None
  if keep is not None:
    # Excluded pixels' inputs become 0 before any arithmetic (double where).
    x = jnp.where(keep[..., None], x, 0)
    g = jnp.where(keep[..., None], g, 0)
    w = keep[..., None].astype(x.dtype)
  return x, g, w


def forward(cfg, predictions, targets, mask):
  """`(stats, lse)`: the local region sums (before the batch sum) and `lse`.

  `lse` is None with two classes (see `keeps_lse`).
  """
  x, g, w = _inputs(cfg, predictions, targets, mask)
  powers = [1.0, cfg.exponent] + [2.0 if cfg.squared else 1.0]
  if keeps_lse(x.shape[-1]):
    lse = log_sum_exp(x)
    log_p = (x - lse)[..., None, :]
  else:
    lse = None
    log_p = _two_class_log_p(x, len(powers) + cfg.cross_entropy)
  coefficients = [g, g, jnp.ones_like(g)]
  linear = [g] + ([g * g] if cfg.squared else [])
  if cfg.cross_entropy:
    q = _sums._smoothed_targets(cfg, g)
    linear.append(-q * log_p[..., -1, :])
  a = jnp.asarray(powers, x.dtype)[:, None]
  rows = jnp.concatenate(
    [
      jnp.exp(a * log_p[..., : len(powers), :]) * jnp.stack(coefficients, -2),
      jnp.stack(linear, -2),
    ],
    axis=-2,
  )
  if w is not None:
    rows = rows * w[..., None]
  axes = tuple(range(0 if cfg.batch else 1, x.ndim - 1))
  sums = jnp.sum(rows, axis=axes)
  tp, numer, sum_p = sums[..., 0, :], sums[..., 1, :], sums[..., 2, :]
  sum_g = sums[..., 3, :]
  stats = _sums.RegionStats(tp, None if cfg.squared else sum_p, sum_g, numer)
  if cfg.squared:
    stats = stats._replace(sum_p2=sum_p, sum_g2=sums[..., 4, :])
  if cfg.cross_entropy:
    count = _sums.term_count(cfg, x.shape, x.dtype, w)
    stats = stats._replace(ce=jnp.sum(sums[..., -1, :], -1), count=count)
  return stats, lse


def _log_p_pull(cfg, log_p, g, w, ct, ct_ce):
  """`v = dL/dl` per entry of `log_p = l`, and `p^n`."""
  p = jnp.exp(log_p)
  n = cfg.exponent
  p_n = jnp.exp(n * log_p)
  if cfg.squared:
    v = p * (ct.tp * g + 2 * ct.sum_p2 * p)
  else:
    v = p * (ct.tp * g + ct.sum_p)
  v = v + n * ct.numer * g * p_n
  if cfg.cross_entropy:
    v = v - ct_ce * _sums._smoothed_targets(cfg, g)
  if w is not None:
    v = v * w
  return v, p_n


def backward(cfg, predictions, targets, mask, lse, cotangent):
  """`(d_predictions, d_targets)`; `lse` is `forward`'s residual.

  With `l = x - lse` and `v = dL/dl` per entry, `dL/dx = v - p sum_c v`;
  with two classes (`p_0 + p_1 = 1`) that is `p_other v_c - p_c v_other`.
  """
  x, g, w = _inputs(cfg, predictions, targets, mask)
  pixels = (cotangent.tp.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  ct = jax.tree.map(
    lambda c: c.reshape(pixels), cotangent._replace(ce=None, count=None)
  )
  ct_ce = None
  if cfg.cross_entropy:
    ct_ce = cotangent.ce.reshape(pixels[:-1] + (1,))
  if keeps_lse(x.shape[-1]):
    log_p = x - lse
    v, p_n = _log_p_pull(cfg, log_p, g, w, ct, ct_ce)
    grad = v - jnp.exp(log_p) * jnp.sum(v, -1, keepdims=True)
  else:
    flip = lambda a: a[..., ::-1]
    log_p = jax.nn.log_sigmoid(x - flip(x))
    v, p_n = _log_p_pull(cfg, log_p, g, w, ct, ct_ce)
    # The other class's terms from their own expressions: flipped, this
    # class's would be read twice per entry, and XLA would write them out.
    log_q = jax.nn.log_sigmoid(flip(x) - x)
    v_other, _ = _log_p_pull(
      cfg, log_q, flip(g), w, jax.tree.map(flip, ct), ct_ce
    )
    grad = jnp.exp(log_q) * v - jnp.exp(log_p) * v_other
  d_predictions = grad.astype(predictions.dtype)
  d_targets = None
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    d_g = ct.tp * jnp.exp(log_p) + ct.numer * p_n + ct.sum_g
    if cfg.squared:
      d_g = d_g + 2 * ct.sum_g2 * g
    if cfg.cross_entropy:
      d_g = d_g - ct_ce * (1 - cfg.label_smoothing) * log_p
    if w is not None:
      d_g = d_g * w
    d_targets = d_g.astype(targets.dtype)
  return d_predictions, d_targets

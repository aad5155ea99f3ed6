"""Private fused core of the PEL family: per-class losses with a custom VJP.

Everything here is positional and already validated by `pel_jax._loss`.
Shapes: predictions `[B, *S, C]`, targets `[B, *S, C]` (float) or `[B, *S]`
(integer ids), mask `[B, *S]` bool or None. The core returns per-class losses
`[B, C]`, or `[1, C]` when the sums also run over the batch. It works on the
arrays' own shapes: reshaping them first costs a layout copy of the gradient
on CPU.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Hashable static configuration of one loss call (a custom_vjp nondiff arg)."""

  exponent: float
  scale: float
  fp_weight: float
  fn_weight: float
  smooth_nr: float
  smooth_dr: float
  activation: str | None  # None (probabilities), "sigmoid" or "softmax".
  batch: bool
  ignore_index: int | None
  axis_name: object = None


def compute_dtype(dtype) -> jnp.dtype:
  """Accumulation dtype: float32 for half and single precision, else float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _is_integer(x: float) -> bool:
  return float(x).is_integer()


def _power(p: jax.Array, exponent: float) -> jax.Array:
  """`p ** exponent` for p in [0, 1], finite with finite derivatives at p = 0.

  Integer exponents use `lax.integer_pow`. Other positive exponents use the
  double-`where` rule so that differentiating the result (as grad-of-grad does)
  never meets `0 * inf`. Negative exponents (the derivative of `p ** n` for
  n < 1) evaluate at `max(p, eps)`: the true value is infinite at p = 0.
  """
  if _is_integer(exponent) and exponent >= 0:
    return lax.integer_pow(p, int(exponent))
  if exponent < 0:
    return jnp.maximum(p, jnp.finfo(p.dtype).eps) ** exponent
  positive = p > 0
  return jnp.where(positive, jnp.where(positive, p, 1) ** exponent, 0)


# Up to this many classes, reductions over the class axis are unrolled into
# elementwise ops on slices: they then fuse with their neighbours into one
# vectorised loop, where XLA CPU makes a minor-axis reduce a separate fusion
# that needs its inputs materialised (8 classes: value+grad 69 -> 42 ms,
# gradient temporaries 4.0x -> 2.1x the gradient's size).
_UNROLL_CLASSES = 64


def _reduce_classes(op, x: jax.Array) -> jax.Array:
  """`op`-reduction of `x` over the class axis, keeping it (size 1)."""
  if x.shape[-1] > _UNROLL_CLASSES:
    reducer = jnp.max if op is jnp.maximum else jnp.sum
    return reducer(x, axis=-1, keepdims=True)
  return functools.reduce(op, [x[..., c : c + 1] for c in range(x.shape[-1])])


def _log_softmax(x: jax.Array) -> jax.Array:
  # The max is only a shift for stability: no gradient needs to flow into it.
  peak = lax.stop_gradient(_reduce_classes(jnp.maximum, x))
  shifted = x - peak
  return shifted - jnp.log(_reduce_classes(jnp.add, jnp.exp(shifted)))


def _activate(cfg: LossConfig, x: jax.Array):
  """Returns `(p, p ** n)` in the compute dtype, `p ** n` in log space for logits."""
  x = x.astype(compute_dtype(x.dtype))
  n = cfg.exponent
  if cfg.activation is None:
    return x, _power(x, n)
  if cfg.activation == "sigmoid":
    log_p = jax.nn.log_sigmoid(x)
    p = jax.nn.sigmoid(x)
  else:
    log_p = _log_softmax(x)
    p = jnp.exp(log_p)
  p_n = lax.integer_pow(p, int(n)) if _is_integer(n) else jnp.exp(n * log_p)
  return p, p_n


def _pixel_terms(cfg: LossConfig, predictions, targets, mask):
  """`(p, p^n, g, w)`, all `[B, *S, C]` but the pixel weight `w` `[B, *S, 1]`.

  Integer ids are compared against the class index instead of one-hot
  encoded; XLA fuses the comparison into the consumers, so no `[B, *S, C]`
  array is materialised. Ids outside `[0, C)` match no class. Excluded pixels
  (`where`, `ignore_index`) have their inputs replaced by 0 before any
  arithmetic (the double-`where` rule), so a NaN or inf there reaches neither
  a sum nor a gradient. `w` is None when no pixel is excluded.
  """
  integer = jnp.issubdtype(targets.dtype, jnp.integer)
  if integer and cfg.ignore_index is not None:
    keep = targets != cfg.ignore_index
    mask = keep if mask is None else mask & keep
  keep = None if mask is None else mask[..., None]
  if keep is not None:
    predictions = jnp.where(keep, predictions, 0)
  p, p_n = _activate(cfg, predictions)
  if integer:
    ndim = p.ndim
    classes = lax.broadcasted_iota(
        targets.dtype, (1,) * (ndim - 1) + (p.shape[-1],), ndim - 1
    )
    g = (targets[..., None] == classes).astype(p.dtype)
  else:
    g = targets.astype(p.dtype)
    if keep is not None:
      g = jnp.where(keep, g, 0)
  w = None if keep is None else keep.astype(p.dtype)
  return p, p_n, g, w


def _sum_axes(cfg: LossConfig, ndim: int) -> tuple[int, ...]:
  return tuple(range(0 if cfg.batch else 1, ndim - 1))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _sum_together(axes: tuple[int, ...], *operands: jax.Array):
  """Sums of several same-shape arrays over `axes` in ONE variadic reduce.

  On XLA CPU one pass over all operands is several times faster than a
  `jnp.sum` each. The custom JVP exists because JAX's JVP of a variadic
  reduce fails on symbolic-zero tangents (e.g. integer targets under
  grad-of-grad); sums are linear, so tangents are summed plainly.
  """
  zero = jnp.zeros((), operands[0].dtype)
  return lax.reduce(
      operands,
      (zero,) * len(operands),
      lambda xs, ys: tuple(x + y for x, y in zip(xs, ys)),
      axes,
  )


@_sum_together.defjvp
def _sum_together_jvp(axes, primals, tangents):
  return (
      _sum_together(axes, *primals),
      tuple(jnp.sum(t, axis=axes) for t in tangents),
  )


def _class_sums(cfg: LossConfig, predictions, targets, mask):
  """The four per-class sums `(TP, sum p, sum g, sum p^n g)`, each `[G, C]`."""
  p, p_n, g, w = _pixel_terms(cfg, predictions, targets, mask)
  if w is not None:
    p, p_n, g = p * w, p_n * w, g * w
  sums = _sum_together(_sum_axes(cfg, p.ndim), p * g, p, g, p_n * g)
  if cfg.batch:
    sums = tuple(s[None] for s in sums)
  if cfg.batch and cfg.axis_name is not None:
    # Global batch sums; per-sample sums stay local (the reduction is global).
    sums = lax.psum(sums, cfg.axis_name)
  return sums


def _ratio_terms(cfg: LossConfig, sums):
  """Denominator D (made safe), validity of D, and the ratio R = (N + s)/D."""
  tp, sum_p, sum_g, numer = sums
  k = 1.0 - cfg.fp_weight - cfg.fn_weight
  denom = k * tp + cfg.fp_weight * sum_p + cfg.fn_weight * sum_g + cfg.smooth_dr
  # D is 0 only for an empty class with smooth_dr = 0: count it as a perfect
  # match (R = 1) with no gradient instead of 0/0. (A NaN D stays NaN.)
  valid = denom != 0
  safe_denom = jnp.where(valid, denom, 1)
  ratio = jnp.where(valid, (numer + cfg.smooth_nr) / safe_denom, 1)
  return safe_denom, valid, ratio


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def class_losses(cfg: LossConfig, predictions, targets, mask):
  """Per-class PEL losses `[G, C]` (G = B, or 1 with `cfg.batch`)."""
  return _class_losses_fwd(cfg, predictions, targets, mask)[0]


def _class_losses_fwd(cfg: LossConfig, predictions, targets, mask):
  sums = _class_sums(cfg, predictions, targets, mask)
  _, _, ratio = _ratio_terms(cfg, sums)
  # Residuals: the inputs and four [G, C] sums; the backward recomputes the
  # activation rather than keeping any full-size intermediate alive.
  return 1.0 - cfg.scale * ratio, (predictions, targets, mask, sums)


def _class_losses_bwd(cfg: LossConfig, residuals, cotangent):
  predictions, targets, mask, sums = residuals
  safe_denom, valid, ratio = _ratio_terms(cfg, sums)
  # With A = -scale * ct / D, per pixel (w: mask, k = 1 - fp_w - fn_w):
  #   dL/dp = w * A * (n p^(n-1) g - R (k g + fp_w))
  #   dL/dg = w * A * (p^n - R (k p + fn_w))
  a = jnp.where(valid, -cfg.scale * cotangent / safe_denom, 0)
  a_ratio = a * ratio
  k = 1.0 - cfg.fp_weight - cfg.fn_weight
  n = cfg.exponent
  p, p_n, g, w = _pixel_terms(cfg, predictions, targets, mask)
  # [G, C] -> [G, 1, ..., 1, C] to broadcast over pixels.
  pixels = (a.shape[0],) + (1,) * (p.ndim - 2) + (a.shape[1],)
  a, a_ratio = a.reshape(pixels), a_ratio.reshape(pixels)
  linear = -a_ratio * (k * g + cfg.fp_weight)  # d/dp of the -R*D part.
  if cfg.activation is None:
    grad = n * a * g * _power(p, n - 1) + linear
  else:
    # u = p * dL/dp, written with p^n (log space) so that n < 1 and p = 0 are
    # safe: d(p^n)/dz = n p^n (1 - p) for sigmoid, n p^n (e_c - p) for softmax.
    if cfg.activation == "sigmoid":
      if _is_integer(n):
        # (.. * p) * p^(n-1) rather than the forward's p^n: with no p^n
        # subexpression to share, XLA stops writing p^n out between forward
        # and backward (binary [16,512,512,1] value+grad 7.4 -> 5.4 ms,
        # 16 MiB -> 0 temporaries). Softmax is faster with the shared form.
        pull = n * a * g * p * _power(p, n - 1)
      else:
        pull = n * a * g * p_n
      grad = (pull + linear * p) * (1 - p)
    else:
      u = n * a * g * p_n + linear * p
      grad = u - p * _reduce_classes(jnp.add, u)
  if w is not None:
    grad = grad * w
  d_predictions = grad.astype(predictions.dtype)

  d_targets = None
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    d_g = a * p_n - a_ratio * (k * p + cfg.fn_weight)
    if w is not None:
      d_g = d_g * w
    d_targets = d_g.astype(targets.dtype)
  return d_predictions, d_targets, None


class_losses.defvjp(_class_losses_fwd, _class_losses_bwd)

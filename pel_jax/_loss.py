"""Public PEL loss and its helpers (Dice, Jaccard, Tversky: `_variants.py`)."""

from __future__ import annotations

from collections.abc import Hashable
import inspect
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from pel_jax import _checks
from pel_jax import _core
from pel_jax import _global_sum
from pel_jax import _implementation
from pel_jax import _numerics
from pel_jax import _ratio
from pel_jax._cross_entropy import check_ce_weights
from pel_jax._cross_entropy import weighted_sums

ArrayLike = jax.typing.ArrayLike


def pel_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  exponent: float = 3.0,
  scale: float = 1.0,
  fp_weight: float = 1.0,
  fn_weight: float = 1.0,
  smooth_nr: float = 1e-5,
  smooth_dr: float = 1e-5,
  from_logits: bool = False,
  activation: str | None = None,
  class_weights: ArrayLike | None = None,
  include_background: bool = True,
  where: ArrayLike | None = None,
  ignore_index: int | None = None,
  batch: bool = False,
  reduction: str = "mean",
  axis_name: Hashable | None = None,
  generalized: str | None = None,
  squared: bool = False,
  soft_labels: bool = False,
  focal_gamma: float | None = None,
  log_loss: bool = False,
  absent_classes: str = "count",
  average: str = "macro",
  ce_weight: float = 0.0,
  ce_label_smoothing: float = 0.0,
  ce_class_weights: ArrayLike | None = None,
  ce_pos_weight: ArrayLike | None = None,
  implementation: str = "xla",
) -> jax.Array:
  r"""PointWise Exponential Loss (PEL), a Dice-family loss with p^n on top.

  For each class :math:`c`, with :math:`p` the predicted probability,
  :math:`g` the target and :math:`w` the pixel mask, summed over the spatial
  axes (and over the batch too when ``batch=True``):

  .. math::
    TP = \sum w p g, \quad FP = \sum w p (1 - g), \quad
    FN = \sum w (1 - p) g, \quad N = \sum w p^n g

    L_c = 1 - s \frac{N + \epsilon_{nr}}
        {TP + \alpha FP + \beta FN + \epsilon_{dr}}

  with :math:`n` = ``exponent``, :math:`s` = ``scale``, :math:`\alpha` =
  ``fp_weight`` and :math:`\beta` = ``fn_weight``. With n = 1 and s = 1 this
  is Dice (weights 0.5), Jaccard (weights 1) or Tversky. Soft (float) targets
  use :math:`p^n g`, linear in g; for hard labels it equals the authors'
  :math:`(p g)^n`.

  The gradient is a hand-written, fused `jax.custom_vjp` (with the activation
  when ``from_logits``). Reverse mode, reverse-over-reverse and
  forward-over-reverse (`jax.hessian`) work; forward mode on the loss itself
  (`jax.jvp`, `jax.jacfwd`) does not: JAX raises its own TypeError for
  custom_vjp functions.

  Args:
    predictions: float `[B, *spatial, C]`, channels last; probabilities, or
      logits with ``from_logits=True``. Any float dtype; bfloat16/float16 are
      accumulated in float32.
    targets: float `[B, *spatial, C]` (one-hot, multi-hot or soft labels), or
      integer class ids `[B, *spatial]` (never one-hot encoded internally).
      Ids outside `[0, C)` other than ``ignore_index`` belong to no class
      (as with `jax.nn.one_hot`): they count as background for every class.
      With one channel (C = 1) the ids are a binary mask: 1 is the
      foreground (the channel's class) and every other id background.
      Use `pel_jax.check_labels` to catch unexpected ids (`num_classes=1`:
      only 0 and 1 pass).
    exponent: n > 0 in :math:`p^n` (static).
    scale: s > 0, the numerator's factor (static).
    fp_weight: :math:`\alpha \ge 0`, the weight of false positives (static).
    fn_weight: :math:`\beta \ge 0`, the weight of false negatives (static).
    smooth_nr: :math:`\epsilon_{nr} \ge 0` added to the numerator (static).
    smooth_dr: :math:`\epsilon_{dr} \ge 0` added to the denominator (static).
    from_logits: whether ``predictions`` are logits.
    activation: with logits, "sigmoid" (independent channels) or "softmax"
      (over the class axis); None picks sigmoid for C = 1, else softmax.
    class_weights: `[C]` weights (all classes, background included) that
      multiply the per-class losses.
    include_background: False drops class 0 (after ``class_weights``).
    where: bool `[B, *spatial]`; False pixels are left out of every sum (after
      the activation: masked logits do not become p = 0.5; NaN or inf there
      reaches neither the loss nor the gradient).
    ignore_index: with integer targets, pixels with this id are left out.
    batch: sum over the batch too (one loss per class, "batch Dice").
    reduction: "mean" over classes and samples, "sum", or "none".
    axis_name: a named axis (`pmap`, `shard_map`, `vmap`) the batch is split
      over. With ``batch=True`` the sums are summed across it before the
      ratio; with ``batch=False`` the "mean"/"sum" reductions run over the
      global batch. Every device returns the global loss and the gradient
      for its own shard (the slice of the one-device gradient): in a
      data-parallel step, *sum* the parameter gradients across devices.
    generalized: None, or "square", "simple", "uniform": Generalized Dice
      (Sudre et al. 2017), one ratio per sample (one with ``batch=True``)
      of weighted sums over classes,
      :math:`L = 1 - s (\sum_c w_c N_c + \epsilon_{nr}) /
      (\sum_c w_c D_c + \epsilon_{dr})` with :math:`D_c` the per-class
      denominator above and :math:`w_c = 1/(\sum g_c)^2`,
      :math:`1/\sum g_c` or 1. A class with no target pixel gets the
      largest finite weight of its sample (MONAI's rule; 0 if none is
      finite). The weights carry no gradient. "none" returns `[B]` (a
      scalar with ``batch=True``).
    squared: the V-Net denominator: :math:`\sum w p^2` and
      :math:`\sum w g^2` in place of :math:`\sum w p` and :math:`\sum w g`.
    soft_labels: for float targets, TP from the L1 form
      :math:`\sum w \min(p, g) = (\sum w p + \sum w g - \sum w |p - g|)/2`
      and :math:`N = \sum w g \min(p/g, 1)^n`: identical for hard
      labels, and for soft labels with n >= 1 and both ``fp_weight`` and
      ``fn_weight`` > 0 the loss is minimal exactly at p = g (then
      :math:`N \le TP \le D`, with equality only at p = g). A zero weight
      makes an error free: with ``fp_weight=0`` every p >= g reaches the
      minimum, with ``fn_weight=0`` and n = 1 every p <= g (p > 0).
      Not with ``squared`` (see the README).
    focal_gamma: :math:`\gamma > 0`: each per-class loss becomes
      :math:`\operatorname{sign}(L_c)\,|L_c|^\gamma` (focal Tversky),
      before class weights and the reduction: :math:`L_c^\gamma` for the
      usual :math:`L_c \ge 0`. :math:`L_c < 0` where the ratio exceeds 1
      (``smooth_nr > smooth_dr`` on an empty class, or N > D with n < 1 and
      a small ``fn_weight``); the odd extension keeps the loss decreasing
      in the ratio there, and ``focal_gamma=1`` the plain loss. For
      :math:`\gamma < 1` the slope at :math:`L_c = 0`, infinite, is taken
      as 0. Needs ``scale=1``.
    log_loss: each per-class loss becomes :math:`-\log R_c` (smp's
      ``log_loss``), before class weights and the reduction. Needs
      ``scale=1``.
    absent_classes: "count", "exclude" or "exclude_per_sample". "exclude":
      classes with no target pixel (in the sample, or the batch with
      ``batch=True``) leave the mean, one mean over the present (sample,
      class) entries (0 with zero gradient if none is present); "none"
      returns 0 for them. "exclude_per_sample" (kornia's macro Dice and
      its Tversky): each sample's loss is the mean over the classes present
      in it, :math:`L_b = \sum_c m_{bc} L_{bc} / \sum_c m_{bc}` with
      :math:`m_{bc} = [\sum g_{bc} > 0]`, or 1 with zero gradient if no
      class is present (kornia's value); "mean" is
      :math:`\frac{1}{B} \sum_b L_b` (B the global batch under
      ``axis_name``), "sum" is :math:`\sum_b L_b` and "none" returns
      :math:`L_b`, `[B]`. It differs from "exclude" for B > 1 when samples
      have different numbers of present classes. With ``batch=True`` there is
      one row: the same mean as "exclude" (1 instead of 0 if no class is
      present), a scalar for every reduction. ``class_weights`` multiply
      :math:`L_{bc}`; the count stays that of the present classes.
    average: "macro" (one ratio per class) or "micro": the sums added over
      classes before one ratio (kornia's default; ``generalized="uniform"``).
    ce_weight: :math:`\lambda \ge 0`: adds :math:`\lambda` times the
      cross-entropy over all classes, computed in the same fused pass from
      the logits (softmax CE for ids or soft targets, sigmoid BCE): the mean
      over kept pixels (``where``, ``ignore_index``; times C for sigmoid),
      the sum with ``reduction="sum"``, global under ``axis_name``. Equal to
      ``optax.softmax_cross_entropy_with_integer_labels(...)`` averaged over
      the kept pixels. Needs logits and a "mean"/"sum" reduction.
    ce_label_smoothing: :math:`\varepsilon \in [0, 1)`: the cross-entropy's
      targets become :math:`q = (1 - \varepsilon) g + \varepsilon / K`, K = C
      for softmax (``optax.smooth_labels``, torch's and MONAI
      ``DiceCELoss``'s ``label_smoothing``), K = 2 for sigmoid (Keras'
      ``BinaryCrossentropy``; MONAI 1.6.1's ``DiceCELoss`` does not smooth
      its BCE: map it to 0). Per softmax pixel the CE is then
      :math:`(1 - \varepsilon)(-\sum_c g_c \log p_c) +
      \frac{\varepsilon}{C}(-\sum_c \log p_c)`; its logit gradient
      :math:`p \sum_c q_c - q`. Only the CE term is smoothed, never the
      overlap ratio. Needs ``ce_weight > 0``.
    ce_class_weights: `[C]` class weights of the cross-entropy, torch's
      ``CrossEntropyLoss(weight=w)`` (and MONAI ``DiceCELoss``'s ``weight``):
      softmax, :math:`\sum w_y \ell / \sum w_y` over the kept pixels
      (with smoothing, :math:`\ell = -\sum_c w_c q_c \log p_c`); sigmoid,
      each entry times :math:`w_c`, divided by the entry count. See
      `pel_jax.cross_entropy`. Computed in a pass of its own (not fused),
      and still exact under `region_stats` accumulation: the weighted sum
      and its normaliser are the ``ce`` and ``count`` sums. Needs
      ``ce_weight > 0``.
    ce_pos_weight: sigmoid only: torch's ``BCEWithLogitsLoss(pos_weight=a)``,
      a scalar or `[C]` (MONAI ``DiceCELoss``'s ``weight`` for one channel),
      computed as ``ce_class_weights``. Needs ``ce_weight > 0``.
    implementation: "xla" (XLA's fused sums, each platform's layout) or
      "pallas" (the Pallas kernels: Mosaic on TPU, Triton on GPU, interpret
      mode elsewhere, slow). Compiled for TPU and H100, never timed on one;
      the Pallas kernels lack ``squared``, ``soft_labels`` (float targets),
      ``ce_weight`` and ``axis_name``, which raise ValueError there.

  Returns:
    A scalar for "mean" and "sum"; for "none", `[B, C']` per sample and class,
    or `[C']` with ``batch=True`` (C' = C - 1 without background); `[B]` or a
    scalar with ``generalized``/``average="micro"``/
    ``absent_classes="exclude_per_sample"``. The loss is
    float32 for float32/bfloat16/float16 predictions and float64 for float64;
    its gradient has the dtype of ``predictions``.

  With the default smoothing (equal in numerator and denominator), an empty
  prediction of an empty target has ratio 1, so it costs 1 - s (0 at s = 1).
  If both smoothings are 0 and a class is empty (denominator 0), that class
  counts as a perfect match with zero gradient rather than 0/0.

  Examples:
    >>> import jax.numpy as jnp
    >>> from pel_jax import pel_loss
    >>> logits = jnp.zeros((2, 4, 4, 3))
    >>> labels = jnp.zeros((2, 4, 4), jnp.int32)
    >>> loss = pel_loss(logits, labels, from_logits=True)
    >>> loss.shape, loss.dtype
    ((), dtype('float32'))

  References:
    Bhat et al., PointWise Exponential Loss (PEL),
    https://github.com/bluesky314/PointWise-Exponential-Loss
  """
  return _pel_loss(predictions, targets, **_bound(locals()))


def _bound(scope: dict[str, Any]) -> dict[str, Any]:
  """The keyword options of a `pel_loss` call (`locals()` at its top)."""
  return {k: scope[k] for k in _OPTION_NAMES}


def _options(options: dict[str, Any], caller: str) -> dict[str, Any]:
  """`pel_loss`'s keyword options with its defaults; unknown names raise."""
  unknown = sorted(set(options) - set(_OPTION_NAMES))
  if unknown:
    raise TypeError(
      f"{caller}() got unknown option(s) {unknown}; it takes `pel_loss`'s"
      " keyword options."
    )
  return {**_OPTION_DEFAULTS, **options}


def _as_array_likes(*xs):
  # Python sequences are array-likes too (and have no dtype to check).
  return (np.asarray(x) if isinstance(x, (list, tuple)) else x for x in xs)


def _configs(predictions, targets, o: dict[str, Any]):
  """Static checks of one call; `(StatsConfig, RatioConfig)`.

  `predictions` and `targets` only need a shape and dtype (`RegionStats`
  leaves stand in for them in `loss_from_stats`; targets may be None there).
  """
  from_logits = _checks.check_flag("from_logits", o["from_logits"])
  batch = _checks.check_flag("batch", o["batch"])
  include_background = _checks.check_flag(
    "include_background", o["include_background"]
  )
  _checks.check_class_weights(
    predictions,
    o["class_weights"],
    _numerics.compute_dtype(jnp.result_type(predictions)),
  )
  _checks.check_options(predictions, o["reduction"], include_background)
  scale = _checks.check_number("scale", o["scale"], positive=True)
  focal_gamma = _checks.check_family(
    scale=scale,
    class_weights=o["class_weights"],
    generalized=o["generalized"],
    average=o["average"],
    absent_classes=o["absent_classes"],
    focal_gamma=o["focal_gamma"],
    log_loss=_checks.check_flag("log_loss", o["log_loss"]),
  )
  ce_weight = _checks.check_number("ce_weight", o["ce_weight"])
  label_smoothing = _checks.check_number(
    "ce_label_smoothing", o["ce_label_smoothing"]
  )
  activation = _checks.resolve_activation(
    predictions, from_logits, o["activation"]
  )
  _checks.check_cross_entropy(
    ce_weight, activation, o["reduction"], label_smoothing
  )
  weighted_ce = _weighted_ce(o)
  if weighted_ce:
    if not ce_weight:
      raise ValueError(
        "`ce_class_weights`/`ce_pos_weight` weight the cross-entropy term,"
        f" but `ce_weight={ce_weight}` adds none: pass `ce_weight > 0`."
      )
    check_ce_weights(
      predictions, activation, o["ce_class_weights"], o["ce_pos_weight"]
    )
  _implementation.check_implementation(o["implementation"])
  squared = _checks.check_flag("squared", o["squared"])
  soft_labels = _checks.check_flag("soft_labels", o["soft_labels"])
  _checks.check_soft_labels(soft_labels, squared)
  if targets is not None and jnp.issubdtype(
    jnp.result_type(targets), jnp.integer
  ):
    soft_labels = False  # Class ids are hard labels: the L1 form is the same.
  stats_cfg = _core.StatsConfig(
    exponent=_checks.check_number("exponent", o["exponent"], positive=True),
    activation=activation,
    batch=batch,
    ignore_index=o["ignore_index"],
    axis_name=o["axis_name"],
    squared=squared,
    soft_labels=soft_labels,
    # The weighted CE is summed beside the fused sums (`_region_sums`).
    cross_entropy=ce_weight > 0 and not weighted_ce,
    label_smoothing=0.0 if weighted_ce else label_smoothing,
  )
  ratio_cfg = _ratio.RatioConfig(
    scale=scale,
    fp_weight=_checks.check_number("fp_weight", o["fp_weight"]),
    fn_weight=_checks.check_number("fn_weight", o["fn_weight"]),
    smooth_nr=_checks.check_number("smooth_nr", o["smooth_nr"]),
    smooth_dr=_checks.check_number("smooth_dr", o["smooth_dr"]),
    squared=squared,
    include_background=include_background,
    generalized=("uniform" if o["average"] == "micro" else o["generalized"]),
    focal_gamma=focal_gamma,
    log_loss=bool(o["log_loss"]),
    # Both "exclude" modes need the same 0/1 `present` weights from the
    # core; where the mean over them is taken is `_reduce`'s business.
    absent_classes="count" if o["absent_classes"] == "count" else "exclude",
  )
  return stats_cfg, ratio_cfg


def _stats_inputs(predictions, targets, where, o):
  """Checked arrays and configs of a call that reads pixels."""
  predictions, targets, where, class_weights, ce_class, ce_pos = (
    _as_array_likes(
      predictions,
      targets,
      where,
      o["class_weights"],
      o["ce_class_weights"],
      o["ce_pos_weight"],
    )
  )
  o = {
    **o,
    "class_weights": class_weights,
    "ce_class_weights": ce_class,
    "ce_pos_weight": ce_pos,
  }
  _checks.check_predictions(predictions)
  _checks.check_targets(predictions, targets, o["ignore_index"])
  _checks.check_mask(predictions, where)
  stats_cfg, ratio_cfg = _configs(predictions, targets, o)
  _checks.check_representable(
    predictions,
    _numerics.compute_dtype(jnp.result_type(predictions)),
    exponent=stats_cfg.exponent,
    scale=ratio_cfg.scale,
    fp_weight=ratio_cfg.fp_weight,
    fn_weight=ratio_cfg.fn_weight,
    smooth_nr=ratio_cfg.smooth_nr,
    smooth_dr=ratio_cfg.smooth_dr,
    ce_weight=o["ce_weight"],
  )
  predictions = jnp.asarray(predictions)
  targets = jnp.asarray(targets)
  if targets.dtype == jnp.bool_:
    targets = targets.astype(predictions.dtype)
  mask = None if where is None else jnp.asarray(where)
  return predictions, targets, mask, stats_cfg, ratio_cfg, o


def _weighted_ce(o) -> bool:
  return o["ce_class_weights"] is not None or o["ce_pos_weight"] is not None


def _region_sums(stats_cfg, predictions, targets, mask, o):
  """The fused region sums, plus the weighted CE's sums where it is asked."""
  stats = _implementation.region_sums(
    o["implementation"], stats_cfg, predictions, targets, mask
  )
  if _weighted_ce(o):
    ce, count = weighted_sums(stats_cfg, predictions, targets, mask, o)
    stats = stats._replace(ce=ce, count=count)
  return stats


def _pel_loss(predictions, targets, **o):
  predictions, targets, mask, stats_cfg, ratio_cfg, o = _stats_inputs(
    predictions, targets, o["where"], o
  )
  stats = _region_sums(stats_cfg, predictions, targets, mask, o)
  return _loss_of_sums(stats, ratio_cfg, o["class_weights"], o)


def _loss_of_sums(stats, ratio_cfg, class_weights, o):
  """The reduced loss from `[G, C]` region sums."""
  losses, present = _ratio.stats_losses(ratio_cfg, stats)
  if class_weights is not None:
    weights = jnp.asarray(class_weights, losses.dtype)
    if not ratio_cfg.include_background:
      weights = weights[1:]
    losses = losses * weights
  per_sample = ratio_cfg.generalized is not None
  loss = _reduce(
    losses,
    present,
    o["reduction"],
    bool(o["batch"]),
    o["axis_name"],
    per_sample,
    by_sample=o["absent_classes"] == "exclude_per_sample",
  )
  if o["ce_weight"]:
    loss = loss + o["ce_weight"] * _cross_entropy(
      stats, o["reduction"], bool(o["batch"]), o["axis_name"]
    )
  return loss


def _cross_entropy(stats, reduction, batch, axis_name):
  """Cross-entropy sum ("sum") or mean over its kept terms ("mean").

  Global over `axis_name` with `global_sum`'s gradient convention (batch
  sums are already global). No kept term: 0 with a zero gradient.
  """
  return _global_sum.sum_or_mean(
    jnp.sum(stats.ce),
    jnp.sum(stats.count),
    reduction,
    None if batch else axis_name,
  )


def _reduce(
  losses, present, reduction, batch, axis_name, per_sample, by_sample=False
):
  """Reduces `[G, C']` losses (`[G, 1]` per sample); global over `axis_name`.

  With `present` (0/1, "exclude"), the mean is over the present entries
  only: a weighted mean, 0 with a zero gradient when none is present.
  With `by_sample` ("exclude_per_sample"), each row is first the mean over
  its own present entries (1 with a zero gradient for a row with none, as
  kornia), and the rows are then reduced as per-sample losses.
  """
  if present is not None:
    losses = losses * present
  if by_sample:
    count = jnp.sum(present, -1, keepdims=True)
    some = count > 0
    mean = jnp.sum(losses, -1, keepdims=True) / jnp.where(some, count, 1)
    losses, present, per_sample = jnp.where(some, mean, 1), None, True
  if per_sample:
    losses = losses[:, 0]
  if batch:
    losses = losses[0]
  if reduction == "none":
    return losses
  total = jnp.sum(losses)
  count = losses.size if present is None else jnp.sum(present)
  if axis_name is not None and not batch:
    total = _global_sum.global_sum(total, axis_name)
    if present is None:
      count = count * lax.axis_size(axis_name)
    else:
      count = lax.psum(count, axis_name)
  if reduction == "sum":
    return total
  if present is None:
    return total / count
  some = count > 0
  return jnp.where(some, total / jnp.where(some, count, 1), 0)


_OPTION_DEFAULTS = {
  name: p.default
  for name, p in inspect.signature(pel_loss).parameters.items()
  if p.kind == inspect.Parameter.KEYWORD_ONLY
}
_OPTION_NAMES = tuple(_OPTION_DEFAULTS)

"""Dice, Jaccard and Tversky: `pel_loss` with the exponent and scale at 1.

Each variant is a real function (its own signature and docstring, for type
checkers, IDEs and the API reference) whose body is one call of
`_fixed_loss`, the variants' single implementation. Their keywords are
`pel_loss`'s minus the settings they fix; tests/api_test.py checks that the
signatures follow `pel_loss` (names, defaults, annotations), so a keyword
added to `pel_loss` is added here too: one line in each signature and in each
Args section, nothing in the bodies.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax

from pel_jax._loss import pel_loss

ArrayLike = jax.typing.ArrayLike


def _fixed_loss(arguments: dict[str, Any], **weights: float) -> jax.Array:
  """`pel_loss` at exponent 1 and scale 1: the variants' one implementation.

  Args:
    arguments: the variant's own arguments, its `locals()` taken first thing
      in its body (exactly the parameters it was called with).
    **weights: ``fp_weight`` and ``fn_weight`` where the variant fixes them.

  Returns:
    `pel_loss`'s value for these settings.
  """
  return pel_loss(**arguments, exponent=1.0, scale=1.0, **weights)


def dice_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
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
  r"""Soft Dice loss (Milletari et al. 2016), one per class and sample.

  With :math:`p` the predicted probability, :math:`g` the target and
  :math:`w` the pixel mask, summed over the spatial axes (and the batch with
  ``batch=True``), and :math:`TP = \sum w p g`:

  .. math::
    L_c = 1 - \frac{2 TP + 2 \epsilon_{nr}}
        {\sum w p + \sum w g + 2 \epsilon_{dr}}

  This is `pel_loss` with ``exponent=1``, ``scale=1``, ``fp_weight=0.5`` and
  ``fn_weight=0.5`` (the ratio's numerator and denominator halved), with the
  same shapes, dtypes, masking, reductions and fused custom-VJP gradient.
  Those four settings are fixed: passing one raises `TypeError`; use
  `pel_loss` to change them.

  Args:
    predictions: float `[B, *spatial, C]`, channels last; probabilities, or
      logits with ``from_logits=True`` (see `pel_loss`).
    targets: float `[B, *spatial, C]` labels, or integer class ids
      `[B, *spatial]` (see `pel_loss`).
    smooth_nr: :math:`\epsilon_{nr} \ge 0` added to the numerator (static).
    smooth_dr: :math:`\epsilon_{dr} \ge 0` added to the denominator (static).
    from_logits: whether ``predictions`` are logits.
    activation: with logits, "sigmoid" or "softmax"; None picks sigmoid for
      C = 1, else softmax.
    class_weights: `[C]` weights that multiply the per-class losses.
    include_background: False drops class 0 (after ``class_weights``).
    where: bool `[B, *spatial]`; False pixels are left out of every sum.
    ignore_index: with integer targets, pixels with this id are left out.
    batch: sum over the batch too (one loss per class, "batch Dice").
    reduction: "mean" over classes and samples, "sum", or "none".
    axis_name: a named axis the batch is split over (see `pel_loss`).
    generalized: None, "square", "simple" or "uniform": one ratio of
      class-weighted sums per sample (Generalized Dice; see `pel_loss`).
    squared: sums of p^2 and g^2 in the denominator (V-Net).
    soft_labels: TP from the L1 form, exact for soft targets (see
      `pel_loss`).
    focal_gamma: each per-class loss raised to this power (focal Tversky),
      sign-preserving below 0 (see `pel_loss`).
    log_loss: each per-class loss is -log of its ratio.
    absent_classes: "count", or "exclude" classes with no target pixel from
      the mean: one mean over the present (sample, class) entries
      ("exclude") or each sample's mean over its present classes, then the
      mean over samples ("exclude_per_sample", kornia's; see `pel_loss`).
    average: "macro" (per class) or "micro" (sums added over classes).
    ce_weight: adds this weight times the cross-entropy, fused (logits).
    ce_label_smoothing: smooths the cross-entropy's targets to
      (1 - eps) g + eps / K (see `pel_loss`).
    ce_class_weights: `[C]` class weights of the cross-entropy (torch's
      ``weight``; see `pel_loss`).
    ce_pos_weight: the sigmoid cross-entropy's ``pos_weight`` (see
      `pel_loss`).
    implementation: "xla" or "pallas" kernels (see `pel_loss`).

  Returns:
    A scalar for "mean" and "sum"; `[B, C']` for "none" (`[C']` with
    ``batch=True``, C' = C - 1 without background). float32 for float32 and
    half-precision predictions, float64 for float64.

  Examples:
    Two of four pixels are foreground; TP = 1.7, sum p = 1.8, sum g = 2:

    >>> import jax.numpy as jnp
    >>> from pel_jax import dice_loss
    >>> p = jnp.array([[0.9, 0.8, 0.1, 0.0]])[..., None]  # [B=1, 4, C=1]
    >>> g = jnp.array([[1.0, 1.0, 0.0, 0.0]])[..., None]
    >>> print(f"{dice_loss(p, g):.4f}")  # 1 - 3.4 / 3.8
    0.1053

    Integer labels and logits, one loss per sample and class:

    >>> logits = jnp.zeros((2, 4, 4, 3))
    >>> ids = jnp.zeros((2, 4, 4), jnp.int32)
    >>> dice_loss(logits, ids, from_logits=True, reduction="none").shape
    (2, 3)
  """
  return _fixed_loss(locals(), fp_weight=0.5, fn_weight=0.5)


def jaccard_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
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
  r"""Soft Jaccard (IoU) loss, one per class and sample.

  With :math:`p` the predicted probability, :math:`g` the target and
  :math:`w` the pixel mask, summed over the spatial axes (and the batch with
  ``batch=True``): :math:`TP = \sum w p g`, :math:`FP = \sum w p (1 - g)`,
  :math:`FN = \sum w (1 - p) g`, and

  .. math::
    L_c = 1 - \frac{TP + \epsilon_{nr}}{TP + FP + FN + \epsilon_{dr}}

  where :math:`TP + FP + FN = \sum w p + \sum w g - TP`. This is `pel_loss`
  with ``exponent=1``, ``scale=1``, ``fp_weight=1`` and ``fn_weight=1``, with
  the same shapes, dtypes, masking, reductions and fused custom-VJP gradient.
  Those four settings are fixed: passing one raises `TypeError`; use
  `pel_loss` to change them.

  Args:
    predictions: float `[B, *spatial, C]`, channels last; probabilities, or
      logits with ``from_logits=True`` (see `pel_loss`).
    targets: float `[B, *spatial, C]` labels, or integer class ids
      `[B, *spatial]` (see `pel_loss`).
    smooth_nr: :math:`\epsilon_{nr} \ge 0` added to the numerator (static).
    smooth_dr: :math:`\epsilon_{dr} \ge 0` added to the denominator (static).
    from_logits: whether ``predictions`` are logits.
    activation: with logits, "sigmoid" or "softmax"; None picks sigmoid for
      C = 1, else softmax.
    class_weights: `[C]` weights that multiply the per-class losses.
    include_background: False drops class 0 (after ``class_weights``).
    where: bool `[B, *spatial]`; False pixels are left out of every sum.
    ignore_index: with integer targets, pixels with this id are left out.
    batch: sum over the batch too (one loss per class).
    reduction: "mean" over classes and samples, "sum", or "none".
    axis_name: a named axis the batch is split over (see `pel_loss`).
    generalized: None, "square", "simple" or "uniform": one ratio of
      class-weighted sums per sample (Generalized Dice; see `pel_loss`).
    squared: sums of p^2 and g^2 in the denominator (V-Net).
    soft_labels: TP from the L1 form, exact for soft targets (see
      `pel_loss`).
    focal_gamma: each per-class loss raised to this power (focal Tversky),
      sign-preserving below 0 (see `pel_loss`).
    log_loss: each per-class loss is -log of its ratio.
    absent_classes: "count", or "exclude" classes with no target pixel from
      the mean: one mean over the present (sample, class) entries
      ("exclude") or each sample's mean over its present classes, then the
      mean over samples ("exclude_per_sample", kornia's; see `pel_loss`).
    average: "macro" (per class) or "micro" (sums added over classes).
    ce_weight: adds this weight times the cross-entropy, fused (logits).
    ce_label_smoothing: smooths the cross-entropy's targets to
      (1 - eps) g + eps / K (see `pel_loss`).
    ce_class_weights: `[C]` class weights of the cross-entropy (torch's
      ``weight``; see `pel_loss`).
    ce_pos_weight: the sigmoid cross-entropy's ``pos_weight`` (see
      `pel_loss`).
    implementation: "xla" or "pallas" kernels (see `pel_loss`).

  Returns:
    A scalar for "mean" and "sum"; `[B, C']` for "none" (`[C']` with
    ``batch=True``, C' = C - 1 without background). float32 for float32 and
    half-precision predictions, float64 for float64.

  Examples:
    TP = 1.7, FP = 0.1, FN = 0.3:

    >>> import jax.numpy as jnp
    >>> from pel_jax import jaccard_loss
    >>> p = jnp.array([[0.9, 0.8, 0.1, 0.0]])[..., None]  # [B=1, 4, C=1]
    >>> g = jnp.array([[1.0, 1.0, 0.0, 0.0]])[..., None]
    >>> print(f"{jaccard_loss(p, g):.4f}")  # 1 - 1.7 / 2.1
    0.1905
  """
  return _fixed_loss(locals(), fp_weight=1.0, fn_weight=1.0)


def tversky_loss(
  predictions: ArrayLike,
  targets: ArrayLike,
  *,
  fp_weight: float = 0.3,
  fn_weight: float = 0.7,
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
  r"""Tversky loss (Salehi et al. 2017), one per class and sample.

  With :math:`p` the predicted probability, :math:`g` the target and
  :math:`w` the pixel mask, summed over the spatial axes (and the batch with
  ``batch=True``): :math:`TP = \sum w p g`, :math:`FP = \sum w p (1 - g)`,
  :math:`FN = \sum w (1 - p) g`, and

  .. math::
    L_c = 1 - \frac{TP + \epsilon_{nr}}
        {TP + \alpha FP + \beta FN + \epsilon_{dr}}

  with :math:`\alpha` = ``fp_weight`` and :math:`\beta` = ``fn_weight``
  (defaults 0.3 and 0.7, which favour recall; 0.5 and 0.5 is Dice, 1 and 1
  Jaccard). This is `pel_loss` with ``exponent=1`` and ``scale=1``, with the
  same shapes, dtypes, masking, reductions and fused custom-VJP gradient.
  Those two settings are fixed: passing one raises `TypeError`; use
  `pel_loss` to change them.

  Args:
    predictions: float `[B, *spatial, C]`, channels last; probabilities, or
      logits with ``from_logits=True`` (see `pel_loss`).
    targets: float `[B, *spatial, C]` labels, or integer class ids
      `[B, *spatial]` (see `pel_loss`).
    fp_weight: :math:`\alpha \ge 0`, the weight of false positives (static).
    fn_weight: :math:`\beta \ge 0`, the weight of false negatives (static).
    smooth_nr: :math:`\epsilon_{nr} \ge 0` added to the numerator (static).
    smooth_dr: :math:`\epsilon_{dr} \ge 0` added to the denominator (static).
    from_logits: whether ``predictions`` are logits.
    activation: with logits, "sigmoid" or "softmax"; None picks sigmoid for
      C = 1, else softmax.
    class_weights: `[C]` weights that multiply the per-class losses.
    include_background: False drops class 0 (after ``class_weights``).
    where: bool `[B, *spatial]`; False pixels are left out of every sum.
    ignore_index: with integer targets, pixels with this id are left out.
    batch: sum over the batch too (one loss per class).
    reduction: "mean" over classes and samples, "sum", or "none".
    axis_name: a named axis the batch is split over (see `pel_loss`).
    generalized: None, "square", "simple" or "uniform": one ratio of
      class-weighted sums per sample (Generalized Dice; see `pel_loss`).
    squared: sums of p^2 and g^2 in the denominator (V-Net).
    soft_labels: TP from the L1 form, exact for soft targets (see
      `pel_loss`).
    focal_gamma: each per-class loss raised to this power (focal Tversky),
      sign-preserving below 0 (see `pel_loss`).
    log_loss: each per-class loss is -log of its ratio.
    absent_classes: "count", or "exclude" classes with no target pixel from
      the mean: one mean over the present (sample, class) entries
      ("exclude") or each sample's mean over its present classes, then the
      mean over samples ("exclude_per_sample", kornia's; see `pel_loss`).
    average: "macro" (per class) or "micro" (sums added over classes).
    ce_weight: adds this weight times the cross-entropy, fused (logits).
    ce_label_smoothing: smooths the cross-entropy's targets to
      (1 - eps) g + eps / K (see `pel_loss`).
    ce_class_weights: `[C]` class weights of the cross-entropy (torch's
      ``weight``; see `pel_loss`).
    ce_pos_weight: the sigmoid cross-entropy's ``pos_weight`` (see
      `pel_loss`).
    implementation: "xla" or "pallas" kernels (see `pel_loss`).

  Returns:
    A scalar for "mean" and "sum"; `[B, C']` for "none" (`[C']` with
    ``batch=True``, C' = C - 1 without background). float32 for float32 and
    half-precision predictions, float64 for float64.

  Examples:
    TP = 1.7, FP = 0.1, FN = 0.3:

    >>> import jax.numpy as jnp
    >>> from pel_jax import tversky_loss
    >>> p = jnp.array([[0.9, 0.8, 0.1, 0.0]])[..., None]  # [B=1, 4, C=1]
    >>> g = jnp.array([[1.0, 1.0, 0.0, 0.0]])[..., None]
    >>> print(f"{tversky_loss(p, g):.4f}")  # 1 - 1.7 / (1.7 + 0.03 + 0.21)
    0.1237
    >>> print(f"{tversky_loss(p, g, fp_weight=0.5, fn_weight=0.5):.4f}")
    0.1053
  """
  return _fixed_loss(locals())

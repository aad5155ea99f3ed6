"""float64 NumPy oracle for the whole overlap-loss family (issue 10).

Transcribed from the formulas of the papers and of issue 10, not from the
library code. For each class c (summed over the spatial axes, and over the
batch too with ``batch=True``), with the pixel mask w:

  P_c = sum w p        (sum w p^2 with ``squared``)
  G_c = sum w g        (sum w g^2 with ``squared``)
  TP_c = sum w p g     (``soft_labels``: (sum w|p| + sum w|g| - sum w|p-g|)/2;
                        with ``squared`` too: (P + G - sum w (p-g)^2)/2)
  FP_c = P_c - TP_c,   FN_c = G_c - TP_c
  N_c = sum w p^n g    (TP_c when n = 1; ``soft_labels``:
                        sum w g min(p/g, 1)^n, the extension documented by
                        `pel_jax.region_stats`, equal to TP at n = 1)
  D_c = TP_c + alpha FP_c + beta FN_c

  macro:        r_c = (N_c + s_nr) / (D_c + s_dr), one ratio per class
  micro:        r = (sum_c N_c + s_nr) / (sum_c D_c + s_dr)  (kornia)
  generalized:  r = (sum_c W_c N_c + s_nr) / (sum_c W_c D_c + s_dr) with
                W_c = 1/G_c^2 ("square"), 1/G_c ("simple") or 1 ("uniform"),
                G_c the plain target sum; a class with G_c = 0 gets the largest
                finite weight of its sample (of the batch with ``batch``), as
                in MONAI; weights carry no gradient (Sudre et al. 2017).

  L = 1 - scale r;  ``log_loss``: L = -log r;  ``focal_gamma``: L = sign(L) |L|^gamma,
  applied to each ratio before class weights and the reduction.

``absent_classes="exclude"`` leaves the (sample, class) entries whose target
sum G_c is 0 out of the mean (a weighted mean; 0 when every entry is absent).

``absent_classes="exclude_per_sample"`` (kornia 0.9.0's macro dice_loss and
its tversky_loss, kornia/losses/dice.py and tversky.py): sample b's loss is
the mean of L over the classes c with G_bc > 0, 1 when it has none (kornia:
"a sample whose pixels are all ignored enters the batch mean as loss 1");
"mean" averages these over the samples, "sum" adds them, "none" returns
them. With ``batch`` the batch is the one sample.

``ce_weight=lam`` adds lam times the cross-entropy, averaged over the kept
pixels (softmax: -sum_c g_c log p_c per pixel, with targets smoothed to
(1 - eps) g + eps / C by ``ce_label_smoothing``; sigmoid: binary CE averaged
over pixels and classes), summed instead for ``reduction="sum"`` (as MONAI's
DiceCELoss and torch's cross-entropy reduce).

`family_numpy` is a direct float64 transcription of the above; the
hand-computed tests of the oracle itself are in `reference_family_test.py`.
"""

from __future__ import annotations

import numpy as np

from tests import reference


def _sums(p, g, w, axes, exponent, squared, soft_labels):
  """Per-class `(N, TP, FP, FN, G_plain)` with mask `w` over `axes`."""
  s = lambda f: np.sum(w * f, axis=axes)
  if squared:
    big_p, big_g = s(p**2), s(g**2)
    tp = (big_p + big_g - s((p - g) ** 2)) / 2.0
  else:
    big_p, big_g = s(p), s(g)
    if soft_labels:
      tp = (s(np.abs(p)) + s(np.abs(g)) - s(np.abs(p - g))) / 2.0
    else:
      tp = s(p * g)
  if exponent == 1.0:
    numer = tp
  elif soft_labels:  # sum w g min(p/g, 1)^n: = TP at n = 1, = G at p = g.
    safe_g = np.where(g > 0, g, 1.0)
    numer = s(np.where(g > 0, g * np.minimum(p / safe_g, 1.0) ** exponent, 0.0))
  else:
    numer = s(p**exponent * g)
  return numer, tp, big_p - tp, big_g - tp, s(g)


def _generalized_weights(g_sum, kind, batch):
  """Sudre's weights from the target sums `[G, C]`; absent classes: max."""
  with np.errstate(divide="ignore"):
    if kind == "square":
      wts = 1.0 / g_sum**2
    elif kind == "simple":
      wts = 1.0 / g_sum
    else:
      assert kind == "uniform"
      wts = np.ones_like(g_sum)
  finite = np.isfinite(wts)
  wts = np.where(finite, wts, 0.0)
  if batch:
    top = np.max(wts)
    return np.where(finite, wts, top)
  top = np.max(wts, axis=-1, keepdims=True)
  return np.where(finite, wts, top)


def _ratio(numer, denom, smooth_nr, smooth_dr):
  denom = denom + smooth_dr
  empty = denom == 0
  return np.where(empty, 1.0, (numer + smooth_nr) / np.where(empty, 1.0, denom))


def _cross_entropy(
  x, g, keep, from_logits, activation, label_smoothing, reduction
):
  """Cross-entropy over the kept pixels: mean, or sum for "sum" (float64)."""
  x = np.asarray(x, np.float64)
  num_classes = x.shape[-1]
  if activation is None:
    activation = "sigmoid" if num_classes == 1 else "softmax"
  k = keep.astype(np.float64)
  if activation == "softmax":
    if from_logits:
      shifted = x - np.max(x, axis=-1, keepdims=True)
      logp = shifted - np.log(np.sum(np.exp(shifted), -1, keepdims=True))
    else:
      logp = np.log(x)
    gs = (1.0 - label_smoothing) * g + label_smoothing / num_classes
    terms = k * -np.sum(gs * logp, axis=-1)
    count = np.sum(k)
  else:
    if from_logits:  # log sigmoid(x) and log sigmoid(-x), overflow-free.
      logp = -np.logaddexp(0.0, -x)
      logq = -np.logaddexp(0.0, x)
    else:
      logp, logq = np.log(x), np.log1p(-x)
    gs = (1.0 - label_smoothing) * g + label_smoothing / 2.0
    terms = k[..., None] * -(gs * logp + (1.0 - gs) * logq)
    count = np.sum(k) * num_classes  # BCE: a mean over pixels and classes.
  return np.sum(terms) if reduction == "sum" else np.sum(terms) / count


def family_numpy(
  predictions,
  targets,
  *,
  exponent=3.0,
  scale=1.0,
  fp_weight=1.0,
  fn_weight=1.0,
  smooth_nr=1e-5,
  smooth_dr=1e-5,
  from_logits=False,
  activation=None,
  class_weights=None,
  include_background=True,
  where=None,
  ignore_index=None,
  batch=False,
  reduction="mean",
  generalized=None,
  squared=False,
  soft_labels=False,
  focal_gamma=None,
  log_loss=False,
  absent_classes="count",
  average="macro",
  ce_weight=0.0,
  ce_label_smoothing=0.0,
):
  """float64 loss of the family; see the module docstring for the formulas.

  Returns the reduced scalar, or for ``reduction="none"``: `[B, C']` per
  sample and class (`[C']` with ``batch``) for macro; `[B]` (a scalar with
  ``batch``) for micro, generalized and "exclude_per_sample".
  """
  p = reference.np_probabilities(predictions, from_logits, activation)
  num_classes = p.shape[-1]
  g, keep = reference.np_targets(targets, num_classes, ignore_index)
  if where is not None:
    keep = keep & np.asarray(where, bool)
  w = keep[..., None].astype(np.float64)
  if not include_background:
    p, g, w_cls = p[..., 1:], g[..., 1:], 1
  else:
    w_cls = 0
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  numer, tp, fp, fn, g_sum = _sums(
    p, g, w, axes, exponent, squared, soft_labels
  )
  denom = tp + fp_weight * fp + fn_weight * fn
  cw = None
  if class_weights is not None:
    cw = np.asarray(class_weights, np.float64)[w_cls:]

  if generalized is not None or average == "micro":
    if generalized is not None:
      wts = _generalized_weights(g_sum, generalized, batch)
    else:
      wts = np.ones_like(g_sum)
    if cw is not None:
      wts = wts * cw
    ratio = _ratio(
      np.sum(wts * numer, -1), np.sum(wts * denom, -1), smooth_nr, smooth_dr
    )
    present = np.ones_like(ratio)
  else:
    ratio = _ratio(numer, denom, smooth_nr, smooth_dr)
    present = (g_sum > 0).astype(np.float64)

  if log_loss:
    assert scale == 1.0
    losses = -np.log(ratio)
  else:
    losses = 1.0 - scale * ratio
  if focal_gamma is not None:  # Odd below 0 (documented in pel_loss).
    losses = np.sign(losses) * np.abs(losses) ** focal_gamma
  if cw is not None and generalized is None and average == "macro":
    losses = losses * cw

  if absent_classes == "exclude_per_sample":
    per_sample = []
    for row_losses, row_present in zip(
      np.atleast_2d(losses), np.atleast_2d(present)
    ):
      kept = row_losses[row_present > 0]
      per_sample.append(kept.mean() if kept.size else 1.0)
    per_sample = np.asarray(per_sample)
    if batch:
      per_sample = per_sample[0]
    out = reference.np_reduce(per_sample, reduction)
  elif absent_classes == "exclude":
    if reduction == "none":
      out = losses * present
    elif reduction == "sum":
      out = np.sum(losses * present)
    else:  # An all-absent batch has nothing to average: 0.
      count = np.sum(present)
      out = np.sum(losses * present) / count if count > 0 else 0.0
  else:
    out = reference.np_reduce(losses, reduction)
  if ce_weight:
    out = out + ce_weight * _cross_entropy(
      predictions,
      reference.np_targets(targets, num_classes)[0],
      keep,
      from_logits,
      activation,
      ce_label_smoothing,
      reduction,
    )
  return out

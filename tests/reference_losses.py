"""Float64 NumPy oracles of the MCC, GWDL and unified focal losses.

Transcribed from the papers' definitions pixel by pixel (Python loops over
pixels and classes, no shared code with pel_jax): inputs are channels-last
probabilities `[B, *S, C]`, targets one-hot or soft `[B, *S, C]`, and a
bool mask `[B, *S]` of the kept pixels.
"""

from __future__ import annotations

import numpy as np


def _flat(probs, targets, keep):
  probs = np.asarray(probs, np.float64)
  b, c = probs.shape[0], probs.shape[-1]
  p = probs.reshape(b, -1, c)
  g = np.asarray(targets, np.float64).reshape(b, -1, c)
  k = np.ones(p.shape[:2], bool) if keep is None else np.asarray(keep)
  return p, g, k.reshape(b, -1)


def _groups(p, g, k, batch):
  """Pixel lists per group: one per sample, or one of the whole batch."""
  if batch:
    return [
      (p.reshape(-1, p.shape[-1]), g.reshape(-1, g.shape[-1]), k.reshape(-1))
    ]
  return list(zip(p, g, k))


def mcc(probs, targets, keep=None, *, eps=1e-5, batch=True):
  """`[groups, C]` MCC losses, 1 - MCC of the soft confusion counts + eps."""
  p, g, k = _flat(probs, targets, keep)
  out = []
  for pp, gg, kk in _groups(p, g, k, batch):
    row = []
    for c in range(pp.shape[-1]):
      tp = fp = fn = tn = 0.0
      for i in range(len(kk)):
        if kk[i]:
          a, t = pp[i, c], gg[i, c]
          tp += a * t
          fp += a * (1 - t)
          fn += (1 - a) * t
          tn += (1 - a) * (1 - t)
      tp, fp, fn, tn = tp + eps, fp + eps, fn + eps, tn + eps
      den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
      row.append(1 - ((tp * tn - fp * fn) / den if den > 0 else 0.0))
    out.append(row)
  return np.array(out)


def gwdl(
  probs,
  targets,
  dist,
  keep=None,
  *,
  mode="default",
  batch=False,
  smooth_nr=1e-5,
  smooth_dr=1e-5,
):
  """`[groups]` generalized Wasserstein Dice losses (Fidon et al. 2017).

  Soft targets: the transport cost of the independent coupling,
  sum_k sum_c g_k M[k, c] p_c (the Wasserstein distance for one-hot g).
  """
  p, g, k = _flat(probs, targets, keep)
  m = np.asarray(dist, np.float64)
  m = m / m.max()
  out = []
  for pp, gg, kk in _groups(p, g, k, batch):
    n_cls = pp.shape[-1]
    kept = [i for i in range(len(kk)) if kk[i]]
    volume = [sum(gg[i, c] for i in kept) for c in range(n_cls)]
    if mode == "GDL":
      alpha = [1 / (v + 1) for v in volume]
    else:
      alpha = [0.0] + [1.0] * (n_cls - 1)
    tp = err = den = 0.0
    for i in kept:
      for t in range(n_cls):
        wass = sum(m[t, c] * pp[i, c] for c in range(n_cls))
        tp += gg[i, t] * alpha[t] * (1 - wass)
        err += gg[i, t] * wass
        den += gg[i, t] * alpha[t] * (2 - wass)
    if mode != "GDL":
      den = 2 * tp + err
    out.append(1 - (2 * tp + smooth_nr) / (den + smooth_dr))
  return np.array(out)


def unified_focal(
  probs,
  targets,
  keep=None,
  *,
  weight=0.5,
  delta=0.7,
  gamma=0.5,
  epsilon=1e-7,
  batch=False,
):
  """Yeung et al. 2022 asymmetric unified focal loss, class 0 background.

  Class sums divided by C (MONAI's means over the classes).
  """
  p, g, k = _flat(probs, targets, keep)
  p = np.clip(p, epsilon, 1 - epsilon)
  n_cls = p.shape[-1]
  focal, count = 0.0, 0
  for b in range(p.shape[0]):
    for i in range(p.shape[1]):
      if not k[b, i]:
        continue
      count += 1
      for c in range(n_cls):
        ce = -g[b, i, c] * np.log(p[b, i, c])
        if c == 0:
          focal += (1 - delta) * (1 - p[b, i, c]) ** gamma * ce
        else:
          focal += delta * ce
  focal /= n_cls * max(count, 1)
  terms = []
  for pp, gg, kk in _groups(p, g, k, batch):
    for c in range(n_cls):
      tp = fn = fp = 0.0
      for i in range(len(kk)):
        if kk[i]:
          tp += pp[i, c] * gg[i, c]
          fn += (1 - pp[i, c]) * gg[i, c]
          fp += pp[i, c] * (1 - gg[i, c])
      mti = (tp + epsilon) / (tp + delta * fn + (1 - delta) * fp + epsilon)
      terms.append(1 - mti if c == 0 else (1 - mti) ** (1 - gamma))
  return weight * focal + (1 - weight) * np.mean(terms)


def focal(
  logits,
  targets,
  keep=None,
  *,
  gamma=2.0,
  alpha=None,
  reduced_threshold=None,
  normalized=False,
  class_weights=None,
):
  """Lin et al. 2017 sigmoid focal loss of each channel, smp's reductions.

  Per class: the mean over the kept pixels of a_t (1 - p_t)^gamma CE, with
  p_t the probability of the target; then the (weighted) class mean.
  """
  z, g, k = _flat(logits, targets, keep)
  n_cls = z.shape[-1]
  per_class = []
  for c in range(n_cls):
    total = norm = 0.0
    count = 0
    for b in range(z.shape[0]):
      for i in range(z.shape[1]):
        if not k[b, i]:
          continue
        count += 1
        s = 1 / (1 + np.exp(-z[b, i, c]))
        t = g[b, i, c]
        ce = -t * np.log(s) - (1 - t) * np.log(1 - s)
        pt = np.exp(-ce)
        if reduced_threshold is None:
          factor = (1 - pt) ** gamma
        elif pt < reduced_threshold:
          factor = 1.0
        else:
          factor = ((1 - pt) / reduced_threshold) ** gamma
        a = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
        total += a * factor * ce
        norm += factor
    value = total / max(count, 1)
    if normalized:
      value /= max(norm, 1e-6)
    per_class.append(value)
  w = np.ones(n_cls) if class_weights is None else np.asarray(class_weights)
  return float(np.sum(w * per_class) / np.sum(w))

"""Object-level metrics for nuclei: detection F1 at IoU >= 0.5, and AJI.

Objects are 8-connected components (`scipy.ndimage.label` with a full 3x3
structure; scipy ships with jax). A prediction's objects are the components
of its foreground; the ground truth's are its instance ids, each split into
its connected pieces (`components`).

* Detection: true and predicted objects are matched one-to-one, greedily by
  decreasing IoU among pairs with IoU >= 0.5 (above 0.5 a match is unique
  anyway; the greedy order only decides ties at exactly 0.5). TP = matched
  pairs, FP = unmatched predictions, FN = unmatched true objects,
  F1 = 2 TP / (2 TP + FP + FN).
* AJI, the aggregated Jaccard index (Kumar et al., IEEE TMI 2017): each true
  object G_i picks the predicted object S_j of largest IoU among those that
  overlap it (a predicted object may be picked by several G_i); C += |G_i ∩
  S_j|, U += |G_i ∪ S_j| (U += |G_i| if nothing overlaps); finally every
  predicted object never picked adds its area to U. AJI = C / U.

Counts are returned per image and summed over a data set (`summarize`), so
the set's AJI is ΣC / ΣU and its F1 comes from the pooled TP/FP/FN. Both
are 1 on an image (or set) where neither truth nor prediction has objects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)
COUNT_KEYS = ("tp", "fp", "fn", "aji_c", "aji_u")


def label(mask: np.ndarray) -> np.ndarray:
  """8-connected components of `mask > 0` as int32 ids 1..K (0 = background)."""
  out, _ = ndimage.label(np.asarray(mask) > 0, structure=_EIGHT)
  return out.astype(np.int32)


def components(ids: np.ndarray) -> np.ndarray:
  """Instance ids with every id split into its 8-connected pieces, renumbered
  1..K in order of (id, piece); 0 stays background."""
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"ids must be a 2D label image, got shape {ids.shape}")
  out, n = np.zeros(ids.shape, np.int32), 0
  for i, box in enumerate(ndimage.find_objects(ids.astype(np.int64)), 1):
    if box is None:
      continue
    pieces, k = ndimage.label(ids[box] == i, structure=_EIGHT)
    region = out[box]
    region[pieces > 0] = pieces[pieces > 0] + n
    n += k
  return out


def _overlaps(true: np.ndarray, pred: np.ndarray):
  """(intersection [T+1, P+1], true areas [T+1], pred areas [P+1])."""
  nt, np_ = int(true.max()), int(pred.max())
  joint = np.bincount(
    true.astype(np.int64).ravel() * (np_ + 1) + pred.ravel(),
    minlength=(nt + 1) * (np_ + 1),
  ).reshape(nt + 1, np_ + 1)
  return joint, joint.sum(1), joint.sum(0)


def counts(true_instances: np.ndarray, pred_instances: np.ndarray) -> dict:
  """`{tp, fp, fn, aji_c, aji_u}` for one image of instance ids (0 = none).

  Ids need not be consecutive; absent ids are ignored.
  """
  true, pred = np.asarray(true_instances), np.asarray(pred_instances)
  if true.shape != pred.shape or true.ndim != 2:
    raise ValueError(
      f"true_instances {true.shape} and pred_instances"
      f" {pred.shape} must be 2D arrays of one shape"
    )
  joint, area_t, area_p = _overlaps(true, pred)
  inter = joint[1:, 1:].astype(np.float64)
  t_ids, p_ids = np.flatnonzero(area_t[1:]), np.flatnonzero(area_p[1:])
  inter = inter[np.ix_(t_ids, p_ids)]
  a_t, a_p = area_t[1:][t_ids], area_p[1:][p_ids]
  union = a_t[:, None] + a_p[None, :] - inter
  iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)

  # Detection: greedy one-to-one matching by decreasing IoU, IoU >= 0.5.
  tp, used_t, used_p = 0, set(), set()
  ti, pj = np.nonzero(iou >= 0.5)
  for k in np.lexsort((pj, ti, -iou[ti, pj])):
    if ti[k] not in used_t and pj[k] not in used_p:
      used_t.add(ti[k])
      used_p.add(pj[k])
      tp += 1

  # AJI: each true object with its best-IoU overlapping prediction.
  c = u = 0
  picked = np.zeros(len(p_ids), bool)
  for i in range(len(t_ids)):
    j = int(np.argmax(iou[i])) if len(p_ids) else -1
    if j >= 0 and inter[i, j] > 0:
      c += inter[i, j]
      u += union[i, j]
      picked[j] = True
    else:
      u += a_t[i]
  u += a_p[~picked].sum()
  return {
    "tp": tp,
    "fp": len(p_ids) - tp,
    "fn": len(t_ids) - tp,
    "aji_c": int(c),
    "aji_u": int(u),
  }


def image_counts(true_instances: np.ndarray, pred_mask: np.ndarray) -> dict:
  """`counts` of a predicted foreground mask (its components are the objects)."""
  return counts(true_instances, label(pred_mask))


def summarize(total: dict) -> dict:
  """Detection precision/recall/F1 and AJI from summed `counts`."""
  tp, fp, fn = total["tp"], total["fp"], total["fn"]
  ratio = lambda a, b: float(a / b) if b else 1.0
  return {
    "object_f1": ratio(2 * tp, 2 * tp + fp + fn),
    "object_precision": ratio(tp, tp + fp),
    "object_recall": ratio(tp, tp + fn),
    "aji": ratio(total["aji_c"], total["aji_u"]),
    "objects_true": int(tp + fn),
    "objects_pred": int(tp + fp),
  }


def add(total: dict | None, c: dict) -> dict:
  """Sums two count dicts (`total` may be None)."""
  return dict(c) if total is None else {k: total[k] + c[k] for k in COUNT_KEYS}

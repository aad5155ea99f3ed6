"""Peers' published Dice-family test cases, mapped to pel_jax keywords.

Each case is a fact copied from a peer's own test suite (the inputs and the
expected value, with the repository and file it comes from) or, where the
peer publishes no value, a value worked out by hand from the peer's formula
(`source` then says "hand-computed from ..."). The mapping functions
(`monai`, `smp`, `kornia`, `keras`, `nnunet`) are the executable form of the
README table "Coming from another library": every convention that silently
differs between the peer and pel_jax is handled there, once.

This module is not collected by pytest: tests/compat_test.py runs the cases
whose `needs` (pel_loss keywords added by issue 10) the library has, and
`pending()` lists the others.

Inputs are written as the peers write them: channels first (`[B, C, *S]`),
targets `[B, 1, *S]` ids or `[B, C, *S]` one-hot/soft.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

import pel_jax

MONAI = "Project-MONAI/MONAI"
SMP = "qubvel-org/segmentation_models.pytorch"
KORNIA = "kornia/kornia"
KERAS = "keras-team/keras"
NNUNET = "MIC-DKFZ/nnUNet"


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  source: str  # "repo: path::test" or "hand-computed from repo: path".
  run: Callable[[], Any]  # Returns pel_jax's value(s).
  expected: Any
  rtol: float
  atol: float = 0.0
  needs: frozenset = frozenset()  # pel_loss keywords of issue 10 used.


def _chlast(x):
  return np.moveaxis(np.asarray(x, np.float64), 1, -1)


def _needs(opts):
  family = {
    "generalized",
    "squared",
    "soft_labels",
    "focal_gamma",
    "log_loss",
    "absent_classes",
    "average",
    "ce_weight",
    "ce_label_smoothing",
    "ce_class_weights",
    "ce_pos_weight",
  }
  return frozenset(k for k in opts if k in family)


# ----------------------------------------------------------------------------
# MONAI: DiceLoss, MaskedDiceLoss, GeneralizedDiceLoss, TverskyLoss.
# ----------------------------------------------------------------------------


def monai_options(loss, kw, num_classes):
  """pel_loss keywords for a MONAI loss built with the keywords `kw`."""
  opts = dict(exponent=1.0, reduction=kw.get("reduction", "mean"))
  if kw.get("sigmoid"):
    opts.update(from_logits=True, activation="sigmoid")
  if kw.get("softmax") and num_classes > 1:  # MONAI ignores it for C = 1.
    opts.update(from_logits=True, activation="softmax")
  snr, sdr = kw.get("smooth_nr", 1e-5), kw.get("smooth_dr", 1e-5)
  if loss == "TverskyLoss":  # Same smoothing; MONAI's defaults are 0.5/0.5.
    opts.update(
      fp_weight=kw.get("alpha", 0.5),
      fn_weight=kw.get("beta", 0.5),
      smooth_nr=snr,
      smooth_dr=sdr,
    )
  else:  # MONAI's 2 TP + s over sum p + sum g + s: our smoothing is s / 2.
    w = 1.0 if kw.get("jaccard") else 0.5
    opts.update(fp_weight=w, fn_weight=w, smooth_nr=snr / 2, smooth_dr=sdr / 2)
  if loss == "GeneralizedDiceLoss":
    opts["generalized"] = kw.get("w_type", "square")
  background = kw.get("include_background", True) or num_classes == 1
  if not background:
    opts["include_background"] = False
  if kw.get("weight") is not None:  # MONAI's weight omits class 0 then.
    weight = np.asarray(kw["weight"], np.float64)
    opts["class_weights"] = weight if background else np.r_[1.0, weight]
  if kw.get("batch"):
    opts["batch"] = True
  if kw.get("squared_pred"):
    opts["squared"] = True
  if kw.get("soft_label"):
    opts["soft_labels"] = True
  return opts


def monai(loss, kw, x, y, mask=None, other_act=None):
  """Runs the pel_jax equivalent of MONAI `loss(**kw)(x, y[, mask])`.

  MONAI's `other_act` is applied here and its output passed as
  probabilities. MaskedDiceLoss's published test values multiply the
  *inputs* (logits) and targets by the mask before the activation, so a
  masked logit becomes p = 0.5 after a sigmoid and still counts; pel_jax's
  `where` drops pixels after the activation instead, so those numbers need
  the same pre-multiplication. (MONAI 1.6.1 itself applies the activation
  first: compat_test's `EmptyClassRulesTest`.)
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  num_classes = x.shape[1]
  opts = monai_options(loss, kw, num_classes)
  if mask is not None:
    m = np.asarray(mask, np.float64)
    x, y = x * m, y * m
  if other_act is not None:
    x = other_act(x)
  if kw.get("to_onehot_y") and num_classes > 1:
    targets = y[:, 0].astype(np.int32)
  else:
    targets = _chlast(y)

  def run():
    return np.ravel(pel_jax.pel_loss(_chlast(x), targets, **opts))

  return run, _needs(opts)


def _log_softmax(x):
  x = x - np.max(x, axis=1, keepdims=True)
  return x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))


_X1 = [[[[1.0, -1.0], [-1.0, 1.0]]]]
_Y1 = [[[[1.0, 0.0], [1.0, 1.0]]]]
_X2 = [[[[1.0, -1.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]]
_Y2 = [[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [1.0, 0.0]]]]
_X2B = [[[[1.0, -0.0], [-1.0, 1.0]]], [[[1.0, -1.0], [-1.0, 1.0]]]]
_SOFT = [[[[0.3, 0.4], [0.7, 0.9]]], [[[1.0, 0.1], [0.5, 0.3]]]]
_X3 = [[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]
_Y3 = [[[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]]
_X4 = [[[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]
_Y4 = [[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]]

# (kwargs, x, y, expected[, other_act]) exactly as in MONAI's TEST_CASES.
_MONAI_DICE = [
  (dict(sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6), _X1, _Y1, 0.307576),
  (dict(sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4), _X2, _Y2, 0.416657),
  (dict(smooth_nr=1e-4, smooth_dr=1e-4, soft_label=True), _SOFT, _SOFT, 0.0),
  (
    dict(smooth_nr=1e-4, smooth_dr=1e-4, soft_label=False),
    _SOFT,
    _SOFT,
    0.307773,
  ),
  (
    dict(include_background=False, to_onehot_y=True, smooth_nr=0, smooth_dr=0),
    _X3,
    _Y3,
    0.0,
  ),
  (
    dict(to_onehot_y=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    0.435050,
  ),
  (
    dict(
      to_onehot_y=True,
      sigmoid=True,
      reduction="none",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    [[[0.296529], [0.415136]], [[0.599976], [0.428559]]],
  ),
  (
    dict(to_onehot_y=True, softmax=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    0.383713,
  ),
  (
    dict(
      to_onehot_y=True,
      softmax=True,
      reduction="sum",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    1.534853,
  ),
  (dict(sigmoid=True, squared_pred=True), _X1, _Y1, 0.178337),
  (dict(sigmoid=True, jaccard=True), _X1, _Y1, 0.470451),
  (dict(smooth_nr=1e-4, smooth_dr=1e-4), _X2, _Y2, 0.999963, np.tanh),
  (
    dict(to_onehot_y=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    -8.522593,
    _log_softmax,
  ),
  (
    dict(smooth_nr=1e-4, smooth_dr=1e-4, batch=True),
    _X2B,
    _Y2,
    0.774718,
    np.tanh,
  ),
  (dict(smooth_nr=0, smooth_dr=1e-4, batch=True), _X2B, _Y2, 0.774733, np.tanh),
  (
    dict(smooth_nr=0, smooth_dr=1e-4, batch=False),
    _X2B,
    _Y2,
    0.840058,
    np.tanh,
  ),
  (
    dict(to_onehot_y=True, smooth_nr=1e-4, smooth_dr=1e-4, weight=(0, 1)),
    _X4,
    _Y4,
    -8.268515,
    _log_softmax,
  ),
]

_MONAI_GDL = [
  (dict(sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6), _X1, _Y1, 0.307576),
  (dict(sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4), _X2, _Y2, 0.416597),
  (dict(smooth_nr=1e-4, smooth_dr=1e-4, soft_label=True), _SOFT, _SOFT, 0.0),
  (
    dict(smooth_nr=1e-4, smooth_dr=1e-4, soft_label=False),
    _SOFT,
    _SOFT,
    0.307748,
  ),
  (
    dict(
      include_background=False, to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0
    ),
    _X3,
    _Y3,
    0.0,
  ),
  (
    dict(to_onehot_y=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    0.469964,
  ),
  (
    dict(to_onehot_y=True, softmax=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    0.414507,
  ),
  (
    dict(
      to_onehot_y=True,
      softmax=True,
      reduction="sum",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    0.829015,
  ),
  (
    dict(
      to_onehot_y=True,
      softmax=True,
      reduction="none",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    [[[0.273476]], [[0.555539]]],
  ),
  (
    dict(
      include_background=False, to_onehot_y=True, smooth_nr=1e-8, smooth_dr=1e-8
    ),
    _X3,
    [[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]],
    0.0,
  ),
  (
    dict(
      to_onehot_y=True, softmax=True, w_type="simple", smooth_nr=0, smooth_dr=0
    ),
    [[[0.0, 10.0, 10.0, 10.0], [10.0, 0.0, 0.0, 0.0]]],
    [[[1, 1, 0, 0]]],
    0.250023,
  ),
  (dict(smooth_nr=1e-4, smooth_dr=1e-4), _X2, _Y2, 0.99970, np.tanh),
  (
    dict(to_onehot_y=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    -0.097833,
    _log_softmax,
  ),
]

_MONAI_TVERSKY = [
  (dict(sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6), _X1, _Y1, 0.307576),
  (dict(sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4), _X2, _Y2, 0.416657),
  (dict(smooth_nr=1e-4, smooth_dr=1e-4, soft_label=True), _SOFT, _SOFT, 0.0),
  (
    dict(smooth_nr=1e-4, smooth_dr=1e-4, soft_label=False),
    _SOFT,
    _SOFT,
    0.307773,
  ),
  (
    dict(include_background=False, to_onehot_y=True, smooth_nr=0, smooth_dr=0),
    _X3,
    _Y3,
    0.0,
  ),
  (
    dict(
      include_background=False, to_onehot_y=True, smooth_nr=0, smooth_dr=1e-3
    ),
    _X3,
    _Y3,
    0.000999,
  ),
  (
    dict(to_onehot_y=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    0.435050,
  ),
  (dict(to_onehot_y=True, sigmoid=True, batch=True), _X4, _Y4, 0.422979),
  (
    dict(
      to_onehot_y=True,
      sigmoid=True,
      reduction="sum",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    1.74013,
  ),
  (
    dict(to_onehot_y=True, softmax=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    0.383713,
  ),
  (
    dict(
      to_onehot_y=True,
      softmax=True,
      reduction="none",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    [[0.210961, 0.295339], [0.599952, 0.428547]],
  ),
  (
    dict(sigmoid=True, alpha=0.3, beta=0.7, smooth_nr=1e-6, smooth_dr=1e-6),
    _X1,
    _Y1,
    0.3589,
  ),
  (
    dict(sigmoid=True, alpha=0.7, beta=0.3, smooth_nr=1e-6, smooth_dr=1e-6),
    _X1,
    _Y1,
    0.247366,
  ),
  (dict(smooth_nr=1e-4, smooth_dr=1e-4), _X2, _Y2, 0.999963, np.tanh),
  (dict(smooth_nr=0, smooth_dr=1e-3, batch=True), _X2, _Y2, 0.999963, np.tanh),
  (
    dict(to_onehot_y=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    -8.533317,
    _log_softmax,
  ),
]

# (kwargs, x, y, mask, expected) from MONAI's MaskedDiceLoss TEST_CASES.
_MONAI_MASKED = [
  (
    dict(sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6),
    _X1,
    _Y1,
    [[[[0.0, 0.0], [1.0, 1.0]]]],
    0.500,
  ),
  (
    dict(sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X2,
    _Y2,
    [[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 1.0], [0.0, 0.0]]]],
    0.422969,
  ),
  (
    dict(include_background=False, to_onehot_y=True, smooth_nr=0, smooth_dr=0),
    _X3,
    _Y3,
    [[[1.0, 1.0, 1.0]], [[0.0, 1.0, 0.0]]],
    0.0,
  ),
  (
    dict(to_onehot_y=True, sigmoid=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    [[[1.0, 1.0, 0.0]]],
    0.47033,
  ),
  (
    dict(
      to_onehot_y=True,
      sigmoid=True,
      reduction="none",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    None,
    [[[0.296529], [0.415136]], [[0.599976], [0.428559]]],
  ),
  (
    dict(to_onehot_y=True, softmax=True, smooth_nr=1e-4, smooth_dr=1e-4),
    _X4,
    _Y4,
    None,
    0.383713,
  ),
  (
    dict(
      to_onehot_y=True,
      softmax=True,
      reduction="sum",
      smooth_nr=1e-4,
      smooth_dr=1e-4,
    ),
    _X4,
    _Y4,
    None,
    1.534853,
  ),
  (
    dict(sigmoid=True, smooth_nr=1e-6, smooth_dr=1e-6),
    _X1,
    _Y1,
    None,
    0.307576,
  ),
  (
    dict(sigmoid=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5),
    _X1,
    _Y1,
    None,
    0.178337,
  ),
  (
    dict(sigmoid=True, jaccard=True, smooth_nr=1e-5, smooth_dr=1e-5),
    _X1,
    _Y1,
    None,
    0.470451,
  ),
]


def _monai_cases():
  tables = (
    ("DiceLoss", "test_dice_loss.py", _MONAI_DICE),
    ("GeneralizedDiceLoss", "test_generalized_dice_loss.py", _MONAI_GDL),
    ("TverskyLoss", "test_tversky_loss.py", _MONAI_TVERSKY),
  )
  rtols = {"TverskyLoss": 1e-4}  # MONAI's own tolerances: 1e-5, Tversky 1e-4.
  for loss, path, table in tables:
    for i, (kw, x, y, expected, *act) in enumerate(table):
      run, needs = monai(loss, kw, x, y, other_act=act[0] if act else None)
      yield Case(
        f"monai_{loss}_{i}",
        f"{MONAI}: tests/losses/{path} TEST_CASES[{i}]",
        run,
        expected,
        rtols.get(loss, 1e-5),
        1e-6,
        needs,
      )
  for i, (kw, x, y, mask, expected) in enumerate(_MONAI_MASKED):
    run, needs = monai("MaskedDiceLoss", kw, x, y, mask=mask)
    yield Case(
      f"monai_MaskedDiceLoss_{i}",
      f"{MONAI}: tests/losses/test_masked_dice_loss.py TEST_CASES[{i}]",
      run,
      expected,
      1e-5,
      1e-6,
      needs,
    )


# ----------------------------------------------------------------------------
# MONAI DiceCELoss: Dice part + CE of the raw input (see monai_dice_ce).
# ----------------------------------------------------------------------------


def monai_dice_ce_loss(kw, y, num_classes):
  """MONAI 1.6.1 DiceCELoss(**kw)(x, y) as a function of x, channels last.

  DiceCELoss feeds the *same* input to both terms. Its CE is torch's
  CrossEntropyLoss(label_smoothing=eps) over the channels when C > 1 (even
  with sigmoid=True) and BCEWithLogitsLoss, never smoothed, when C = 1.
  Where pel_jax's fused CE is that loss (softmax=True with C > 1, or
  sigmoid=True with C = 1) the README's one call is used:
  `lambda_dice * pel_loss(x, t, from_logits=True, ce_weight=lambda_ce /
  lambda_dice, ce_label_smoothing=eps if C > 1 else 0, ...)`. Otherwise
  (softmax=False, MONAI's default: the Dice sees the raw input; or sigmoid
  with C > 1: a sigmoid Dice beside a softmax CE) the Dice is pel_jax's
  and the CE optax's.

  MONAI's ``weight`` (all C classes) is the CE's class weights
  (``ce_class_weights``, torch's Σ w_y·CE / Σ w_y for ids) for C > 1, its
  BCE ``pos_weight`` (``ce_pos_weight``) for C = 1, and the Dice's class
  weights (``weight[1:]`` without background; none for C = 1, where MONAI's
  Dice ignores it). With one-hot float targets torch's weighted CE takes
  its probability-target path, which divides by the pixel count:
  ``cross_entropy(..., reduction="sum")`` over the pixel count.
  """
  import optax  # pylint: disable=g-import-not-at-top

  y = np.asarray(y, np.float64)
  weight = kw.get("weight")
  kw = {k: v for k, v in kw.items() if k != "weight"}
  if weight is not None and num_classes > 1:
    kw["weight"] = weight[1:] if not kw.get("include_background", 1) else weight
  opts = monai_options("DiceLoss", kw, num_classes)
  lam_dice, lam_ce = kw.get("lambda_dice", 1.0), kw.get("lambda_ce", 1.0)
  smoothing = kw.get("label_smoothing", 0.0) if num_classes > 1 else 0.0
  ids = None
  if y.shape[1] == 1 and num_classes > 1:
    ids = y[:, 0].astype(np.int32)
    dice_targets = ids if kw.get("to_onehot_y") else _chlast(y)
    ce_targets = np.eye(num_classes)[ids]
  else:  # One-hot, float or integer: pel_jax reads integer arrays as ids.
    dice_targets = ce_targets = _chlast(y)
  fused = opts.get("activation") == (
    "sigmoid" if num_classes == 1 else "softmax"
  )
  ce_opts = {}
  if weight is not None:
    name = "ce_pos_weight" if num_classes == 1 else "ce_class_weights"
    ce_opts = {name: np.asarray(weight, np.float64)}
  # The fused weighted CE normalises by Σ w_y, as torch does for ids only.
  fused = fused and (weight is None or num_classes == 1 or ids is not None)

  def loss(x):
    if fused:
      return lam_dice * pel_jax.pel_loss(
        x,
        dice_targets,
        ce_weight=lam_ce / lam_dice,
        ce_label_smoothing=smoothing,
        **ce_opts,
        **opts,
      )
    if weight is not None:
      ce = pel_jax.cross_entropy(
        x,
        ids if ids is not None else ce_targets,
        class_weights=ce_opts.get("ce_class_weights"),
        pos_weight=ce_opts.get("ce_pos_weight"),
        label_smoothing=smoothing,
        reduction="mean" if ids is not None else "sum",
      )
      if ids is None:
        ce = ce / (np.size(ce_targets) // num_classes)
    elif num_classes == 1:
      ce = jnp.mean(optax.sigmoid_binary_cross_entropy(x, ce_targets))
    else:
      q = optax.smooth_labels(ce_targets, smoothing)
      ce = jnp.mean(optax.softmax_cross_entropy(x, q))
    dice = pel_jax.pel_loss(x, dice_targets, **opts)
    return lam_dice * dice + lam_ce * ce

  return loss


def monai_dice_ce(kw, x, y):
  """Runs the pel_jax equivalent of MONAI `DiceCELoss(**kw)(x, y)`."""
  x = np.asarray(x, np.float64)
  loss = monai_dice_ce_loss(kw, y, x.shape[1])
  return lambda: np.ravel(loss(_chlast(x)))


_DICE_CE = [
  (dict(to_onehot_y=True), _X3, _Y3, 0.3133),
  (dict(to_onehot_y=False), _X3, _X3, 0.3133),
  (dict(to_onehot_y=False), _X3, np.asarray(_X3, np.uint8), 0.3133),
  (
    dict(include_background=False, to_onehot_y=True, weight=(1.0, 1.0)),
    [
      [[100.0, 100.0, 0.0], [0.0, 0.0, 1.0]],
      [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    ],
    _Y3,
    0.2088,
  ),
  (
    dict(
      include_background=False,
      to_onehot_y=True,
      weight=(1.0, 1.0),
      lambda_dice=1.0,
      lambda_ce=2.0,
    ),
    [
      [[100.0, 100.0, 0.0], [0.0, 0.0, 1.0]],
      [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    ],
    _Y3,
    0.4176,
  ),
  # [5]: weight=(0, 1) without background: torch's class-weighted CE mean
  # (Σ w_y·CE / Σ w_y) beside the Dice of the raw input.
  (
    dict(include_background=False, to_onehot_y=True, weight=(0.0, 1.0)),
    [
      [[100.0, 100.0, 0.0], [0.0, 0.0, 1.0]],
      [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    ],
    _Y3,
    0.3133,
  ),
  # [6]: C = 1, sigmoid=True, weight=(0.5,): the BCE's pos_weight (MONAI's
  # Dice ignores a weight for one class).
  (
    dict(weight=(0.5,), sigmoid=True),
    [[[0.8, 0.6, 0.0]], [[0.0, 0.0, 0.9]]],
    [[[0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]],
    1.445239,
  ),
]


def _dice_ce_cases():
  for i, (kw, x, y, expected) in enumerate(_DICE_CE):
    yield Case(
      f"monai_DiceCELoss_{i}",
      f"{MONAI}: tests/losses/test_dice_ce_loss.py TEST_CASES[{i}]",
      monai_dice_ce(kw, x, y),
      expected,
      1e-4,
      1e-4,
      frozenset(
        {"ce_class_weights"} if i >= 3 else ()
      ),  # Weighted CE (all-ones weights in [3], [4]).
    )


def _fused_ce_case():
  """Fused CE: MONAI's published Dice value plus optax's CE of the logits."""
  import optax  # pylint: disable=g-import-not-at-top

  kw = dict(to_onehot_y=True, softmax=True, smooth_nr=1e-4, smooth_dr=1e-4)
  opts = monai_options("DiceLoss", kw, 2)
  logits, ids = _chlast(_X4), np.asarray(_Y4)[:, 0].astype(np.int32)

  def run():  # pel_loss + 0.5 CE - optax's CE: MONAI's Dice value.
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, ids)
    fused = pel_jax.pel_loss(logits, ids, ce_weight=0.5, **opts)
    return np.ravel(fused - 0.5 * np.mean(ce))

  yield Case(
    "monai_DiceLoss_7_fused_ce",
    f"{MONAI}: tests/losses/test_dice_loss.py TEST_CASES[7] (+ 0.5 optax CE)",
    run,
    0.383713,
    1e-5,
    1e-6,
    frozenset({"ce_weight"}),
  )


# ----------------------------------------------------------------------------
# segmentation_models.pytorch: DiceLoss, JaccardLoss, TverskyLoss.
# ----------------------------------------------------------------------------


def smp(loss, mode, y_pred, y_true, **kw):
  """Runs the pel_jax equivalent of smp `loss(mode, ...)(y_pred, y_true)`.

  Returns `(run, needs)`; `smp_loss` is the mapping as a function of
  `y_pred`.
  """
  fn, needs = smp_loss(loss, mode, y_true, **kw)
  y_pred = np.asarray(y_pred, np.float64)
  return (lambda: np.ravel(fn(y_pred))), needs


def smp_loss(
  loss,
  mode,
  y_true,
  *,
  from_logits=True,
  smooth=0.0,
  log_loss=False,
  ignore_index=None,
  alpha=0.5,
  beta=0.5,
  class_weights=None,
):
  """pel_jax equivalent of smp `loss(mode, ...)(·, y_true)`, of `y_pred`.

  smp sums over the batch too (batch=True), smooths like pel_jax (no factor
  2), defaults to from_logits=True, zeroes the loss of classes with no
  target pixel in the batch and divides by all classes (or by Σ w with
  ``class_weights``: Σ w·L / Σ w): pel_jax's ``absent_classes="exclude"``
  with ``reduction="none"`` returns those zeros, the mean over the C
  entries is smp's, and ``class_weights=w·C/Σw`` turns that mean into
  Σ w·L / Σ w. Returns `(fn, needs)`.
  """
  y_true = np.asarray(y_true)
  bs = y_true.shape[0]
  opts = dict(exponent=1.0, batch=True, smooth_nr=smooth, smooth_dr=smooth)
  if loss == "DiceLoss":
    opts.update(fp_weight=0.5, fn_weight=0.5)
  elif loss == "JaccardLoss":
    opts.update(fp_weight=1.0, fn_weight=1.0)
  else:
    opts.update(fp_weight=alpha, fn_weight=beta)
  if mode == "multiclass":
    t = y_true.reshape(bs, -1).astype(np.int32)
    if ignore_index is not None:
      opts["ignore_index"] = ignore_index

    def layout(y_pred):
      return jnp.moveaxis(y_pred.reshape(bs, y_pred.shape[1], -1), 1, -1)

    num = None
    activation = "softmax"
  else:
    num = 1 if mode == "binary" else y_true.shape[1]
    t = np.moveaxis(y_true.reshape(bs, num, -1), 1, -1).astype(np.float64)
    if ignore_index is not None:  # Per-pixel only: binary mode.
      keep = t[..., 0] != ignore_index
      opts["where"] = keep
      t = t * keep[..., None]

    def layout(y_pred):
      return jnp.moveaxis(y_pred.reshape(bs, num, -1), 1, -1)

    activation = "sigmoid"
  if from_logits:
    opts.update(from_logits=True, activation=activation)
  opts.update(absent_classes="exclude", reduction="none")
  if log_loss:
    opts["log_loss"] = True
  if class_weights is not None:
    w = np.asarray(class_weights, np.float64)
    opts["class_weights"] = w * w.size / w.sum()

  def fn(y_pred):
    return jnp.mean(pel_jax.pel_loss(layout(jnp.asarray(y_pred)), t, **opts))

  return fn, _needs(opts)


def _smp_score(kind, y_pred, y_true, dims=None):
  """smp's F.soft_{dice,jaccard,tversky}_score: pel_jax's 1 - loss."""
  y_pred = np.asarray(y_pred, np.float64)
  y_true = np.asarray(y_true, np.float64)
  if dims is None:  # Sums over everything: one image, one class.
    x, t = y_pred.reshape(1, -1, 1), y_true.reshape(1, -1, 1)
  else:  # dims=[1] on [rows, pixels]: rows are classes.
    x, t = y_pred.T[None], y_true.T[None]
  w = 1.0 if kind == "jaccard" else 0.5
  opts = dict(
    exponent=1.0, fp_weight=w, fn_weight=w, smooth_nr=0.0, smooth_dr=0.0
  )
  return lambda: np.ravel(1.0 - pel_jax.pel_loss(x, t, **opts))


def smp_soft_ce(y_pred, y_true, *, smooth_factor=0.0, ignore_index=-100):
  """pel_jax equivalent of smp `SoftCrossEntropyLoss(...)(y_pred, y_true)`.

  `y_pred` `[N, C]` logits (channels last here), `y_true` `[N]` ids. smp's
  mean divides by every pixel, the ignored ones too: the sum over the
  count of all pixels.
  """
  x = np.asarray(y_pred, np.float64)[None]
  t = np.asarray(y_true, np.int32)[None]
  return lambda: np.ravel(
    pel_jax.cross_entropy(
      x,
      t,
      label_smoothing=smooth_factor,
      ignore_index=ignore_index,
      reduction="sum",
    )
    / t.size
  )


def smp_soft_bce(y_pred, y_true, *, smooth_factor=0.0, ignore_index=-100):
  """pel_jax equivalent of smp `SoftBCEWithLogitsLoss(...)(y_pred, y_true)`.

  smp smooths the targets to f and 1 - f (``label_smoothing=2 f``), and
  its mean divides by every entry, the ignored ones too.
  """
  x = np.asarray(y_pred, np.float64)[None, :, None]
  t = np.asarray(y_true)[None]
  return lambda: np.ravel(
    pel_jax.cross_entropy(
      x,
      (t == 1).astype(np.float64)[..., None],
      label_smoothing=2 * smooth_factor,
      where=t != ignore_index,
      reduction="sum",
    )
    / t.size
  )


def _smp_soft_ce_cases():
  path = f"{SMP}: tests/test_losses.py::"
  nine = [[9 if i == j else -9 for j in range(4)] for i in range(4)]
  yield Case(
    "smp_soft_ce_loss",
    path + "test_soft_ce_loss",
    smp_soft_ce(nine, [0, 1, -100, 3], smooth_factor=0.1),
    1.0125,
    0.0,
    1e-4,
  )
  yield Case(
    "smp_soft_bce_loss",
    path + "test_soft_bce_loss",
    smp_soft_bce([-9, 9, 1, 9, -9], [0, 1, -100, 1, 0], smooth_factor=0.1),
    0.7201,
    0.0,
    1e-4,
  )


def _smp_cases():
  path = f"{SMP}: tests/test_losses.py::"
  score_cases = [
    (
      "jaccard",
      "test_soft_jaccard_score",
      None,
      [
        ([1, 1, 1, 1], [1, 1, 1, 1], 1.0),
        ([0, 1, 1, 0], [0, 1, 1, 0], 1.0),
        ([1, 1, 1, 1], [1, 1, 0, 0], 0.5),
      ],
    ),
    (
      "jaccard",
      "test_soft_jaccard_score_2",
      [1],
      [
        ([[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 1, 0, 0], [0, 0, 1, 1]], 1.0),
        ([[1, 1, 0, 0], [0, 0, 1, 1]], [[0, 0, 1, 0], [0, 1, 0, 0]], 0.0),
        ([[1, 1, 0, 0], [0, 0, 0, 1]], [[1, 1, 0, 0], [0, 0, 0, 0]], 0.5),
      ],
    ),
    (
      "dice",
      "test_soft_dice_score",
      None,
      [
        ([1, 1, 1, 1], [1, 1, 1, 1], 1.0),
        ([0, 1, 1, 0], [0, 1, 1, 0], 1.0),
        ([1, 1, 1, 1], [1, 1, 0, 0], 2.0 / 3.0),
      ],
    ),
    (
      "dice",
      "test_soft_tversky_score",
      None,
      [  # alpha = beta = 0.5.
        ([1, 1, 1, 1], [1, 1, 1, 1], 1.0),
        ([0, 1, 1, 0], [0, 1, 1, 0], 1.0),
        ([1, 1, 1, 1], [1, 1, 0, 0], 2.0 / 3.0),
      ],
    ),
  ]
  for kind, test, dims, rows in score_cases:
    for i, (y_true, y_pred, expected) in enumerate(rows):
      run = _smp_score(kind, y_pred, y_true, dims)
      if dims is not None:
        run = (lambda r: lambda: np.mean(r()))(run)
      yield Case(
        f"smp_{test}_{i}", path + test + f"[{i}]", run, expected, 1e-5, 1e-5
      )
  binary = [  # (y_pred, y_true, expected): shared by Dice, Tversky, Jaccard.
    ([1.0, 1.0, 1.0], [1, 1, 1], 0.0),
    ([1.0, 0.0, 1.0], [1, 0, 1], 0.0),
    ([0.0, 0.0, 0.0], [0, 0, 0], 0.0),
    ([1.0, 1.0, 1.0], [0, 0, 0], 0.0),  # No target: smp's loss is 0.
    ([1.0, 0.0, 1.0], [0, 1, 0], 1.0),
    ([0.0, 0.0, 0.0], [1, 1, 1], 1.0),
  ]
  for loss, test in (
    ("DiceLoss", "test_dice_loss_binary"),
    ("TverskyLoss", "test_tversky_loss_binary"),
    ("JaccardLoss", "test_binary_jaccard_loss"),
  ):
    for i, (y_pred, y_true, expected) in enumerate(binary):
      run, needs = smp(
        loss,
        "binary",
        np.reshape(y_pred, (1, 1, 1, -1)),
        np.reshape(y_true, (1, 1, 1, -1)),
        from_logits=False,
      )
      yield Case(
        f"smp_{test}_{i}",
        path + test + f"[{i}]",
        run,
        expected,
        0.0,
        1e-5,
        needs,
      )
  multiclass = [
    ([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]], [[0, 0, 1, 1]], 0.0),
    ([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]], [[1, 1, 0, 0]], 1.0),
    (
      [[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]],
      [[1, 1, 0, 0]],
      1.0 - 1.0 / 3.0,
    ),
  ]
  for i, (y_pred, y_true, expected) in enumerate(multiclass):
    run, needs = smp(
      "JaccardLoss", "multiclass", y_pred, y_true, from_logits=False
    )
    yield Case(
      f"smp_test_multiclass_jaccard_loss_{i}",
      path + f"test_multiclass_jaccard_loss[{i}]",
      run,
      expected,
      0.0,
      1e-5,
      needs,
    )
  a = [[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]]
  multilabel = [
    (a, a, 0.0),
    (a, 1.0 - np.asarray(a), 1.0),
    (
      [[[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]]],
      [[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]],
      1.0 - 1.0 / 3.0,
    ),
  ]
  for i, (y_pred, y_true, expected) in enumerate(multilabel):
    run, needs = smp(
      "JaccardLoss", "multilabel", y_pred, y_true, from_logits=False
    )
    yield Case(
      f"smp_test_multilabel_jaccard_loss_{i}",
      path + f"test_multilabel_jaccard_loss[{i}]",
      run,
      expected,
      0.0,
      1e-5,
      needs,
    )
  # smp publishes no case for log_loss or ignore_index; these two reuse the
  # published "1 - 1/3" multiclass input with values worked out by hand
  # from segmentation_models_pytorch/losses/jaccard.py.
  hand = f"hand-computed from {SMP}: segmentation_models_pytorch/losses/"
  y_pred = [[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]]
  # Both classes: I = 1, union = 3: -log(1/3) each.
  run, needs = smp(
    "JaccardLoss",
    "multiclass",
    y_pred,
    [[1, 1, 0, 0]],
    from_logits=False,
    log_loss=True,
  )
  yield Case(
    "smp_jaccard_multiclass_log_loss",
    hand + "jaccard.py (log_loss=True)",
    run,
    np.log(3.0),
    1e-12,
    0.0,
    needs,
  )
  # Pixel 3 ignored: class 0 pred {0, 2} true {2}: 1/2; class 1 pred {1}
  # true {0, 1}: 1/2; loss 1 - 1/2.
  run, needs = smp(
    "JaccardLoss",
    "multiclass",
    y_pred,
    [[1, 1, 0, 255]],
    from_logits=False,
    ignore_index=255,
  )
  yield Case(
    "smp_jaccard_multiclass_ignore_index",
    hand + "jaccard.py (ignore_index=255)",
    run,
    0.5,
    1e-12,
    0.0,
    needs,
  )
  # Binary, pixel 1 ignored: pred {0, 2}, true {0}: Dice 2/3.
  run, needs = smp(
    "DiceLoss",
    "binary",
    np.reshape([1.0, 1.0, 1.0], (1, 1, 1, 3)),
    np.reshape([1, -1, 0], (1, 1, 1, 3)),
    from_logits=False,
    ignore_index=-1,
  )
  yield Case(
    "smp_dice_binary_ignore_index",
    hand + "dice.py (binary, ignore_index=-1)",
    run,
    1.0 / 3.0,
    1e-12,
    0.0,
    needs,
  )


# ----------------------------------------------------------------------------
# kornia: dice_loss (micro/macro), tversky_loss.
# ----------------------------------------------------------------------------


def kornia_options(
  loss,
  *,
  version="0.9.0",
  average="micro",
  eps=1e-8,
  weight=None,
  ignore_index=-100,
  alpha=0.5,
  beta=0.5,
):
  """pel_loss keywords for kornia `loss(pred, target, ...)` (softmax logits).

  kornia's Dice is 2 I / (card + eps) per sample: our smooth_dr = eps / 2;
  its Tversky has eps in the denominator only. kornia 0.9.0 averages its
  macro Dice and its Tversky per sample over the classes present in that
  sample's (non-ignored) target, then over the samples, a fully ignored
  sample counting 1: absent_classes="exclude_per_sample". kornia 0.8.2
  averaged the macro Dice over all classes and summed its Tversky over the
  classes (micro). The macro `weight` is a weighted mean (sum w L / sum w):
  class_weights = w C / sum w, exact when every class is present in every
  sample (0.9.0 divides by the weights of the present classes only). The
  micro `weight` multiplies p and g; pel_jax refuses class_weights with
  average="micro" (no per-class loss to weight).
  """
  assert version in ("0.8.2", "0.9.0"), version
  per_sample = dict(absent_classes="exclude_per_sample")
  opts = dict(
    exponent=1.0,
    from_logits=True,
    activation="softmax",
    smooth_nr=0.0,
    ignore_index=ignore_index,
  )
  if loss == "dice_loss":
    opts.update(fp_weight=0.5, fn_weight=0.5, smooth_dr=eps / 2)
    if average == "micro":
      opts["average"] = "micro"
    elif version == "0.9.0":
      opts.update(per_sample)
  else:
    opts.update(fp_weight=alpha, fn_weight=beta, smooth_dr=eps)
    opts.update(per_sample if version == "0.9.0" else dict(average="micro"))
  if weight is not None:
    w = np.asarray(weight, np.float64)
    opts["class_weights"] = w if average == "micro" else w * len(w) / np.sum(w)
  return opts


def kornia(loss, pred, target, **kw):
  """Runs the pel_jax equivalent of kornia `loss(pred, target, **kw)`.

  `kw` are `kornia_options`' (`version` included). Cases with a micro
  `weight` need "class_weights_with_micro", which pel_jax does not offer.
  """
  pred = np.asarray(pred, np.float64)
  target = np.asarray(target)
  bs = max(pred.shape[0], target.shape[0])  # kornia's tests broadcast.
  x = np.broadcast_to(_chlast(pred), (bs,) + _chlast(pred).shape[1:])
  t = np.broadcast_to(target, (bs,) + target.shape[1:]).astype(np.int32)
  opts = kornia_options(loss, **kw)
  run = lambda: np.ravel(pel_jax.pel_loss(x, t, **opts))
  needs = _needs(opts)
  if "class_weights" in opts and opts.get("average") == "micro":
    needs |= {"class_weights_with_micro"}
  return run, needs


def _kornia_cases():
  """kornia v0.8.2's published cases, through its mapping (see below)."""
  dice = f"{KORNIA} v0.8.2: tests/losses/test_dice.py::TestDiceLoss::"
  tversky = f"{KORNIA} v0.8.2: tests/losses/test_tversky.py::TestTverskyLoss::"

  def kornia_082(*args, **kw):
    return kornia(*args, version="0.8.2", **kw)

  # test_all_zeros: class 0 at logit 10, the others 1, all labels 0.
  zeros = np.ones((2, 3, 1, 2))
  zeros[:, 0] = 10.0
  labels0 = np.zeros((2, 1, 2), np.int64)
  for ignore in (-100, None):
    for loss, path, kw in (
      ("dice_loss", dice, {}),
      ("tversky_loss", tversky, {}),
    ):
      run, needs = kornia_082(loss, zeros, labels0, ignore_index=ignore, **kw)
      yield Case(
        f"kornia_{loss}_all_zeros_{ignore}",
        path + f"test_all_zeros[{ignore}]",
        run,
        0.0,
        1e-3,
        1e-3,
        needs,
      )
  e1, e10 = np.exp(1.0), np.exp(10.0)
  # test_averaging_micro (logits batch 1, labels batch 2: broadcast).
  logits = np.zeros((1, 2, 4, 1))
  logits[:, 0, 0:3], logits[:, 0, 3:4] = 10.0, 1.0
  logits[:, 1, 0:3], logits[:, 1, 3:4] = 1.0, 10.0
  inter = (3.0 * e10 + e1) / (e1 + e10)
  run, needs = kornia_082(
    "dice_loss", logits, np.zeros((2, 4, 1), np.int64), average="micro"
  )
  yield Case(
    "kornia_dice_averaging_micro",
    dice + "test_averaging_micro",
    run,
    1.0 - 2.0 * inter / (8.0 + 1e-8),
    1e-3,
    1e-3,
    needs,
  )
  # test_averaging_macro.
  logits = np.zeros((1, 2, 1, 4))
  logits[:, 0, :, 0:3], logits[:, 0, :, 3:4] = 10.0, 1.0
  logits[:, 1, :, 0:3], logits[:, 1, :, 3:4] = 1.0, 10.0
  card1 = 4.0 + inter
  card2 = (1.0 * e10 + 3.0 * e1) / (e1 + e10)
  expected = (
    (1.0 - 2.0 * inter / (card1 + 1e-8)) + (1.0 - 0.0 / (card2 + 1e-8))
  ) / 2.0
  run, needs = kornia_082(
    "dice_loss", logits, np.zeros((2, 1, 4), np.int64), average="macro"
  )
  yield Case(
    "kornia_dice_averaging_macro",
    dice + "test_averaging_macro",
    run,
    expected,
    1e-3,
    1e-3,
    needs,
  )
  # test_weight: class 0 right, class 1 wrong, class 2 2/3 right.
  logits = np.zeros((4, 3, 1, 4))
  logits[:, 0, :, 0] = 100.0
  logits[:, 2, :, 1:] = 100.0
  labels = np.broadcast_to(np.array([0, 1, 2, 2]), (4, 1, 4))
  for avg in ("micro", "macro"):
    for weight, expected in (
      ((1.0, 0.0, 0.0), 0.0),
      ((0.0, 1.0, 0.0), 1.0),
      ((0.0, 0.0, 1.0), 0.2),
    ):
      run, needs = kornia_082(
        "dice_loss", logits, labels, average=avg, weight=weight
      )
      yield Case(
        f"kornia_dice_weight_{avg}_{weight}",
        dice + f"test_weight[{avg}]",
        run,
        expected,
        1e-3,
        1e-3,
        needs,
      )
  run, needs = kornia_082(
    "dice_loss", logits, labels, average="macro", weight=(0.3, 0.7, 0.0)
  )
  yield Case(
    "kornia_dice_weight_macro_nonbinary",
    dice + "test_weight[macro]",
    run,
    0.7,
    1e-3,
    1e-3,
    needs,
  )
  # test_ignore_index: pixels 2, 3 ignored; the kept ones 1 right, 1 wrong.
  for ignore in (-100, 255):
    logits, labels = _kornia_ignore_index_inputs(ignore)
    for loss, path in (("dice_loss", dice), ("tversky_loss", tversky)):
      run, needs = kornia_082(loss, logits, labels, ignore_index=ignore)
      yield Case(
        f"kornia_{loss}_ignore_index_{ignore}",
        path + f"test_ignore_index[{ignore}]",
        run,
        0.5,
        1e-3,
        1e-3,
        needs,
      )


def _kornia_ignore_index_inputs(ignore):
  """kornia's test_ignore_index inputs: channels first `[2, 2, 1, 4]`
  logits (class 0 at pixel 0, class 1 elsewhere) and labels of class 0 with
  pixels 2 and 3 set to `ignore`."""
  logits = np.zeros((2, 2, 1, 4))
  logits[:, 0, :, 0] = 100.0
  logits[:, 1, :, 1:] = 100.0
  labels = np.zeros((2, 1, 4), np.int64)
  labels[..., 2:] = ignore
  return logits, labels


def _kornia_09_cases():
  """kornia's per-sample Tversky tests (its 0.9.0 convention), as published.

  From the test file of kornia's per-sample Tversky (kornia 0.9.0, run, gives
  these values). The logits are log-probabilities: their softmax is the
  probabilities.
  """
  path = f"{KORNIA}: tests/losses/test_tversky.py::TestTverskyLoss::"
  probabilities = np.array(
    [
      [[[0.5, 0.25, 0.125, 0.5]], [[0.25, 0.5, 0.125, 0.25]]]
      + [[[0.25, 0.25, 0.75, 0.25]]],
      [[[0.5, 0.25, 0.5, 0.25]], [[0.25, 0.5, 0.25, 0.5]]]
      + [[[0.25, 0.25, 0.25, 0.25]]],
    ]
  )
  labels = np.array([[[0, 1, 1, 0]], [[2, 2, 2, 2]]])
  for alpha, beta in ((0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (1.0, 1.0)):
    for eps in (0.0, 0.25):
      # Sample 0: (TP, FP, FN) = (1, 3/8, 1), (5/8, 1/2, 11/8) for its
      # classes 0 and 1; sample 1: (1, 0, 3) for its only class, 2.
      score_0 = 1 / (1 + alpha * 0.375 + beta + eps)
      score_1 = 0.625 / (0.625 + alpha * 0.5 + beta * 1.375 + eps)
      score_2 = 1 / (1 + beta * 3 + eps)
      run, needs = kornia(
        "tversky_loss",
        np.log(probabilities),
        labels,
        alpha=alpha,
        beta=beta,
        eps=eps,
      )
      yield Case(
        f"kornia_tversky_target_presence_per_sample_{alpha}_{beta}_{eps}",
        path + "test_target_presence_per_sample",
        run,
        1 - ((score_0 + score_1) / 2 + score_2) / 2,
        1e-7,
        1e-7,
        needs,
      )
  # A fully ignored sample counts 1; the valid one: TP = 1/3, FN = 2/3.
  for ignore in (-100, 0, 255):
    for eps in (0.0, 1e-8):
      run, needs = kornia(
        "tversky_loss",
        np.zeros((2, 3, 1, 2)),
        np.array([[[1, ignore]], [[ignore, ignore]]]),
        alpha=0.3,
        beta=0.7,
        eps=eps,
        ignore_index=ignore,
      )
      yield Case(
        f"kornia_tversky_ignored_samples_{ignore}_{eps}",
        path + f"test_ignored_samples[{eps}-{ignore}]",
        run,
        1 - (1 / 2.4) / 2,
        1e-7,
        1e-7,
        needs,
      )
  # Only class 0 is present, TP = 1, FP = 0, FN = 1 after masking.
  for ignore in (-100, 255):
    logits, labels = _kornia_ignore_index_inputs(ignore)
    run, needs = kornia("tversky_loss", logits, labels, ignore_index=ignore)
    yield Case(
      f"kornia_tversky_ignore_index_per_sample_{ignore}",
      path + f"test_ignore_index[{ignore}]",
      run,
      1.0 / 3.0,
      1e-3,
      1e-3,
      needs,
    )


# ----------------------------------------------------------------------------
# Keras: Dice, Tversky.
# ----------------------------------------------------------------------------


def keras(loss, y_true, y_pred, *, axis=None, alpha=0.5, beta=0.5):
  """pel_jax equivalent of keras.losses.`loss`(...)(y_true, y_pred).

  Keras takes (y_true, y_pred), sums over `axis` (None: everything, one
  ratio for the whole batch), adds epsilon 1e-7 to the denominator only
  (Dice: 2 I / (sum g + sum p + 1e-7), so our smooth_dr = 5e-8).
  """
  y_true = np.asarray(y_true, np.float64)
  y_pred = np.asarray(y_pred, np.float64)
  if axis is None:
    x, t = y_pred.reshape(1, -1, 1), y_true.reshape(1, -1, 1)
  else:  # axis=(1, 2, 3) on [B, H, W, 1]: one ratio per sample.
    x = y_pred.reshape(y_pred.shape[0], -1, 1)
    t = y_true.reshape(y_true.shape[0], -1, 1)
  if loss == "Dice":
    opts = dict(fp_weight=0.5, fn_weight=0.5, smooth_dr=0.5e-7)
  else:
    opts = dict(fp_weight=alpha, fn_weight=beta, smooth_dr=1e-7)
  opts.update(
    exponent=1.0, smooth_nr=0.0, reduction="mean" if axis is None else "none"
  )
  return lambda: np.ravel(pel_jax.pel_loss(x, t, **opts))


def _keras_cases():
  path = f"{KERAS}: keras/src/losses/losses_test.py::"
  t1, p1 = [[1, 2], [1, 2]], [[4, 1], [6, 1]]
  tb = [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
  pb = [[0, 1, 0, 1], [1, 0, 1, 1], [0, 1, 0, 1], [1, 0, 1, 1]]
  ta = [[[[1.0], [1.0]], [[0.0], [0.0]]], [[[1.0], [1.0]], [[0.0], [0.0]]]]
  pa = [[[[0.0], [1.0]], [[0.0], [1.0]]], [[[0.4], [0.0]], [[0.0], [0.9]]]]
  cases = [
    ("Dice", "DiceTest::test_correctness", t1, p1, {}, -0.55555546),
    ("Dice", "DiceTest::test_binary_segmentation", tb, pb, {}, 0.77777773),
    (
      "Dice",
      "DiceTest::test_binary_segmentation_with_axis",
      ta,
      pa,
      dict(axis=(1, 2, 3)),
      [0.5, 0.75757575],
    ),
    ("Tversky", "TverskyTest::test_correctness", t1, p1, {}, -0.55555558),
    (
      "Tversky",
      "TverskyTest::test_correctness_custom_coefficients",
      t1,
      p1,
      dict(alpha=0.2, beta=0.8),
      -0.94444442,
    ),
    (
      "Tversky",
      "TverskyTest::test_binary_segmentation",
      tb,
      pb,
      {},
      0.77777779,
    ),
    (
      "Tversky",
      "TverskyTest::test_binary_segmentation_with_axis",
      ta,
      pa,
      dict(axis=(1, 2, 3)),
      [0.5, 0.75757575],
    ),
    (
      "Tversky",
      "TverskyTest::test_binary_segmentation_custom_coefficients",
      tb,
      pb,
      dict(alpha=0.2, beta=0.8),
      0.76190472,
    ),
    (
      "Tversky",
      "TverskyTest::test_binary_segmentation_custom_coefficients_with_axis",
      ta,
      pa,
      dict(axis=(1, 2, 3), alpha=0.2, beta=0.8),
      [0.5, 0.78494626],
    ),
  ]
  for loss, test, y_true, y_pred, kw, expected in cases:
    # Keras' assertAllClose: rtol = atol = 1e-6.
    yield Case(
      f"keras_{test.replace('::', '_')}",
      path + test,
      keras(loss, y_true, y_pred, **kw),
      expected,
      1e-6,
      1e-6,
    )


def _keras_smoothed_ce_cases():
  """Keras' label-smoothing tests of its cross-entropies, through `ce_weight`.

  pel_loss with ``ce_weight=1, ce_label_smoothing=0.1`` minus pel_loss alone
  is the smoothed cross-entropy, mean over its terms: Keras' mean over the
  classes of the binary one (smoothing towards 1/2) and over the batch of
  the categorical one (towards 1/C). One pixel, classes last.
  """
  path = f"{KERAS}: keras/src/losses/losses_test.py::"
  cases = [
    (
      "BinaryCrossentropyTest::test_label_smoothing",
      [[[10.0, -10.0, -10.0]]],
      [[[1.0, 0.0, 1.0]]],
      dict(activation="sigmoid"),
      (10.0 + 5.0 * 0.1) / 3.0,
    ),
    (
      "CategoricalCrossentropyTest::test_label_smoothing",
      [[[100.0, -100.0, -100.0]]],
      [[[1.0, 0.0, 0.0]]],
      {},
      400.0 * 0.1 / 3.0,
    ),
  ]
  for test, logits, y_true, kw, expected in cases:
    x, t = np.asarray(logits), np.asarray(y_true)
    opts = dict(from_logits=True, **kw)

    def run(x=x, t=t, opts=opts):
      fused = pel_jax.pel_loss(
        x, t, ce_weight=1.0, ce_label_smoothing=0.1, **opts
      )
      return np.ravel(fused - pel_jax.pel_loss(x, t, **opts))

    # Keras' assertAlmostEqual: decimal=3, |actual - desired| < 1.5e-3.
    yield Case(
      f"keras_{test.replace('::', '_')}",
      path + test,
      run,
      expected,
      0.0,
      1.5e-3,
      frozenset({"ce_weight", "ce_label_smoothing"}),
    )


# ----------------------------------------------------------------------------
# nnU-Net: SoftDiceLoss / MemoryEfficientSoftDiceLoss (no published values).
# ----------------------------------------------------------------------------


def nnunet(x, y, *, batch_dice=False, do_bg=True, smooth=1.0, loss_mask=None):
  """pel_jax equivalent of nnU-Net's (MemoryEfficient)SoftDiceLoss.

  nnU-Net returns -mean(dc) with dc = (2 TP + s) / (2 TP + FP + FN + s):
  pel_jax's Dice with smoothing s / 2, minus 1. Its `apply_nonlin` is the
  softmax (from_logits=True) and its `loss_mask` is `where`.
  """
  opts = dict(
    exponent=1.0,
    fp_weight=0.5,
    fn_weight=0.5,
    smooth_nr=smooth / 2,
    smooth_dr=smooth / 2,
    batch=batch_dice,
    include_background=do_bg,
  )
  if loss_mask is not None:
    opts["where"] = np.asarray(loss_mask, bool)
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.int32)
  return lambda: np.ravel(pel_jax.pel_loss(x, y, **opts) - 1.0)


def _nnunet_cases():
  hand = f"hand-computed from {NNUNET}: nnunetv2/training/loss/dice.py"
  # Two pixels, labels (1, 0), probabilities channels last.
  # class 0: TP 0.6 FP 0.2 FN 0.4: (1.2 + 1) / (1.2 + 0.6 + 1) = 11/14;
  # class 1: TP 0.8 FP 0.4 FN 0.2: (1.6 + 1) / (1.6 + 0.6 + 1) = 13/16.
  p = [[[0.2, 0.8], [0.6, 0.4]]]
  y = [[1, 0]]
  yield Case(
    "nnunet_soft_dice",
    hand + " (smooth=1)",
    nnunet(p, y),
    -(11 / 14 + 13 / 16) / 2,
    1e-12,
  )
  yield Case(
    "nnunet_soft_dice_no_bg",
    hand + " (do_bg=False)",
    nnunet(p, y, do_bg=False),
    -13 / 16,
    1e-12,
  )
  # smooth=0: class 0: 1.2/1.8 = 2/3, class 1: 1.6/2.2 = 8/11.
  yield Case(
    "nnunet_soft_dice_smooth0",
    hand + " (smooth=0)",
    nnunet(p, y, smooth=0.0),
    -(2 / 3 + 8 / 11) / 2,
    1e-12,
  )
  # batch_dice over two samples, the second (p = 0.5 everywhere, labels 0,
  # 0): class 0 sums TP 0.6 + 1, FP 0.2, FN 0.4 + 1: (3.2 + 1)/(3.2 + 1.6 +
  # 1) = 21/29; class 1 TP 0.8, FP 0.4 + 1, FN 0.2: (1.6 + 1)/(1.6 + 1.6 +
  # 1) = 13/21.
  p2 = [[[0.2, 0.8], [0.6, 0.4]], [[0.5, 0.5], [0.5, 0.5]]]
  y2 = [[1, 0], [0, 0]]
  yield Case(
    "nnunet_batch_dice",
    hand + " (batch_dice=True)",
    nnunet(p2, y2, batch_dice=True),
    -(21 / 29 + 13 / 21) / 2,
    1e-12,
  )
  # loss_mask drops pixel 1: class 0 TP 0 FP 0.2 FN 0: 1/1.2;
  # class 1 TP 0.8 FP 0 FN 0.2: 2.6/2.8.
  yield Case(
    "nnunet_loss_mask",
    hand + " (loss_mask)",
    nnunet(p, y, loss_mask=[[True, False]]),
    -(1 / 1.2 + 13 / 14) / 2,
    1e-12,
  )


def all_cases():
  return (
    list(_monai_cases())
    + list(_dice_ce_cases())
    + list(_fused_ce_case())
    + list(_smp_cases())
    + list(_smp_soft_ce_cases())
    + list(_kornia_cases())
    + list(_kornia_09_cases())
    + list(_keras_cases())
    + list(_keras_smoothed_ce_cases())
    + list(_nnunet_cases())
  )


def pending(available):
  """The cases that need a keyword not in `available`, by name."""
  return [
    (c.name, sorted(c.needs - available))
    for c in all_cases()
    if not c.needs <= available
  ]

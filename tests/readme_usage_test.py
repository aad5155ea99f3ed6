"""The README's examples run as written: the first example gives Dice plus
an independent float64 CE, and the Usage snippet ignores `IGNORE` pixels."""

import pathlib
import re

import jax
import numpy as np

import pel_jax
from tests.reference_distance import one_hot2dist
from tests.reference_distance import softmax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _snippet(heading: str) -> str:
  """The first Python block after `heading` in the README."""
  section = README.read_text().split(heading, 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _usage_snippet() -> str:
  return _snippet("## Usage")


def _ce64(logits, labels, valid) -> float:
  """Mean softmax cross-entropy over the valid pixels, in float64 NumPy."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  picked = np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)
  return float(-(picked[..., 0] * valid).sum() / valid.sum())


def test_usage_snippet_runs_and_masks_the_cross_entropy(capsys):
  ns: dict = {}
  exec(compile(_usage_snippet(), str(README), "exec"), ns)  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert re.fullmatch(r"loss -?\d+\.\d{4}\n", printed), printed
  assert np.isfinite(ns["loss"])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(ns["grads"]))

  # With non-zero parameters: PEL (the library) plus an independent float64 CE.
  rng = np.random.default_rng(0)
  params = {
    "w": rng.normal(size=(3, 2)).astype(np.float32),
    "b": rng.normal(size=2).astype(np.float32),
  }
  images, labels = np.asarray(ns["images"]), np.asarray(ns["labels"])
  valid = labels != 255
  assert (~valid).sum() == 2 * 16 * 4
  logits = images @ params["w"] + params["b"]
  pel = pel_jax.pel_loss(
    logits,
    labels,
    from_logits=True,
    exponent=3.0,
    scale=10.0,
    fp_weight=0.5,
    fn_weight=0.5,
    batch=True,
    ignore_index=255,
  )
  got = ns["loss_fn"](params, images, labels)
  np.testing.assert_allclose(
    got, float(pel) + _ce64(logits, labels, valid), rtol=1e-5
  )
  # Ignored pixels count nowhere: changing their images changes nothing.
  moved = images.copy()
  moved[~valid] += 100.0
  np.testing.assert_allclose(
    ns["loss_fn"](params, moved, labels), got, rtol=1e-6
  )


def test_five_line_example_is_dice_plus_cross_entropy():
  snippet = _snippet("## A first example")
  assert len([ln for ln in snippet.splitlines() if ln.strip()]) <= 6, snippet
  ns: dict = {}
  exec(compile(snippet, str(README), "exec"), ns)  # pylint: disable=exec-used
  logits, ids = np.asarray(ns["logits"]), np.asarray(ns["ids"])
  assert logits.shape[:-1] == ids.shape and ids.ndim == 3
  dice = pel_jax.dice_loss(logits, ids, from_logits=True)
  np.testing.assert_allclose(
    ns["loss"], float(dice) + _ce64(logits, ids, ids != 255), rtol=1e-5
  )


def test_distance_snippet_adds_the_boundary_loss():
  """The "Distances on the device" line, on the first example's arrays:
  Dice plus alpha times Kervadec's boundary loss (float64 SciPy maps)."""
  ns: dict = {}
  exec(compile(_snippet("## A first example"), str(README), "exec"), ns)  # pylint: disable=exec-used
  logits, ids = np.asarray(ns["logits"]), np.asarray(ns["ids"])
  ns["alpha"] = 0.1
  snippet = _snippet("## Distances on the device")
  exec(compile(snippet, str(README), "exec"), ns)  # pylint: disable=exec-used
  p = softmax(logits.astype(np.float64))
  boundary = np.mean(
    [(p[..., c] * one_hot2dist(ids == c)).mean((1, 2)) for c in range(3)]
  )
  dice = pel_jax.dice_loss(logits, ids, from_logits=True)
  np.testing.assert_allclose(
    ns["loss"], float(dice) + 0.1 * boundary, rtol=1e-5
  )

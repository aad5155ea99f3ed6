"""docs/figures/boundary_figure.py: the README figure's panels and its PNG."""

import importlib.util
import pathlib

import numpy as np

from tests.reference_distance import one_hot2dist
from tests.reference_distance import softmax

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "figures" / "boundary_figure.py"


def _module():
  spec = importlib.util.spec_from_file_location("boundary_figure", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_panels_are_kervadec_map_and_gradient():
  """The map is Kervadec's `one_hot2dist` (SciPy, float64) and the gradient
  w.r.t. the foreground logit is phi p (1 - p) / P (softmax of 2 logits)."""
  ids, logits, phi, grad = _module().panels(32)
  assert ids.any() and not ids.all()
  want_phi = one_hot2dist(ids[None] == 1)[0]
  np.testing.assert_allclose(phi, want_phi, atol=1e-5)
  p = softmax(logits.astype(np.float64))[..., 1]
  np.testing.assert_allclose(
    grad * ids.size, want_phi * p * (1 - p), rtol=1e-4, atol=1e-6
  )


def test_committed_png_is_small():
  png = SCRIPT.with_name("boundary_loss.png")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert png.stat().st_size < 150 * 1024

"""Tests of examples/unet/figures.py."""

from examples_unet_helpers import tiny
import numpy as np
import pytest

from examples.unet import data
from examples.unet import figures


@pytest.mark.parametrize(
  "size", [16, pytest.param(600, marks=pytest.mark.slow)]
)
def test_sample_figure_weight_maps_share_a_labelled_scale(size):
  ds = data.synthetic(0, 1, size, 2)
  logits = (
    np.random.default_rng(0).normal(size=(size, size, 2)).astype(np.float32)
  )
  fig = figures.sample_figure(ds.images[0], ds.masks[0], logits, tiny(), 2)
  shown = {
    ax.get_title().split(",")[0]: ax.images[0]
    for ax in fig.axes
    if ax.images and ax.get_title()
  }
  pel, dice = shown["PEL weight (n=3)"], shown["Dice weight"]
  image = shown["image (contrast-stretched)"].get_array()
  assert image.min() == 0 and image.max() == 1  # dim images show too
  assert pel.norm is dice.norm  # one colour scale for both maps
  np.testing.assert_allclose(
    pel.norm.vmax, max(pel.get_array().max(), dice.get_array().max())
  )
  labels = [ax.get_ylabel() for ax in fig.axes]
  assert figures.WEIGHT_LABEL in labels
  panel_px = fig.get_size_inches()[0] * 100 / (6 if size == 16 else 3)
  assert panel_px >= (250 if size == 16 else 600)  # grows with the image
  figures.plt.close(fig)

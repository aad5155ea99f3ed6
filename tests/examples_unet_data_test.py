"""Tests of examples/unet/data.py: synthetic set, folder loader and its checks."""

from examples_unet_helpers import bad_data
from examples_unet_helpers import write_pair
import numpy as np
from PIL import Image
import pytest
import tifffile

from examples.unet import configs
from examples.unet import data


def test_synthetic_is_deterministic_and_imbalanced():
  a, b = data.synthetic(3, 2, 48, 3), data.synthetic(3, 2, 48, 3)
  np.testing.assert_array_equal(a.images[1], b.images[1])
  counts = np.bincount(
    np.concatenate([m.ravel() for m in a.masks]), minlength=3
  )
  assert counts[0] > 3 * counts[1] > 0 and counts[2] > 0
  batch = data.train_batch(a, 3, 5, 4, 32)
  np.testing.assert_array_equal(
    batch["mask"], data.train_batch(a, 3, 5, 4, 32)["mask"]
  )


def test_folder_loader_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  gray8 = rng.integers(0, 256, (24, 20), np.uint8)
  rgb8 = rng.integers(0, 256, (24, 20, 3), np.uint8)
  gray16 = rng.integers(0, 65536, (16, 32), np.uint16)
  inst = rng.integers(0, 7, (16, 32)).astype(np.uint16)  # instance labels
  write_pair(tmp_path, "a", gray8, (gray8 > 128).astype(np.uint8))
  write_pair(tmp_path, "b", rgb8, (rgb8[..., 0] > 200).astype(np.uint8))
  write_pair(tmp_path, "c", gray16, inst, ".tif")
  ds = data.load_folder(tmp_path, num_classes=2, binary=True)
  assert ds.names == ["a", "b", "c"] and ds.in_channels == 3
  np.testing.assert_allclose(ds.images[0][..., 1], gray8 / 255, rtol=1e-6)
  np.testing.assert_allclose(ds.images[1], rgb8 / 255, rtol=1e-6)
  np.testing.assert_allclose(ds.images[2][..., 2], gray16 / 65535, rtol=1e-6)
  np.testing.assert_array_equal(ds.masks[2], inst > 0)
  np.testing.assert_array_equal(ds.masks[0], gray8 > 128)
  train_ds, val_ds = data.split(ds, 0.3, seed=0)
  assert sorted(train_ds.names + val_ds.names) == ["a", "b", "c"]
  assert (
    len(val_ds.names) == 1 and data.split(ds, 0.3, 0)[1].names == val_ds.names
  )


@pytest.mark.parametrize(
  "case",
  [
    "missing_mask",
    "size_mismatch",
    "unreadable",
    "empty",
    "label_too_large",
    "negative_label",
    "duplicate_stem",
  ],
)
def test_bad_data_names_the_file(tmp_path, case):
  root, message = bad_data(tmp_path, case)
  with pytest.raises(data.DataError, match=message):
    data.load_folder(root, num_classes=2)


def test_tiny_image_is_named(tmp_path):
  root = tmp_path / "data"
  write_pair(
    root, "big", np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
  )
  write_pair(
    root, "tiny", np.zeros((3, 40), np.uint8), np.zeros((3, 40), np.uint8)
  )
  cfg = configs.get_config(data=str(root), val_data=str(root), depth=2)
  with pytest.raises(
    data.DataError, match=r"images/tiny.png: image size \(3, 40\)"
  ):
    data.load(cfg)
  cfg.patch_size = 16
  with pytest.raises(
    data.DataError, match=r"images/tiny.png: image size \(3, 40\)"
  ):
    data.load(cfg)


def test_alpha_and_float_images(tmp_path):
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (8, 8), np.uint8)
  la = np.stack([gray, np.full_like(gray, 7)], -1)
  unit = rng.random((8, 8)).astype(np.float32)  # within [0, 1]: kept
  raw = rng.uniform(-50, 4000, (8, 8)).astype(np.float32)  # else min-max
  mask = np.zeros((8, 8), np.uint8)
  Image.fromarray(la, "LA").save(tmp_path / "la.png")
  tifffile.imwrite(tmp_path / "unit.tif", unit)
  tifffile.imwrite(tmp_path / "raw.tif", raw)
  got = {
    p.stem: data.to_float(data.read_image(p), p) for p in tmp_path.iterdir()
  }
  np.testing.assert_allclose(got["la"][..., 0], gray / 255, rtol=1e-6)
  assert got["la"].shape == (8, 8, 1)
  np.testing.assert_array_equal(got["unit"][..., 0], unit)
  want = (raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min())
  np.testing.assert_allclose(got["raw"][..., 0], want, rtol=1e-6, atol=1e-7)
  raw[2, 3] = np.nan
  with pytest.raises(data.DataError, match="raw.tif: NaN or infinite"):
    data.to_float(raw, tmp_path / "raw.tif")
  write_pair(tmp_path / "set", "a", la, mask)
  assert data.load_folder(tmp_path / "set", 2).in_channels == 1


def test_near_path_equals_testing_every_pixel_against_every_point():
  rng = np.random.default_rng(4)
  size = 40
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  for _ in range(20):
    # Paths that also leave the image on either side.
    n = 90
    py = rng.uniform(-5, size + 5) + np.cumsum(rng.normal(0, 0.6, n))
    px = rng.uniform(-5, size + 5) + np.cumsum(rng.normal(0, 0.6, n))
    half_width = rng.uniform(0.7, 1.3)
    d2 = (yy[..., None] - py) ** 2 + (xx[..., None] - px) ** 2
    expected = d2.min(-1) <= half_width**2
    got = data._near_path(size, py, px, half_width)  # pylint: disable=protected-access
    np.testing.assert_array_equal(got, expected)


def test_fetch_output_root_is_read_as_train_and_val(tmp_path):
  # `fetch` writes DIR/{train,val,test}/{images,masks}: --data DIR reads
  # DIR/train, and DIR/val is the validation set unless --val-data.
  img, mask = np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)
  for split, stems in (("train", "ab"), ("val", "c"), ("test", "d")):
    for stem in stems:
      write_pair(tmp_path / split, stem, img, mask)
  train, val, _ = data.load(configs.get_config(data=str(tmp_path), depth=1))
  assert train.names == ["a", "b"] and val.names == ["c"]
  cfg = configs.get_config(
    data=str(tmp_path), val_data=str(tmp_path / "test"), depth=1
  )
  assert data.load(cfg)[1].names == ["d"]
  with pytest.raises(data.DataError, match="not found.*`fetch` output"):
    data.load(configs.get_config(data=str(tmp_path / "nowhere")))


def test_stretch_spreads_a_dim_image_over_the_display_range():
  dim = np.zeros((20, 20, 1), np.float32)
  dim[5:9, 5:9] = 0.02  # a dim nucleus on black, as fluorescence looks
  shown = data.stretch(dim)
  assert shown.min() == 0 and shown.max() == 1 and shown[6, 6, 0] == 1
  flat = data.stretch(np.full((4, 4, 3), 0.3, np.float32))
  assert np.isfinite(flat).all()

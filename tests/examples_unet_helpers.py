"""Shared helpers of the examples/unet tests (not a test module)."""

from flax import nnx
import jax
import numpy as np
from PIL import Image
import tifffile

from examples.unet import configs
from examples.unet import inference


def tiny(**overrides) -> configs.Config:
  """A config that trains in seconds: 16 px images, a 1-level width-4 UNet."""
  kw = dict(
    image_size=16,
    num_train=8,
    num_val=4,
    width=4,
    depth=1,
    batch_size=8,
    steps=6,
    warmup=0,
    lr=1e-2,
    log_every=1,
    ckpt_every=3,
    figures=1,
  )
  return configs.get_config(**{**kw, **overrides})


def params_of(model) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
  return {jax.tree_util.keystr(k): inference.to_host(v) for k, v in leaves}


def write_pair(root, stem, image, mask, suffix=".png"):
  for sub, arr in (("images", image), ("masks", mask)):
    (root / sub).mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
      Image.fromarray(arr).save(root / sub / f"{stem}.png")
    else:
      tifffile.imwrite(root / sub / f"{stem}{suffix}", arr)


def bad_data(tmp_path, case):
  """A folder with one bad-data `case`, and the error message expected."""
  root = tmp_path / case
  img = np.zeros((16, 16), np.uint8)
  write_pair(root, "good", img, img)
  if case == "missing_mask":
    Image.fromarray(img).save(root / "images/lonely.png")
    return root, "images/lonely.png: no mask"
  if case == "size_mismatch":
    write_pair(root, "odd", img, np.zeros((16, 15), np.uint8))
    return root, "masks/odd.png: mask size"
  if case == "unreadable":
    write_pair(root, "bad", img, img)
    (root / "images/bad.png").write_bytes(b"not a png")
    return root, "images/bad.png: unreadable"
  if case == "empty":
    for f in (root / "images").iterdir():
      f.unlink()
    return root, "images: no PNG or TIFF images"
  if case == "negative_label":
    write_pair(root, "neg", img, np.full((16, 16), -1, np.int16), ".tif")
    return root, "masks/neg.tif: negative mask value -1"
  if case == "duplicate_stem":
    write_pair(root, "twice", img, img)
    tifffile.imwrite(root / "images/twice.tif", img)
    return root, "images/twice.png and twice.tif: two files with the same name"
  if case == "label_too_large":
    write_pair(root, "hot", img, np.full((16, 16), 5, np.uint8))
    return root, "masks/hot.png: mask value 5 >= num_classes = 2"
  raise AssertionError(case)

"""Data: a seeded synthetic segmentation set, a folder loader, and batches.

A dataset is a `Dataset` of float32 images `[H, W, C_in]` in [0, 1] and
int32 class-id masks `[H, W]` (sizes may differ between examples). Training
batches are a pure function of `(seed, step)`, which makes `--resume`
bit-exact and lets every host draw the same global batch.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


class DataError(ValueError):
  """Bad input data; the message names the offending file."""


@dataclasses.dataclass
class Dataset:
  """Images, masks, names (file stems) and, for folder data, the image files
  and any instance ids."""

  images: list[np.ndarray]
  masks: list[np.ndarray]
  names: list[str]
  num_classes: int
  # Keyword-only, so that positional construction never fills it by mistake.
  files: list[str] | None = dataclasses.field(default=None, kw_only=True)
  # Nucleus ids per image (0 = none) for the object metrics; from the
  # optional `instances/` folder next to `masks/`.
  instances: list[np.ndarray] | None = dataclasses.field(
    default=None, kw_only=True
  )

  @property
  def in_channels(self) -> int:
    return self.images[0].shape[-1]

  def source(self, i: int) -> str:
    """The file of example `i` (or its name, for synthetic data)."""
    return self.files[i] if self.files else self.names[i]

  def subset(self, idx) -> Dataset:
    return Dataset(
      [self.images[i] for i in idx],
      [self.masks[i] for i in idx],
      [self.names[i] for i in idx],
      self.num_classes,
      files=[self.files[i] for i in idx] if self.files else None,
      instances=None
      if self.instances is None
      else [self.instances[i] for i in idx],
    )


# ----------------------------------------------------------------- synthetic
def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of a 2D array (reflect padding)."""
  r = max(1, int(3 * sigma))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  for axis in (0, 1):
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect")
    x = sum(
      w * np.take(xp, np.arange(i, i + x.shape[axis]), axis=axis)
      for i, w in enumerate(k)
    )
  return x


def _near_path(size: int, py, px, half_width: float) -> np.ndarray:
  """Bool `[size, size]`: pixels within `half_width` (< 2) of a path point.

  Only the pixels around each point are tested (offsets -2..2 from its
  rounded position), with the same float64 distances as testing every
  pixel against every point, so the mask is identical at O(points) cost.
  """
  reach = np.arange(-2, 3)
  rows = np.round(py)[:, None, None] + reach[None, :, None]
  cols = np.round(px)[:, None, None] + reach[None, None, :]
  rows, cols = np.broadcast_arrays(rows, cols)
  near = (rows - py[:, None, None]) ** 2 + (
    cols - px[:, None, None]
  ) ** 2 <= half_width**2
  near &= (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
  mask = np.zeros((size, size), bool)
  mask[rows[near].astype(int), cols[near].astype(int)] = True
  return mask


def synthetic_example(seed: int, index: int, size: int, num_classes: int):
  """One image/mask pair: blobs of many sizes and thin curves on texture.

  Class 1 = blobs, class 2 = curvilinear structures (num_classes=3); with
  num_classes=2 both are foreground. Deterministic in (seed, index).
  """
  rng = np.random.default_rng([seed, index])
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  blobs = np.zeros((size, size), bool)
  for _ in range(rng.integers(3, 9)):
    # log-uniform radii: from a few pixels to a fifth of the image
    r = np.exp(rng.uniform(np.log(1.5), np.log(size / 5)))
    a, b = r * rng.uniform(0.6, 1.4, 2)
    t = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0, size, 2)
    u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
    v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
    blobs |= (u / a) ** 2 + (v / b) ** 2 <= 1
  curves = np.zeros((size, size), bool)
  for _ in range(rng.integers(1, 4)):
    # a random walk in heading: a smooth curvilinear path
    n = 3 * size
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, n))
    py = rng.uniform(0, size) + np.cumsum(0.5 * np.sin(heading))
    px = rng.uniform(0, size) + np.cumsum(0.5 * np.cos(heading))
    half_width = rng.uniform(0.7, 1.3)
    curves |= _near_path(size, py, px, half_width)
  curves &= ~blobs
  mask = np.where(blobs, 1, np.where(curves, num_classes - 1, 0))

  texture = _blur(rng.normal(0, 1, (size, size)), rng.uniform(2, 5))
  texture = 0.1 * texture / (texture.std() + 1e-6)
  ramp = rng.uniform(-0.1, 0.1) * (xx / size) + rng.uniform(-0.1, 0.1) * (
    yy / size
  )
  contrast = rng.uniform(0.25, 0.45)
  image = 0.3 + texture + ramp + contrast * (mask > 0)
  image = _blur(image, rng.uniform(0.5, 0.9)) + rng.normal(0, 0.05, image.shape)
  return np.clip(image, 0, 1).astype(np.float32)[..., None], mask.astype(
    np.int32
  )


def synthetic(
  seed: int, count: int, size: int, num_classes: int, start: int = 0
) -> Dataset:
  pairs = [
    synthetic_example(seed, i, size, num_classes)
    for i in range(start, start + count)
  ]
  return Dataset(
    [p[0] for p in pairs],
    [p[1] for p in pairs],
    [f"synthetic_{i:05d}" for i in range(start, start + count)],
    num_classes,
  )


# -------------------------------------------------------------------- folder
def read_image(path: pathlib.Path) -> np.ndarray:
  """PNG or TIFF as a raw numpy array; DataError naming the file if unreadable."""
  try:
    if path.suffix.lower() in (".tif", ".tiff"):
      import tifffile  # pylint: disable=import-outside-toplevel

      return np.asarray(tifffile.imread(path))
    from PIL import Image  # pylint: disable=import-outside-toplevel

    with Image.open(path) as im:
      return np.asarray(im)
  except Exception as e:  # any decoder error means the same to the user
    raise DataError(f"{path}: unreadable image file ({e})") from e


def to_float(image: np.ndarray, path: pathlib.Path) -> np.ndarray:
  """`[H, W, C]` float32 in [0, 1], C = 1 (gray) or 3 (RGB); alpha dropped.

  Integer images are divided by their dtype's maximum (255, 65535, ...).
  Float images already within [0, 1] are kept as they are; any other range is
  scaled per image by its minimum and maximum (a constant image becomes 0).
  NaN or inf pixels are refused.
  """
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
    raise DataError(
      f"{path}: expected a grayscale or RGB image (with or"
      f" without alpha), got shape {image.shape}"
    )
  image = image[..., :1] if image.shape[-1] == 2 else image[..., :3]  # no alpha
  if np.issubdtype(image.dtype, np.bool_):
    return image.astype(np.float32)
  if np.issubdtype(image.dtype, np.integer):
    return (image / np.iinfo(image.dtype).max).astype(np.float32)
  image = image.astype(np.float64)
  if not np.isfinite(image).all():
    raise DataError(f"{path}: NaN or infinite pixel values")
  lo, hi = image.min(), image.max()
  if lo < 0 or hi > 1:
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
  return image.astype(np.float32)


def _files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
  """`{stem: path}`; two files with one stem (`a.png`, `a.tif`) are refused."""
  if not folder.is_dir():
    raise DataError(
      f"{folder}: folder not found (a data folder holds images/ and masks/;"
      " a `fetch` output holds train/, val/ and test/ folders of those)"
    )
  files: dict[str, pathlib.Path] = {}
  for p in sorted(folder.iterdir()):
    if p.suffix.lower() not in IMAGE_SUFFIXES:
      continue
    if p.stem in files:
      raise DataError(
        f"{files[p.stem]} and {p.name}: two files with the same"
        " name stem; keep one"
      )
    files[p.stem] = p
  return files


def stretch(image: np.ndarray, low: float = 1.0, high: float = 99.5):
  """`image` for display: each channel's percentiles `low`..`high` to 0..1.

  Fluorescence images use a small part of their range (the fetched set's
  nuclei are dim on black), so shown as they are they look nearly black.
  Display only: training and prediction read the images unchanged.
  """
  image = np.asarray(image, np.float32)
  lo = np.percentile(image, low, axis=(0, 1), keepdims=True)
  hi = np.percentile(image, high, axis=(0, 1), keepdims=True)
  return np.clip((image - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0)


def fetched_split(root: str | pathlib.Path, name: str) -> pathlib.Path:
  """`root`, or `root/name` when `root` is a `fetch` output (train/, val/)."""
  root = pathlib.Path(root)
  if not (root / "images").is_dir() and (root / name / "images").is_dir():
    return root / name
  return root


def load_images(
  folder: str | pathlib.Path,
) -> tuple[list[np.ndarray], list[str]]:
  """Every PNG/TIFF in `folder` (for predict mode), as float images."""
  files = _files(pathlib.Path(folder))
  if not files:
    raise DataError(f"{folder}: no PNG or TIFF images found")
  images = [to_float(read_image(p), p) for p in files.values()]
  return _same_channels(images), list(files)


def _same_channels(images: list[np.ndarray]) -> list[np.ndarray]:
  # Mixed grayscale/RGB folders become RGB throughout.
  channels = max(im.shape[-1] for im in images)
  return [np.repeat(im, channels // im.shape[-1], -1) for im in images]


def load_folder(
  root: str | pathlib.Path, num_classes: int, binary: bool = False
) -> Dataset:
  """`root/images/*` and `root/masks/*` matched by file stem (`load_pairs`),
  with `root/instances/*` when that folder exists."""
  root = pathlib.Path(root)
  return load_pairs(
    root / "images",
    root / "masks",
    num_classes,
    binary,
    instances=root / "instances",
  )


def load_pairs(
  images: str | pathlib.Path,
  masks: str | pathlib.Path,
  num_classes: int,
  binary: bool = False,
  *,
  instances: str | pathlib.Path | None = None,
) -> Dataset:
  """The images in folder `images` and the masks in `masks`, by file stem.

  Masks hold class ids in [0, num_classes); with `binary`, any non-zero
  value (e.g. an instance label) becomes foreground 1. Everything is read
  and checked before training starts, so bad data never leaves half-written
  output behind. Instance ids come from folder `instances` if it exists.
  """
  images_dir, masks_dir = pathlib.Path(images), pathlib.Path(masks)
  image_files, mask_files = _files(images_dir), _files(masks_dir)
  if not image_files:
    raise DataError(f"{images_dir}: no PNG or TIFF images found")
  for stem, path in image_files.items():
    if stem not in mask_files:
      raise DataError(f"{path}: no mask with the same name in {masks_dir}")
  images, masks = [], []
  for stem, path in image_files.items():
    image, mpath = to_float(read_image(path), path), mask_files[stem]
    mask = read_image(mpath)
    if (
      mask.ndim == 3
      and mask.shape[-1] in (3, 4)
      and (mask[..., :3] == mask[..., :1]).all()
    ):
      mask = mask[..., 0]  # gray saved as RGB
    if (
      mask.ndim != 2
      or not np.issubdtype(mask.dtype, np.integer)
      and not (np.issubdtype(mask.dtype, np.bool_))
    ):
      raise DataError(
        f"{mpath}: mask must be a single-channel integer image,"
        f" got shape {mask.shape} dtype {mask.dtype}"
      )
    if mask.shape != image.shape[:2]:
      raise DataError(
        f"{mpath}: mask size {mask.shape} does not match image"
        f" {path.name} size {image.shape[:2]}"
      )
    if mask.min() < 0:
      raise DataError(
        f"{mpath}: negative mask value {int(mask.min())}; class"
        f" ids must be in [0, {num_classes})"
      )
    mask = (mask > 0) if binary else mask
    if mask.max() >= num_classes:
      raise DataError(
        f"{mpath}: mask value {int(mask.max())} >= num_classes"
        f" = {num_classes} (use --classes, or --binary for"
        " instance labels)"
      )
    images.append(image)
    masks.append(mask.astype(np.int32))
  return Dataset(
    _same_channels(images),
    masks,
    list(image_files),
    num_classes,
    files=[str(p) for p in image_files.values()],
    instances=None
    if instances is None
    else _instances(pathlib.Path(instances), image_files, masks),
  )


def _instances(
  folder: pathlib.Path, image_files: dict, masks: list[np.ndarray]
) -> list[np.ndarray] | None:
  """Instance-id images matching every image, or None without the folder."""
  if not folder.is_dir():
    return None
  files, out = _files(folder), []
  for (stem, path), mask in zip(image_files.items(), masks):
    if stem not in files:
      raise DataError(
        f"{path}: no instance image with the same name in {folder}"
      )
    inst = read_image(files[stem])
    if inst.shape != mask.shape or not np.issubdtype(inst.dtype, np.integer):
      raise DataError(
        f"{files[stem]}: instance ids must be an integer image of"
        f" the mask's size {mask.shape}, got shape {inst.shape}"
        f" dtype {inst.dtype}"
      )
    out.append(inst.astype(np.int32))
  return out


def split(
  ds: Dataset, val_fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
  """Deterministic train/validation split (at least one of each)."""
  n = len(ds.images)
  if n < 2:
    raise DataError(
      f"{ds.names[0]}: need at least 2 images to split off a"
      " validation set (or pass --val-data)"
    )
  order = np.random.default_rng([seed, 7]).permutation(n)
  n_val = min(n - 1, max(1, round(val_fraction * n)))
  return ds.subset(sorted(order[n_val:])), ds.subset(sorted(order[:n_val]))


def load(cfg) -> tuple[Dataset, Dataset, int]:
  """(train, val, patch size) of a run config (`configs.Config`).

  Synthetic data unless `cfg.data`. The patch rule: `--patch-size`, or the
  synthetic image size, or min(128, the smallest image side), rounded down
  to a multiple of 2**depth. Raises DataError before anything is written.
  """
  if cfg.data is None:
    train = synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
    val = synthetic(
      cfg.seed, cfg.num_val, cfg.image_size, cfg.classes, start=cfg.num_train
    )
  else:
    # A `fetch` output as --data: its train/ (and val/ unless --val-data).
    root = fetched_split(cfg.data, "train")
    val_data = cfg.val_data
    if val_data is None and root != pathlib.Path(cfg.data):
      val_data = fetched_split(cfg.data, "val")
      val_data = None if val_data == pathlib.Path(cfg.data) else val_data
    train = load_folder(root, cfg.classes, cfg.binary)
    if val_data:
      val = load_folder(val_data, cfg.classes, cfg.binary)
    else:
      train, val = split(train, cfg.val_fraction, cfg.seed)
    if val.in_channels != train.in_channels:
      raise DataError(
        f"{val_data}: {val.in_channels} channels, but"
        f" the training images have {train.in_channels}"
      )
  patch = cfg.patch_size
  if patch is None:
    sides = [min(im.shape[:2]) for im in train.images]
    patch = cfg.image_size if cfg.data is None else min(128, min(sides))
    patch -= patch % 2**cfg.depth
    if patch <= 0:
      i = int(np.argmin(sides))
      raise DataError(
        f"{train.source(i)}: image size {train.images[i].shape[:2]} is"
        f" smaller than 2**depth = {2**cfg.depth}, the smallest training"
        " patch (remove the image, or lower --depth)"
      )
  if patch % 2**cfg.depth or patch <= 0:
    raise ValueError(
      f"--patch-size {patch} must be a positive multiple of"
      f" 2**depth = {2**cfg.depth}"
    )
  check_patch(train, patch)
  return train, val, patch


# ------------------------------------------------------------------- batches
def train_batch(
  ds: Dataset,
  seed: int,
  step: int,
  batch_size: int,
  patch: int,
  part: slice = slice(None),
) -> dict[str, np.ndarray]:
  """Random crops with flips/transposes: a pure function of (seed, step).

  All random numbers of the global batch are drawn first; `part` then picks
  this host's rows, so hosts agree on the global batch without talking.
  """
  rng = np.random.default_rng([seed, 1, step])
  idx = rng.integers(0, len(ds.images), batch_size)
  corner = rng.random((batch_size, 2))
  flips = rng.random((batch_size, 3)) < 0.5
  images, masks = [], []
  for i in range(batch_size)[part]:
    im, m = ds.images[idx[i]], ds.masks[idx[i]]
    y, x = (corner[i] * (np.array(m.shape) - patch + 1)).astype(int)
    im, m = im[y : y + patch, x : x + patch], m[y : y + patch, x : x + patch]
    if flips[i, 0]:
      im, m = im[::-1], m[::-1]
    if flips[i, 1]:
      im, m = im[:, ::-1], m[:, ::-1]
    if flips[i, 2]:
      im, m = im.transpose(1, 0, 2), m.T
    images.append(im)
    masks.append(m)
  return {"image": np.stack(images), "mask": np.stack(masks)}


def check_patch(ds: Dataset, patch: int) -> None:
  for i, im in enumerate(ds.images):
    if min(im.shape[:2]) < patch:
      raise DataError(
        f"{ds.source(i)}: image size {im.shape[:2]} is smaller"
        f" than the training patch {patch} (lower --patch-size,"
        " or remove the image)"
      )

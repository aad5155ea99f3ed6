"""Real nuclei data sets from PyPI wheels, in the example's folder layout.

  python -m examples.unet.main fetch he-nuclei --out data/he-nuclei
  python -m examples.unet.main fetch he-types --out data/he-types
  python -m examples.unet.main fetch fluo-nuclei --out data/fluo-nuclei

| name | source (wheel) | masks |
|---|---|---|
| he-nuclei | histolytics 0.3.0 (BSD-3): `hgsc_nest.jpg`, H&E, 1500x1500 | 0 background, 1 nucleus |
| he-types | the same tile with `hgsc_nest_type_mask.npz` | 0 background, 1..3 the package's nucleus types |
| fluo-nuclei | mnfinder 1.2.3 (MIT): 49 fluorescence images, 512-1024 px | 0 background, 1 nucleus |

Writes `OUT/{train,val,test}/{images,masks,instances}/NAME.png` (instances:
uint16 nucleus ids, each id one 8-connected object, for the object metrics)
and `OUT/fetch.json`, the manifest with every written file's sha256.

The wheel is fetched by name with `python -m pip download --no-deps` under
`--require-hashes` (pip checks the pinned sha256; nothing else touches the
network); then the wheel and every file read from it are checked against
`fetch_pins.json`. The H&E tile is cut into `--tile`-pixel tiles on an evenly
spaced grid; whole grid rows go to one split (val: the top row, test: the
bottom row, train: the rows between), so the three splits are disjoint bands
of the slide, no tile crosses a split, and each band spans the slide's three
tissue regions (immune cells left, tumour nest centre, stroma right; a split
by columns would leave the test set with stroma only). mnfinder keeps its
own training/validation/test split; one test image duplicates a training
image byte for byte and is dropped (found by content hash).

A second run verifies the manifest's files and does nothing. A folder that
is not empty and holds no manifest of the same data set is never written
into; a manifest file that was changed or deleted is reported, not replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from . import object_metrics

SPLITS = ("train", "val", "test")
MANIFEST = "fetch.json"
PINS = json.loads(
  pathlib.Path(__file__).with_name("fetch_pins.json").read_text()
)


class FetchError(RuntimeError):
  """The data set could not be fetched or verified; the message says why."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  package: str
  kind: str  # "he" or "fluo"
  classes: int
  description: str


DATASETS = {
  "he-nuclei": DatasetSpec(
    "histolytics", "he", 2, "H&E nuclei (histolytics hgsc_nest), binary"
  ),
  "he-types": DatasetSpec(
    "histolytics",
    "he",
    4,
    "H&E nuclei types (histolytics hgsc_nest): background + 3",
  ),
  "fluo-nuclei": DatasetSpec(
    "mnfinder", "fluo", 2, "fluorescence nuclei (mnfinder), binary"
  ),
}


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _file_sha256(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


# ------------------------------------------------------------------ download
def download_wheel(
  pin: dict, package: str, dest: pathlib.Path, pip: list[str] | None = None
) -> pathlib.Path:
  """`pip download` of the pinned wheel into `dest`; returns its path.

  `pip` is the command prefix (default `python -m pip`, this interpreter's).
  """
  if pip is None:
    if importlib.util.find_spec("pip") is None:
      raise FetchError(
        f"pip is not installed in {sys.executable}: install it (python -m"
        f" ensurepip) to fetch {package}=={pin['version']}"
      )
    pip = [sys.executable, "-m", "pip"]
  dest.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    req = pathlib.Path(tmp) / "requirements.txt"
    req.write_text(
      f"{package}=={pin['version']} --hash=sha256:{pin['sha256']}\n"
    )
    cmd = [
      *pip,
      "download",
      "--no-deps",
      "--only-binary=:all:",
      "--dest",
      str(dest),
      "--requirement",
      str(req),
    ]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
      raise FetchError(f"could not run {' '.join(cmd[:3])}: {e}") from e
  if proc.returncode != 0:
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
    raise FetchError(
      f"pip could not download {package}=={pin['version']} (exit"
      f" {proc.returncode}); is the network or a package index reachable?\n"
      f"{tail}"
    )
  wheel = dest / pin["wheel"]
  if not wheel.is_file():
    raise FetchError(f"pip reported success but {wheel} is missing")
  got = _file_sha256(wheel)
  if got != pin["sha256"]:
    raise FetchError(
      f"{wheel}: sha256 {got} does not match the pinned"
      f" {pin['sha256']} ({package}=={pin['version']})"
    )
  return wheel


class _Wheel:
  """Reads members of a wheel, each checked against its pinned sha256."""

  def __init__(self, path: pathlib.Path, pin: dict):
    self.zip, self.pin, self.path = zipfile.ZipFile(path), pin, path

  def read(self, member: str) -> bytes:
    want = self.pin["files"].get(member)
    if want is None:
      raise FetchError(f"{member}: not a pinned file of {self.path.name}")
    try:
      data = self.zip.read(member)
    except KeyError as e:
      raise FetchError(f"{self.path.name}: has no {member}") from e
    if sha256(data) != want:
      raise FetchError(
        f"{self.path.name}:{member}: sha256 {sha256(data)}"
        f" does not match the pinned {want}"
      )
    return data


def _decode(data: bytes, name: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=import-outside-toplevel

  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im)
  except Exception as e:  # any decoder error means the same here
    raise FetchError(f"{name}: unreadable image ({e})") from e


def _png(array: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=import-outside-toplevel

  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _instances(ids: np.ndarray, name: str) -> np.ndarray:
  inst = object_metrics.components(ids)
  if inst.max() >= 2**16:
    raise FetchError(f"{name}: {inst.max()} nuclei do not fit a uint16 PNG")
  return inst.astype(np.uint16)


# --------------------------------------------------------------- converters
HE = "histolytics/data/hgsc_nest"


def tile_grid(size: int, tile: int) -> np.ndarray:
  """Top-left offsets of `size // tile` tiles spread evenly over `size`."""
  n = size // tile
  return np.linspace(0, size - tile, n).round().astype(int)


def he_items(wheel: _Wheel, spec: DatasetSpec, tile: int):
  """(split, name, image PNG, mask, instance ids) for the H&E tiles."""
  image = _decode(wheel.read(HE + ".jpg"), HE + ".jpg")
  inst = np.load(io.BytesIO(wheel.read(HE + "_inst_mask.npz")))["nuc_raster"]
  types = np.load(io.BytesIO(wheel.read(HE + "_type_mask.npz")))["nuc_raster"]
  if not image.shape[:2] == inst.shape == types.shape:
    raise FetchError(
      f"{HE}: image {image.shape}, instance raster"
      f" {inst.shape} and type raster {types.shape} differ"
    )
  if spec.classes > 2 and (types.min() < 0 or types.max() >= spec.classes):
    raise FetchError(
      f"{HE}_type_mask.npz: type ids {np.unique(types)} are"
      f" outside 0..{spec.classes - 1}"
    )
  rows, cols = tile_grid(inst.shape[0], tile), tile_grid(inst.shape[1], tile)
  if len(rows) < 3 or len(cols) < 1:
    raise FetchError(
      f"--tile {tile}: the {inst.shape} slide needs at least 3"
      " tile rows (one band per split)"
    )
  for i, y in enumerate(rows):
    split = "val" if i == 0 else "test" if i == len(rows) - 1 else "train"
    for j, x in enumerate(cols):
      box = np.s_[y : y + tile, x : x + tile]
      mask = types[box] if spec.classes > 2 else inst[box] > 0
      yield (
        split,
        f"hgsc_nest_r{i}_c{j}",
        _png(image[box]),
        mask.astype(np.uint8),
        inst[box],
      )


_FLUO = re.compile(
  r"mnfinder/(training|validation|test)-data/([^/]+)/"
  r"nucleus_masks/([^/]+)\.png"
)


def fluo_items(wheel: _Wheel, log=print):
  """(split, name, image PNG bytes as shipped, mask, instance ids), mnfinder.

  Splits are processed train, val, test; an image whose bytes were already
  seen is dropped (reported through `log`).
  """
  found = sorted(
    (m.groups(), member)
    for member in wheel.pin["files"]
    if (m := _FLUO.fullmatch(member))
  )
  order = {"training": 0, "validation": 1, "test": 2}
  seen: dict[str, str] = {}
  names: set[tuple[str, str]] = set()
  for (part, folder, stem), member in sorted(
    found, key=lambda f: (order[f[0][0]], f[1])
  ):
    split = SPLITS[order[part]]
    image_member = member.replace("/nucleus_masks/", "/images/")
    image = wheel.read(image_member)
    digest = sha256(image)
    if digest in seen:
      log(f"  dropped {image_member}: same bytes as {seen[digest]}")
      continue
    seen[digest] = image_member
    rgba = _decode(wheel.read(member), member)
    shape = _decode(image, image_member).shape
    if rgba.ndim != 3 or rgba.shape[-1] < 3 or rgba.shape[:2] != shape[:2]:
      raise FetchError(
        f"{member}: mask shape {rgba.shape} does not match image {shape}"
      )
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{folder}_{stem}")
    if (split, name) in names:
      raise FetchError(f"{member}: output name {name} is not unique")
    names.add((split, name))
    ids = rgba[..., 2]  # the nucleus id is the blue channel
    yield split, name, image, (ids > 0).astype(np.uint8), ids


# ------------------------------------------------------------------- writing
def _verify(out: pathlib.Path, manifest: dict) -> None:
  bad = []
  for rel, want in manifest["files"].items():
    path = out / rel
    if not path.is_file():
      bad.append(f"{rel} (missing)")
    elif _file_sha256(path) != want:
      bad.append(f"{rel} (changed)")
  if bad:
    shown = ", ".join(bad[:5]) + (
      f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    )
    raise FetchError(
      f"{out}: {len(bad)} fetched file(s) differ from {MANIFEST}: {shown}."
      " They are left as they are; fetch into a new --out (or delete the"
      " folder yourself) to get a fresh copy"
    )


def _config(name: str, spec: DatasetSpec, pin: dict, tile: int) -> dict:
  return {
    "dataset": name,
    "package": spec.package,
    "version": pin["version"],
    "wheel_sha256": pin["sha256"],
    "classes": spec.classes,
    **({"tile": tile} if spec.kind == "he" else {}),
  }


def fetch(
  name: str,
  out: str | pathlib.Path,
  *,
  tile: int = 256,
  wheel_dir: str | pathlib.Path | None = None,
  pip: list[str] | None = None,
  pins: dict | None = None,
  log=print,
) -> dict:
  """Fetches data set `name` into `out`; returns the manifest.

  `wheel_dir` keeps the downloaded wheel (pip reuses it when its hash
  matches); `pip` and `pins` replace the pip command and the pinned hashes
  (tests use a fake wheel).
  """
  if name not in DATASETS:
    raise FetchError(
      f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}"
    )
  spec = DATASETS[name]
  pin = (PINS if pins is None else pins)[spec.package]
  out = pathlib.Path(out)
  config = _config(name, spec, pin, tile)
  manifest_path = out / MANIFEST
  if manifest_path.is_file():
    manifest = json.loads(manifest_path.read_text())
    held = manifest.get("config", {})
    if held != config:
      diff = ", ".join(
        f"{k} {held.get(k)} (asked: {v})"
        for k, v in config.items()
        if held.get(k) != v
      )
      raise FetchError(
        f"{out} holds another fetch: {diff}; choose another --out"
      )
    _verify(out, manifest)
    log(f"{out}: {len(manifest['files'])} files verified; nothing to do")
    return manifest
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FetchError(
      f"{out} exists and is not an empty folder from a previous"
      " fetch; nothing was written (choose another --out)"
    )
  if spec.kind == "he" and tile < 16:
    raise FetchError(f"--tile {tile} is too small (at least 16 pixels)")

  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(
    tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)
  )
  try:
    with tempfile.TemporaryDirectory() as tmp:
      log(f"downloading {spec.package}=={pin['version']} with pip ...")
      wheel = _Wheel(
        download_wheel(pin, spec.package, pathlib.Path(wheel_dir or tmp), pip),
        pin,
      )
      items = (
        he_items(wheel, spec, tile)
        if spec.kind == "he"
        else fluo_items(wheel, log)
      )
      files, counts = {}, {s: {"images": 0, "nuclei": 0} for s in SPLITS}
      for split, stem, image_png, mask, ids in items:
        inst = _instances(ids, stem)
        for folder, blob in (
          ("images", image_png),
          ("masks", _png(mask)),
          ("instances", _png(inst)),
        ):
          rel = f"{split}/{folder}/{stem}.png"
          (staging / rel).parent.mkdir(parents=True, exist_ok=True)
          (staging / rel).write_bytes(blob)
          files[rel] = sha256(blob)
        counts[split]["images"] += 1
        counts[split]["nuclei"] += int(inst.max())
    manifest = {
      "config": config,
      "description": spec.description,
      "counts": counts,
      "files": files,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
      out.rmdir()  # empty (checked above); rename cannot replace a folder
    os.rename(staging, out)
  finally:
    if staging.exists():
      shutil.rmtree(staging)
  for split in SPLITS:
    log(
      f"  {split}: {counts[split]['images']} images,"
      f" {counts[split]['nuclei']} nuclei"
    )
  log(f"{name} -> {out}")
  return manifest

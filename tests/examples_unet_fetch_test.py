"""`main.py fetch`: a tiny fake wheel and a fake pip, no network."""

import hashlib
import io
import json
import sys
import textwrap
import zipfile

import numpy as np
from PIL import Image
import pytest

from examples.unet import data
from examples.unet import fetch
from examples.unet import main
from examples.unet import object_metrics

HE = "histolytics/data/hgsc_nest"
FLUO = "mnfinder/{}-data/{}/{}/{}.png"


def _png(a):
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format="PNG")
  return buf.getvalue()


def _npz(a):
  buf = io.BytesIO()
  np.savez_compressed(buf, nuc_raster=a)
  return buf.getvalue()


def _he_members(size=64):
  rng = np.random.default_rng(0)
  inst = np.zeros((size, size), np.int32)
  types = np.zeros((size, size), np.int32)
  k = 0
  for y in range(2, size - 4, 8):
    for x in range(2, size - 4, 8):
      k += 1
      inst[y : y + 4, x : x + 4] = k
      types[y : y + 4, x : x + 4] = 1 + k % 3
  image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG")
  return (
    {
      HE + ".jpg": buf.getvalue(),
      HE + "_inst_mask.npz": _npz(inst),
      HE + "_type_mask.npz": _npz(types),
    },
    inst,
    types,
  )


def _rgba(ids):
  a = np.zeros(ids.shape + (4,), np.uint8)
  a[..., 2] = ids
  a[..., 3] = np.where(ids > 0, 255, 0)
  return a


def _fluo_members():
  rng = np.random.default_rng(1)
  members, arrays = {}, {}
  shapes = {
    ("training", "d1", "a"): (24, 20),
    ("training", "d2", "a"): (24, 20),
    ("validation", "d1", "b"): (20, 20),
    ("test", "misc x", "c.lif - 2"): (20, 24),
    ("test", "misc x", "dup"): (24, 20),
  }
  for (part, folder, stem), shape in shapes.items():
    ids = np.zeros(shape, np.uint8)
    ids[1:4, 1:4] = 7
    ids[10:13, 10:13] = 7  # the same id on a second, separate blob
    ids[15:18, 2:5] = 9
    image = rng.integers(0, 2**16, shape, dtype=np.uint16)
    arrays[(part, folder, stem)] = (image, ids)
  # the test "dup" image is byte-identical to training d1/a
  arrays[("test", "misc x", "dup")] = (
    arrays[("training", "d1", "a")][0],
    arrays[("test", "misc x", "dup")][1],
  )
  for (part, folder, stem), (image, ids) in arrays.items():
    members[FLUO.format(part, folder, "images", stem)] = _png(image)
    members[FLUO.format(part, folder, "nucleus_masks", stem)] = _png(_rgba(ids))
    members[FLUO.format(part, folder, "mn_masks", stem)] = b"unused"
  return members, arrays


def _wheel(tmp_path, package, version, members):
  name = f"{package}-{version}-py3-none-any.whl"
  path = tmp_path / "index" / name
  path.parent.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(path, "w") as z:
    for member, blob in members.items():
      z.writestr(member, blob)
  pin = {
    "version": version,
    "wheel": name,
    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    "files": {
      m: hashlib.sha256(b).hexdigest()
      for m, b in members.items()
      if not m.endswith("unused") and "/mn_masks/" not in m
    },
  }
  return path, pin


@pytest.fixture(name="fake")
def _fake(tmp_path):
  he, inst, types = _he_members()
  fl, fl_arrays = _fluo_members()
  _, he_pin = _wheel(tmp_path, "histolytics", "0.3.0", he)
  _, fl_pin = _wheel(tmp_path, "mnfinder", "1.2.3", fl)
  log = tmp_path / "pip_calls.txt"
  script = tmp_path / "fake_pip.py"
  # A fake `pip download`: copies the wheel from the fake index into --dest
  # and records its arguments and requirement file.
  script.write_text(
    textwrap.dedent(f"""
      import pathlib, shutil, sys
      args = sys.argv[1:]
      dest = pathlib.Path(args[args.index("--dest") + 1])
      req = pathlib.Path(args[args.index("--requirement") + 1]).read_text()
      with open({str(log)!r}, "a") as f:
        f.write(" ".join(args[:3]) + " | " + req)
      package = req.split("==")[0]
      for whl in pathlib.Path({str(tmp_path / "index")!r}).glob(package + "-*"):
        shutil.copy(whl, dest / whl.name)
      """)
  )
  return {
    "pins": {"histolytics": he_pin, "mnfinder": fl_pin},
    "pip": [sys.executable, str(script)],
    "log": log,
    "inst": inst,
    "types": types,
    "fluo": fl_arrays,
    "tmp": tmp_path,
  }


def _fetch(fake, name, out, **kw):
  return fetch.fetch(
    name, out, pip=fake["pip"], pins=fake["pins"], log=lambda *a: None, **kw
  )


def _read(path):
  with Image.open(path) as im:
    return np.asarray(im)


def test_he_nuclei_layout_splits_and_instances(fake):
  out = fake["tmp"] / "he"
  manifest = _fetch(fake, "he-nuclei", out, tile=16)
  calls = fake["log"].read_text().splitlines()
  assert len(calls) == 1
  assert calls[0].startswith("download --no-deps --only-binary=:all: |")
  assert (
    f"histolytics==0.3.0 --hash=sha256:{fake['pins']['histolytics']['sha256']}"
    in calls[0]
  )
  # 64 px / 16 px tiles: a 4x4 grid; top row -> val, bottom row -> test
  names = {
    s: sorted(p.stem for p in (out / s / "images").iterdir())
    for s in fetch.SPLITS
  }
  assert names["val"] == [f"hgsc_nest_r0_c{j}" for j in range(4)]
  assert names["test"] == [f"hgsc_nest_r3_c{j}" for j in range(4)]
  assert len(names["train"]) == 8
  assert all(
    n.startswith(("hgsc_nest_r1", "hgsc_nest_r2")) for n in names["train"]
  )
  offsets = fetch.tile_grid(64, 16)
  np.testing.assert_array_equal(offsets, [0, 16, 32, 48])
  for s in fetch.SPLITS:
    for stem in names[s]:
      i, j = (int(t[1:]) for t in stem.split("_")[2:])
      box = np.s_[offsets[i] : offsets[i] + 16, offsets[j] : offsets[j] + 16]
      mask = _read(out / s / "masks" / f"{stem}.png")
      np.testing.assert_array_equal(mask, fake["inst"][box] > 0)
      inst = _read(out / s / "instances" / f"{stem}.png")
      assert inst.dtype == np.uint16
      np.testing.assert_array_equal(
        inst, object_metrics.components(fake["inst"][box])
      )
      assert _read(out / s / "images" / f"{stem}.png").shape == (16, 16, 3)
  ds = data.load_folder(out / "train", 2)
  assert len(ds.images) == 8 and ds.in_channels == 3
  assert set(manifest["files"]) == {
    str(p.relative_to(out)) for p in out.rglob("*.png")
  }


def test_he_types_class_ids(fake):
  with pytest.raises(fetch.FetchError, match="at least 3 tile rows"):
    _fetch(fake, "he-types", fake["tmp"] / "t32", tile=32)
  assert not (fake["tmp"] / "t32").exists()
  out = fake["tmp"] / "types"
  _fetch(fake, "he-types", out, tile=21)  # 3x3 grid at offsets 0, 22, 43
  offsets = fetch.tile_grid(64, 21)
  np.testing.assert_array_equal(offsets, [0, 22, 43])
  mask = _read(out / "train" / "masks" / "hgsc_nest_r1_c2.png")
  np.testing.assert_array_equal(mask, fake["types"][22:43, 43:64])
  assert set(np.unique(mask)) <= {0, 1, 2, 3}
  ds = data.load_folder(out / "val", 4)
  assert ds.num_classes == 4 and len(ds.images) == 3


def test_fluo_drops_duplicate_and_splits_ids(fake):
  logged = []
  out = fake["tmp"] / "fluo"
  manifest = fetch.fetch(
    "fluo-nuclei", out, pip=fake["pip"], pins=fake["pins"], log=logged.append
  )
  assert any(
    "dropped" in m and "dup.png" in m and "d1/images/a.png" in m for m in logged
  )
  names = {
    s: sorted(p.stem for p in (out / s / "images").iterdir())
    for s in fetch.SPLITS
  }
  assert names == {
    "train": ["d1_a", "d2_a"],
    "val": ["d1_b"],
    "test": ["misc_x_c_lif_-_2"],
  }
  image, ids = fake["fluo"][("training", "d2", "a")]
  np.testing.assert_array_equal(
    _read(out / "train" / "images" / "d2_a.png"), image
  )
  np.testing.assert_array_equal(
    _read(out / "train" / "masks" / "d2_a.png"), ids > 0
  )
  inst = _read(out / "train" / "instances" / "d2_a.png")
  # id 7 covers two separate blobs: two objects; id 9 one: 3 in all
  assert inst.max() == 3
  assert inst[2, 2] != inst[11, 11] and inst[2, 2] > 0 and inst[11, 11] > 0
  assert manifest["counts"]["train"] == {"images": 2, "nuclei": 6}
  assert manifest["counts"]["test"]["images"] == 1


def test_second_run_verifies_and_does_nothing(fake):
  out = fake["tmp"] / "he"
  first = _fetch(fake, "he-nuclei", out, tile=16)
  mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
  again = _fetch(fake, "he-nuclei", out, tile=16)
  assert again == first
  assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
  assert len(fake["log"].read_text().splitlines()) == 1  # pip not called again
  # deterministic: a fresh fetch elsewhere writes the same bytes
  assert (
    _fetch(fake, "he-nuclei", fake["tmp"] / "he2", tile=16)["files"]
    == first["files"]
  )
  with pytest.raises(
    fetch.FetchError, match="another fetch: dataset he-nuclei"
  ):
    _fetch(fake, "he-types", out, tile=16)


def test_changed_files_are_reported_not_replaced(fake):
  out = fake["tmp"] / "he"
  _fetch(fake, "he-nuclei", out, tile=16)
  victim = out / "train" / "masks" / "hgsc_nest_r1_c0.png"
  victim.write_bytes(b"my edit")
  (out / "val" / "images" / "hgsc_nest_r0_c0.png").unlink()
  with pytest.raises(
    fetch.FetchError, match=r"2 fetched file\(s\).*r0_c0.png \(missing\)"
  ):
    _fetch(fake, "he-nuclei", out, tile=16)
  assert victim.read_bytes() == b"my edit"


def test_non_empty_folder_is_never_written(fake):
  out = fake["tmp"] / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep")
  with pytest.raises(fetch.FetchError, match="not an empty folder"):
    _fetch(fake, "he-nuclei", out, tile=16)
  assert [p.name for p in out.iterdir()] == ["notes.txt"]
  assert not fake["log"].exists()  # refused before downloading
  # an empty folder is fine
  (fake["tmp"] / "empty").mkdir()
  _fetch(fake, "he-nuclei", fake["tmp"] / "empty", tile=16)
  assert (fake["tmp"] / "empty" / fetch.MANIFEST).is_file()


def test_hash_mismatch_fails_and_leaves_nothing(fake):
  pins = json.loads(json.dumps(fake["pins"]))
  pins["histolytics"]["files"][HE + "_type_mask.npz"] = "0" * 64
  out = fake["tmp"] / "bad"
  with pytest.raises(fetch.FetchError, match="hgsc_nest_type_mask.npz: sha256"):
    fetch.fetch(
      "he-types", out, pip=fake["pip"], pins=pins, tile=16, log=lambda *a: None
    )
  pins = json.loads(json.dumps(fake["pins"]))
  pins["mnfinder"]["sha256"] = "f" * 64
  with pytest.raises(fetch.FetchError, match="does not match the pinned f{64}"):
    fetch.fetch(
      "fluo-nuclei", out, pip=fake["pip"], pins=pins, log=lambda *a: None
    )
  assert sorted(p.name for p in fake["tmp"].iterdir()) == [
    "fake_pip.py",
    "index",
    "pip_calls.txt",
  ]


def test_pip_failure_is_a_clear_error(tmp_path):
  script = tmp_path / "pip_fails.py"
  script.write_text(
    "import sys\nprint('ERROR: No matching distribution found"
    " for histolytics==0.3.0', file=sys.stderr)\nsys.exit(1)\n"
  )
  with pytest.raises(
    fetch.FetchError,
    match=r"(?s)pip could not download histolytics==0.3.0"
    r" \(exit 1\).*No matching distribution",
  ):
    fetch.fetch(
      "he-nuclei",
      tmp_path / "out",
      pip=[sys.executable, str(script)],
      log=lambda *a: None,
    )
  with pytest.raises(fetch.FetchError, match="could not run"):
    fetch.fetch(
      "he-nuclei",
      tmp_path / "out",
      pip=[str(tmp_path / "no-pip")],
      log=lambda *a: None,
    )
  assert sorted(p.name for p in tmp_path.iterdir()) == ["pip_fails.py"]


def test_cli_hook_reports_errors(tmp_path, capsys):
  (tmp_path / "x").write_text("a file, not a folder")
  assert main.main(["fetch", "he-nuclei", "--out", str(tmp_path / "x")]) == 2
  assert "is not an empty folder" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    main.main(["fetch", "no-such-set", "--out", str(tmp_path / "y")])


def test_pins_cover_the_wheels_files():
  he, fl = fetch.PINS["histolytics"], fetch.PINS["mnfinder"]
  assert he["wheel"] == "histolytics-0.3.0-py3-none-any.whl"
  assert set(he["files"]) == {
    HE + ".jpg",
    HE + "_inst_mask.npz",
    HE + "_type_mask.npz",
  }
  masks = [m for m in fl["files"] if "/nucleus_masks/" in m]
  assert len(masks) == 49
  assert all(
    m.replace("/nucleus_masks/", "/images/") in fl["files"] for m in masks
  )

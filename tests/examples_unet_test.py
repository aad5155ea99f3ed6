"""Tests of the Flax UNet example (examples/unet): tiny images, few steps."""

import csv
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tifffile
from flax import nnx
from PIL import Image

from examples.unet import checkpoint, data, main, predict, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny(**overrides) -> train.Config:
  """A config that trains in seconds: 16 px images, a 1-level width-4 UNet."""
  kw = dict(image_size=16, num_train=8, num_val=4, width=4, depth=1,
            batch_size=8, steps=6, warmup=0, lr=1e-2, log_every=1,
            ckpt_every=3, figures=1)
  return train.get_config(**{**kw, **overrides})


def params_of(model) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
  return {jax.tree_util.keystr(k): train.to_host(v) for k, v in leaves}


def saved_params(run_dir) -> dict[str, np.ndarray]:
  return params_of(predict.load_model(run_dir)[0])


# ---------------------------------------------------------------- basic parts
def test_model_shapes_and_mixed_precision():
  cfg = tiny(bf16=True)
  model = train.make_model(cfg, in_channels=3)
  out = jax.eval_shape(model, jax.ShapeDtypeStruct((2, 16, 16, 3), np.float32))
  assert out.shape == (2, 16, 16, 2) and out.dtype == np.float32
  assert model.down[0].conv1.dtype == jax.numpy.bfloat16  # bf16 compute
  assert model.head.kernel[...].dtype == np.float32  # f32 params


def test_parse_loss():
  assert train.parse_loss("pel+0.5*ce") == ((1.0, "pel"), (0.5, "ce"))
  with pytest.raises(ValueError, match="bad --loss term 'focal'"):
    train.parse_loss("dice+focal")
  for bad in ("-1*pel+ce", "1e999*dice", "nan*ce", "0*ce", "1.2.3*pel"):
    with pytest.raises(ValueError, match="finite number > 0"):
      train.parse_loss(bad)


def test_synthetic_is_deterministic_and_imbalanced():
  a, b = data.synthetic(3, 2, 48, 3), data.synthetic(3, 2, 48, 3)
  np.testing.assert_array_equal(a.images[1], b.images[1])
  counts = np.bincount(np.concatenate([m.ravel() for m in a.masks]), minlength=3)
  assert counts[0] > 3 * counts[1] > 0 and counts[2] > 0
  batch = data.train_batch(a, 3, 5, 4, 32)
  np.testing.assert_array_equal(batch["mask"], data.train_batch(a, 3, 5, 4, 32)["mask"])


# ----------------------------------------------------------- a few-step run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("run")
  train.train_and_evaluate(tiny(steps=8), out, quiet=True)
  return out


def test_few_steps_lower_loss_and_write_outputs(run_dir):
  with (run_dir / "train_curve.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert [int(r["step"]) for r in rows] == list(range(1, 9))
  losses = [float(r["loss"]) for r in rows]
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  result = json.loads((run_dir / "metrics.json").read_text())
  for key in ("val_iou", "val_dice", "val_bf1", "steps", "wall_time_s"):
    assert key in result
  assert set(result["per_class"]) == {"0", "1"}
  assert result["steps"] == 8
  for png in ("figures/sample_0.png", "figures/train_curve.png"):
    Image.open(run_dir / png).verify()
  assert checkpoint.Checkpoints(run_dir, create=False).latest_step() == 8


def test_progress_is_plain_lines_in_a_log(tmp_path, capsys):
  train.train_and_evaluate(tiny(steps=2, figures=0), tmp_path)
  out = capsys.readouterr().out
  assert "\r" not in out
  lines = out.splitlines()
  assert [l.split("|")[0] for l in lines if l.startswith("step")] == [
      "step      1/2 ", "step      2/2 "]


@pytest.mark.parametrize("size", [16, pytest.param(600, marks=pytest.mark.slow)])
def test_sample_figure_weight_maps_share_a_labelled_scale(size):
  from examples.unet import figures  # pylint: disable=import-outside-toplevel
  ds = data.synthetic(0, 1, size, 2)
  logits = np.random.default_rng(0).normal(size=(size, size, 2)).astype(np.float32)
  fig = figures.sample_figure(ds.images[0], ds.masks[0], logits, tiny(), 2)
  shown = {ax.get_title().split(",")[0]: ax.images[0] for ax in fig.axes
           if ax.images and ax.get_title()}
  pel, dice = shown["PEL weight (n=3)"], shown["Dice weight"]
  assert pel.norm is dice.norm  # one colour scale for both maps
  np.testing.assert_allclose(pel.norm.vmax, max(pel.get_array().max(),
                                                dice.get_array().max()))
  labels = [ax.get_ylabel() for ax in fig.axes]
  assert figures.WEIGHT_LABEL in labels
  panel_px = fig.get_size_inches()[0] * 100 / (6 if size == 16 else 3)
  assert panel_px >= (250 if size == 16 else 600)  # grows with the image
  figures.plt.close(fig)


def test_predict_folder(run_dir, tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "in").mkdir()
  Image.fromarray(rng.integers(0, 255, (40, 52), np.uint8)).save(tmp_path / "in/a.png")
  tifffile.imwrite(tmp_path / "in/b.tif", rng.integers(0, 65535, (20, 24), np.uint16))
  assert main.main(["predict", "--checkpoint", str(run_dir), "--input",
                    str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 0
  a, b = (np.asarray(Image.open(tmp_path / f"out/{n}.png")) for n in "ab")
  assert a.shape == (40, 52) and b.shape == (20, 24) and a.max() <= 1
  # Visible: a palette PNG whose values are the ids, shown black and white.
  with Image.open(tmp_path / "out/a.png") as im:
    assert im.mode == "P"
    rgb = np.asarray(im.convert("RGB"))
  np.testing.assert_array_equal(rgb, np.repeat(255 * a[..., None], 3, -1))
  np.testing.assert_array_equal(data.read_image(tmp_path / "out/a.png"), a)
  ids = np.arange(5, dtype=np.uint8).reshape(1, 5)
  colours = np.asarray(predict.mask_image(ids, 5).convert("RGB"))[0]
  assert (colours[0] == 0).all() and len({tuple(c) for c in colours}) == 5
  assert (colours[1:].max(-1) == 255).all()  # every class bright


# ------------------------------------------------------------ data parallel
def _one_step(use_pmap: bool | None, loss: str):
  """Params after one SGD step: None = one device, else 8 devices."""
  cfg = tiny(loss=loss)
  ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
  batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, 16)
  model = train.make_model(cfg, 1, "data" if use_pmap else None)
  # plain SGD: the updated params differ exactly as the gradients do
  optimizer = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
  loss_fn = train.make_loss(cfg)
  if use_pmap is None:
    with jax.default_device(jax.devices()[0]):
      nnx.jit(train._update, static_argnames=("loss_fn", "num_classes"))(
          model, optimizer, batch, loss_fn=loss_fn, num_classes=2)
  else:
    stepper = train.Stepper(model, optimizer, loss_fn, cfg, use_pmap)
    stepper(batch)
    stepper.sync()
  return params_of(model)


@pytest.mark.parametrize("loss", ["pel+ce"])
def test_data_parallel_step_matches_one_device(loss):
  assert jax.device_count() == 8
  reference = _one_step(None, loss)
  for use_pmap in (False, True):
    got = _one_step(use_pmap, loss)
    for k in reference:
      np.testing.assert_allclose(got[k], reference[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"pmap={use_pmap} {k}")


# ----------------------------------------------------- two processes, loopback
def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """jax.distributed on CPU (gloo): 2 processes x 2 devices vs one process."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen(
      [sys.executable, str(ROOT / "tests/examples_unet_worker.py"), str(port),
       str(i), str(tmp_path)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    logs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]

  # The same computation in this process, on one device, on the full batch.
  cfg = train.get_config(image_size=16, num_train=4, width=4, depth=1,
                         batch_size=8, warmup=0, steps=3)
  ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
  batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, 16)
  logits = np.random.default_rng(1).normal(size=(8, 16, 16, 2)).astype(np.float32)
  pel = train.region_loss_fn("pel", cfg)(logits, batch["mask"],
                                         from_logits=True, batch=True)
  model = train.make_model(cfg, 1)
  optimizer = train.make_optimizer(cfg, model)
  loss, _, _ = nnx.jit(train._update, static_argnames=("loss_fn", "num_classes"))(
      model, optimizer, batch, loss_fn=train.make_loss(cfg), num_classes=2)
  want = {"param:" + k: v for k, v in params_of(model).items()}
  for i in range(2):
    got = np.load(tmp_path / f"process_{i}.npz")
    np.testing.assert_allclose(got["jit_pel"], pel, rtol=1e-6)
    np.testing.assert_allclose(got["pmap_pel"], pel, rtol=1e-6)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-6)
    assert set(got.files) - {"jit_pel", "pmap_pel", "loss"} == set(want)
    for k, v in want.items():
      np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


# --------------------------------------------------- checkpoints and resume
def test_interrupt_then_resume_is_bit_exact(tmp_path, monkeypatch):
  cfg = tiny(figures=0, ckpt_every=100)
  train.train_and_evaluate(cfg, tmp_path / "straight", quiet=True)

  real = data.train_batch

  def interrupt_at_3(ds, seed, step, *args):
    if step == 3:
      raise KeyboardInterrupt  # as if the user pressed Ctrl-C
    return real(ds, seed, step, *args)

  monkeypatch.setattr(data, "train_batch", interrupt_at_3)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(cfg, tmp_path / "resumed", quiet=True)
  assert checkpoint.Checkpoints(tmp_path / "resumed").latest_step() == 3
  monkeypatch.setattr(data, "train_batch", real)
  cfg.resume = True
  train.train_and_evaluate(cfg, tmp_path / "resumed", quiet=True)

  a, b = saved_params(tmp_path / "straight"), saved_params(tmp_path / "resumed")
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  with (tmp_path / "resumed/train_curve.csv").open() as f:
    assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 7))

  cfg.steps = 4  # below the latest checkpoint (6): refused, nothing replaced
  with pytest.raises(ValueError, match="already at step 6"):
    train.train_and_evaluate(cfg, tmp_path / "resumed", quiet=True)
  assert checkpoint.Checkpoints(tmp_path / "resumed").manager.all_steps()[-1] == 6


def _curve_steps(run_dir) -> list[int]:
  with (run_dir / "train_curve.csv").open() as f:
    return [int(r["step"]) for r in csv.DictReader(f)]


def test_curve_rows_survive_a_hard_kill(tmp_path, monkeypatch):
  """kill -9: no handler runs; the CSV must already hold the rows so far."""
  real = data.train_batch

  def killed_at_5(ds, seed, step, *args):
    if step == 5:
      raise SystemExit("killed")  # not KeyboardInterrupt: nothing is saved
    return real(ds, seed, step, *args)

  monkeypatch.setattr(data, "train_batch", killed_at_5)
  cfg = tiny(figures=0, ckpt_every=3)
  with pytest.raises(SystemExit):
    train.train_and_evaluate(cfg, tmp_path, quiet=True)
  assert _curve_steps(tmp_path) == [1, 2, 3, 4, 5]
  monkeypatch.setattr(data, "train_batch", real)
  cfg.resume = True
  train.train_and_evaluate(cfg, tmp_path, quiet=True)
  assert _curve_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


@pytest.fixture
def sigterm_not_fatal():
  """Old behaviour would kill pytest: make an unhandled SIGTERM an error."""
  def fail(signum, frame):
    raise RuntimeError("SIGTERM reached the default handler")
  previous = signal.signal(signal.SIGTERM, fail)
  yield
  signal.signal(signal.SIGTERM, previous)


def test_sigterm_saves_like_ctrl_c(tmp_path, monkeypatch, sigterm_not_fatal):
  real = data.train_batch

  def term_at_2(ds, seed, step, *args):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(ds, seed, step, *args)

  monkeypatch.setattr(data, "train_batch", term_at_2)
  with pytest.raises(train.Interrupted) as got:
    train.train_and_evaluate(tiny(figures=0, ckpt_every=100), tmp_path,
                             quiet=True)
  assert got.value.signum == signal.SIGTERM
  assert checkpoint.Checkpoints(tmp_path).latest_step() == 3  # step 2 finished
  assert _curve_steps(tmp_path) == [1, 2, 3]


def test_ctrl_c_during_start_up(tmp_path, monkeypatch, capsys):
  real = data.synthetic

  def interrupted_while_loading(*args, **kw):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kw)

  monkeypatch.setattr(data, "synthetic", interrupted_while_loading)
  out = tmp_path / "out"
  assert main.main(["--out", str(out), "--image-size", "16", "--num-train",
                    "8", "--depth", "1"]) == 130
  got = capsys.readouterr()
  assert "preparing data" in got.out
  assert "nothing was saved" in got.err and "--resume" not in got.err
  assert not out.exists()


def test_reused_out_is_refused_or_moved_aside(tmp_path):
  """A second run in the same --out must not leave the first run's model."""
  out = tmp_path / "run"
  train.train_and_evaluate(tiny(steps=2, figures=0), out, quiet=True)
  first = saved_params(out)
  with pytest.raises(train.OutputError, match="not empty.*--resume.*--overwrite"):
    train.train_and_evaluate(tiny(steps=2, figures=0, seed=1), out, quiet=True)
  assert main.main(["--out", str(out), "--steps", "1"]) == 2
  train.train_and_evaluate(tiny(steps=2, figures=0, seed=1, overwrite=True),
                           out, quiet=True)
  new, moved = saved_params(out), saved_params(tmp_path / "run.previous-1")
  assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1
  for k in first:
    np.testing.assert_array_equal(moved[k], first[k], err_msg=k)
  assert any((new[k] != first[k]).any() for k in first)


def test_incompatible_and_corrupt_checkpoints(run_dir, tmp_path):
  model = train.make_model(tiny(width=8), 1)
  ckpts = checkpoint.Checkpoints(run_dir, create=False)
  with pytest.raises(checkpoint.CheckpointError, match=r"incompatible.*width"):
    train._load(ckpts, None, model, None, {"classes": 2, "width": 8, "depth": 1,
                                           "norm": "group", "in_channels": 1})
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint directory"):
    predict.load_model(tmp_path / "nowhere")

  broken = tmp_path / "broken"
  (broken / "checkpoints").mkdir(parents=True)
  step_dir = broken / "checkpoints" / "8"
  subprocess.run(["cp", "-r", str(run_dir / "checkpoints" / "8"), str(step_dir)],
                 check=True)
  for f in (step_dir / "model").rglob("*"):
    if f.is_file() and "ocdbt" in str(f.relative_to(step_dir)):
      f.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match=f"{step_dir}: corrupt"):
    predict.load_model(broken)


def _flip_a_saved_bit(run_dir) -> None:
  """Rewrites the latest checkpoint's model arrays with one bit flipped.

  The arrays are stored compressed, so the flip goes through Orbax: the
  effect is what a flipped bit in the decompressed data would give.
  """
  step_dir = run_dir / "checkpoints" / str(
      checkpoint.Checkpoints(run_dir, create=False).latest_step())
  ckptr = ocp.StandardCheckpointer()
  tree = ckptr.restore(step_dir / "model")
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  flat = np.array(leaves[0]).view(np.uint32).ravel()
  flat[0] ^= 1 << 30  # an exponent bit: 0.05 becomes ~1.7e37
  leaves[0] = flat.view(np.float32).reshape(np.shape(leaves[0]))
  shutil.rmtree(step_dir / "model")
  ckptr.save(step_dir / "model", jax.tree_util.tree_unflatten(treedef, leaves))
  ckptr.wait_until_finished()


def test_bit_flipped_checkpoint_is_refused(tmp_path):
  out = tmp_path / "run"
  cfg = tiny(steps=3, figures=0)
  train.train_and_evaluate(cfg, out, quiet=True)
  _flip_a_saved_bit(out)
  with pytest.raises(checkpoint.CheckpointError, match="differ from their checksums"):
    predict.load_model(out)
  cfg.resume, cfg.steps = True, 6
  with pytest.raises(checkpoint.CheckpointError, match="corrupt checkpoint"):
    train.train_and_evaluate(cfg, out, quiet=True)


def test_non_finite_loss_stops_without_saving(tmp_path, monkeypatch):
  real = data.train_batch

  def nan_from_step_4(ds, seed, step, *args):
    batch = real(ds, seed, step, *args)
    if step >= 4:
      batch["image"] = np.full_like(batch["image"], np.nan)
    return batch

  monkeypatch.setattr(data, "train_batch", nan_from_step_4)
  out = tmp_path / "run"
  with pytest.raises(train.Diverged, match="step 5.*latest: step 3"):
    train.train_and_evaluate(tiny(steps=9, figures=0, ckpt_every=3,
                                  log_every=3), out, quiet=True)
  ckpts = checkpoint.Checkpoints(out, create=False)
  assert ckpts.manager.all_steps() == [3]
  assert all(np.isfinite(v).all() for v in saved_params(out).values())
  assert not (out / "metrics.json").exists()


# -------------------------------------------------------------- folder data
def _write_pair(root, stem, image, mask, suffix=".png"):
  for sub, arr in (("images", image), ("masks", mask)):
    (root / sub).mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
      Image.fromarray(arr).save(root / sub / f"{stem}.png")
    else:
      tifffile.imwrite(root / sub / f"{stem}{suffix}", arr)


def test_folder_loader_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  gray8 = rng.integers(0, 256, (24, 20), np.uint8)
  rgb8 = rng.integers(0, 256, (24, 20, 3), np.uint8)
  gray16 = rng.integers(0, 65536, (16, 32), np.uint16)
  inst = rng.integers(0, 7, (16, 32)).astype(np.uint16)  # instance labels
  _write_pair(tmp_path, "a", gray8, (gray8 > 128).astype(np.uint8))
  _write_pair(tmp_path, "b", rgb8, (rgb8[..., 0] > 200).astype(np.uint8))
  _write_pair(tmp_path, "c", gray16, inst, ".tif")
  ds = data.load_folder(tmp_path, num_classes=2, binary=True)
  assert ds.names == ["a", "b", "c"] and ds.in_channels == 3
  np.testing.assert_allclose(ds.images[0][..., 1], gray8 / 255, rtol=1e-6)
  np.testing.assert_allclose(ds.images[1], rgb8 / 255, rtol=1e-6)
  np.testing.assert_allclose(ds.images[2][..., 2], gray16 / 65535, rtol=1e-6)
  np.testing.assert_array_equal(ds.masks[2], inst > 0)
  np.testing.assert_array_equal(ds.masks[0], gray8 > 128)
  train_ds, val_ds = data.split(ds, 0.3, seed=0)
  assert sorted(train_ds.names + val_ds.names) == ["a", "b", "c"]
  assert len(val_ds.names) == 1 and data.split(ds, 0.3, 0)[1].names == val_ds.names


def _bad(tmp_path, case):
  root = tmp_path / case
  img = np.zeros((16, 16), np.uint8)
  _write_pair(root, "good", img, img)
  if case == "missing_mask":
    Image.fromarray(img).save(root / "images/lonely.png")
    return root, "images/lonely.png: no mask"
  if case == "size_mismatch":
    _write_pair(root, "odd", img, np.zeros((16, 15), np.uint8))
    return root, "masks/odd.png: mask size"
  if case == "unreadable":
    _write_pair(root, "bad", img, img)
    (root / "images/bad.png").write_bytes(b"not a png")
    return root, "images/bad.png: unreadable"
  if case == "empty":
    for f in (root / "images").iterdir():
      f.unlink()
    return root, "images: no PNG or TIFF images"
  if case == "negative_label":
    _write_pair(root, "neg", img, np.full((16, 16), -1, np.int16), ".tif")
    return root, "masks/neg.tif: negative mask value -1"
  if case == "duplicate_stem":
    _write_pair(root, "twice", img, img)
    tifffile.imwrite(root / "images/twice.tif", img)
    return root, "images/twice.png and twice.tif: two files with the same name"
  if case == "label_too_large":
    _write_pair(root, "hot", img, np.full((16, 16), 5, np.uint8))
    return root, "masks/hot.png: mask value 5 >= num_classes = 2"
  raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_mask", "size_mismatch", "unreadable",
                                  "empty", "label_too_large", "negative_label",
                                  "duplicate_stem"])
def test_bad_data_names_the_file(tmp_path, case):
  root, message = _bad(tmp_path, case)
  with pytest.raises(data.DataError, match=message):
    data.load_folder(root, num_classes=2)


def test_bad_data_stops_cli_before_writing(tmp_path, capsys):
  root, message = _bad(tmp_path, "label_too_large")
  out = tmp_path / "out"
  assert main.main(["--data", str(root), "--out", str(out)]) == 2
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_tiny_image_is_named(tmp_path):
  root = tmp_path / "data"
  _write_pair(root, "big", np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8))
  _write_pair(root, "tiny", np.zeros((3, 40), np.uint8), np.zeros((3, 40), np.uint8))
  cfg = train.get_config(data=str(root), val_data=str(root), depth=2)
  with pytest.raises(data.DataError, match=r"images/tiny.png: image size \(3, 40\)"):
    train.load_data(cfg)
  cfg.patch_size = 16
  with pytest.raises(data.DataError, match=r"images/tiny.png: image size \(3, 40\)"):
    train.load_data(cfg)


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
  got = {p.stem: data.to_float(data.read_image(p), p) for p in tmp_path.iterdir()}
  np.testing.assert_allclose(got["la"][..., 0], gray / 255, rtol=1e-6)
  assert got["la"].shape == (8, 8, 1)
  np.testing.assert_array_equal(got["unit"][..., 0], unit)
  want = (raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min())
  np.testing.assert_allclose(got["raw"][..., 0], want, rtol=1e-6, atol=1e-7)
  raw[2, 3] = np.nan
  with pytest.raises(data.DataError, match="raw.tif: NaN or infinite"):
    data.to_float(raw, tmp_path / "raw.tif")
  _write_pair(tmp_path / "set", "a", la, mask)
  assert data.load_folder(tmp_path / "set", 2).in_channels == 1


def test_unwritable_out_is_a_clear_error(tmp_path, capsys):
  (tmp_path / "file").write_text("not a folder")
  out = tmp_path / "file" / "run"
  assert main.main(["--out", str(out), "--image-size", "16", "--depth", "1",
                    "--num-train", "8", "--num-val", "2"]) == 2
  assert f"--out {out}: cannot write there" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["examples/unet/main.py"],
                                  ["-m", "examples.unet.main"]])
def test_cli_entry_points(argv):
  out = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, text=True,
                       capture_output=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "--init-from" in out.stdout and "--patch-size" in out.stdout

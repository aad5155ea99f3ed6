"""Tests of the UNet example's runs (examples/unet train.py, checkpoint.py,
rundir.py, interrupts.py, predict.py): tiny images, few steps. They share one
trained run (`run_dir`); the other modules' tests are examples_unet_<module>_test.py.
"""

import csv
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys

from examples_unet_helpers import params_of
from examples_unet_helpers import tiny
from flax import nnx
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from PIL import Image
import pytest
import tifffile

from examples.unet import accumulate
from examples.unet import checkpoint
from examples.unet import configs
from examples.unet import data
from examples.unet import inference
from examples.unet import interrupts
from examples.unet import losses
from examples.unet import main
from examples.unet import models
from examples.unet import predict
from examples.unet import rundir
from examples.unet import steps
from examples.unet import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def saved_params(run_dir) -> dict[str, np.ndarray]:
  return params_of(checkpoint.load_model(run_dir)[0])


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
  assert [ln.split("|")[0] for ln in lines if ln.startswith("step")] == [
    "step      1/2 ",
    "step      2/2 ",
  ]


def test_predict_folder(run_dir, tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "in").mkdir()
  Image.fromarray(rng.integers(0, 255, (40, 52), np.uint8)).save(
    tmp_path / "in/a.png"
  )
  tifffile.imwrite(
    tmp_path / "in/b.tif", rng.integers(0, 65535, (20, 24), np.uint16)
  )
  assert (
    main.main(
      [
        "predict",
        "--checkpoint",
        str(run_dir),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
      ]
    )
    == 0
  )
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
  # Overlays: the image in RGB with the predicted foreground tinted.
  with Image.open(tmp_path / "out/overlays/a.png") as im:
    assert im.mode == "RGB" and im.size == (52, 40)
  # With true masks (same names), the metrics of the run's validation.
  for n, shape in (("a", (40, 52)), ("b", (20, 24))):
    (tmp_path / "masks").mkdir(exist_ok=True)
    Image.fromarray(np.ones(shape, np.uint8)).save(tmp_path / f"masks/{n}.png")
  predict.predict_folder(
    run_dir, tmp_path / "in", tmp_path / "scored", masks_dir=tmp_path / "masks"
  )
  scored = json.loads((tmp_path / "scored/metrics.json").read_text())
  fg = sum(
    int(np.asarray(Image.open(tmp_path / f"scored/{n}.png")).sum())
    for n in "ab"
  )
  np.testing.assert_allclose(scored["val_iou"], fg / (40 * 52 + 20 * 24))


def _one_step(sharded: bool, loss: str):
  """Params after one SGD step: on one device, or jit-sharded over 8."""
  cfg = tiny(loss=loss)
  ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
  batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, 16)
  model = models.make_model(cfg, 1)
  # plain SGD: the updated params differ exactly as the gradients do
  optimizer = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
  loss_fn = losses.make_loss(cfg)
  if sharded:
    parallel = steps.DataParallel(loss_fn, cfg.classes)
    parallel.replicate(model, optimizer)
    parallel.step(model, optimizer, batch)
  else:
    with jax.default_device(jax.devices()[0]):
      nnx.jit(steps.train_step, static_argnames=("loss_fn", "num_classes"))(
        model, optimizer, batch, loss_fn=loss_fn, num_classes=2
      )
  return params_of(model)


@pytest.mark.parametrize("loss", ["pel+ce"])
def test_data_parallel_step_matches_one_device(loss):
  assert jax.device_count() == 8
  reference, got = _one_step(False, loss), _one_step(True, loss)
  for k in reference:
    np.testing.assert_allclose(
      got[k], reference[k], rtol=1e-5, atol=1e-6, err_msg=k
    )


def _steps(cfg, micro, sharded, count=3):
  """(loss, confusion, |grad|) per SGD step, and the params after them.

  micro=None: the plain `train_step` on one device, the reference.
  Plain SGD: Adam's first steps (g / |g|) would magnify rounding where g ~ 0.
  """
  ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
  model = models.make_model(cfg, 1)
  optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
  stats_loss = losses.make_stats_loss(cfg)
  if sharded:
    parallel = steps.DataParallel(
      losses.make_loss(cfg),
      cfg.classes,
      micro=micro,
      stats_loss=stats_loss,
      fused_head=cfg.fused_head,
    )
    parallel.replicate(model, optimizer)
    step = parallel.step
  elif micro is None:
    step = nnx.jit(
      functools.partial(
        steps.train_step,
        loss_fn=losses.make_loss(cfg),
        num_classes=cfg.classes,
        fused_head=cfg.fused_head,
      )
    )
  else:
    step = nnx.jit(
      functools.partial(
        accumulate.train_step,
        stats_loss=stats_loss,
        num_classes=cfg.classes,
        micro=micro,
        fused_head=cfg.fused_head,
      )
    )
  out = []
  with jax.default_device(jax.devices()[0]):
    for i in range(count):
      batch = data.train_batch(ds, cfg.seed, i, cfg.batch_size, 16)
      out.append([inference.to_host(x) for x in step(model, optimizer, batch)])
  return out, params_of(model)


def _assert_same_run(got, reference):
  (got_steps, got_params), (ref_steps, ref_params) = got, reference
  for (loss, cm, gnorm), (ref_loss, ref_cm, ref_gnorm) in zip(
    got_steps, ref_steps
  ):
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(gnorm, ref_gnorm, rtol=1e-4)
    np.testing.assert_array_equal(cm, ref_cm)
  for k in ref_params:
    np.testing.assert_allclose(
      got_params[k], ref_params[k], rtol=1e-4, atol=1e-6, err_msg=k
    )


def test_accumulate_matches_the_whole_batch():
  """K micro-batches: the losses, counts and params of the whole-batch run."""
  cfg = tiny(batch_size=32, num_train=16)
  reference = _steps(cfg, None, sharded=False)
  assert reference[0][0][0] > 0 and reference[0][0][2] > 0
  assert not np.allclose(reference[0][0][0], reference[0][-1][0])  # it moves
  # Sharded with K = 1 is the plain sharded step (`DataParallel` runs
  # `steps.train_step` then): test_data_parallel_step_matches_one_device.
  for k, sharded in ((1, False), (2, False), (2, True), (4, False), (4, True)):
    _assert_same_run(_steps(cfg, k, sharded=sharded), reference)


def test_accumulate_per_sample_region_loss():
  """batch_dice=False: per-sample stats stacked, then the mean over samples."""
  cfg = tiny(batch_size=16, loss="tversky+0.5*ce", batch_dice=False, classes=3)
  _assert_same_run(
    _steps(cfg, 2, sharded=True, count=2),
    _steps(cfg, None, sharded=False, count=2),
  )


def test_fused_head_matches_the_plain_head():
  """`--fused-head`: the losses, counts and params of the plain head's run,
  one device, sharded and accumulated."""
  cfg = tiny(batch_size=16, loss="dice+0.5*ce", classes=3)
  reference = _steps(cfg, None, sharded=False)
  assert not np.allclose(reference[0][0][0], reference[0][-1][0])  # it moves
  fused = dataclasses.replace(cfg, fused_head=True)
  for k, sharded in ((None, False), (1, True), (2, True)):
    _assert_same_run(_steps(fused, k, sharded=sharded), reference)


def test_accumulate_boundary_ramp():
  """The boundary term as a sum and a count, ramped by the optimizer's step
  in both steps (R = 2: factors 0.01, 0.5, 1 over the three steps)."""
  cfg = tiny(batch_size=8, loss="dice+0.5*boundary", boundary_ramp=2)
  _assert_same_run(
    _steps(cfg, 2, sharded=False), _steps(cfg, None, sharded=False)
  )


def test_accumulate_flag_runs_the_same_first_step(tmp_path, capsys):
  """`main.py --accumulate 2`: the run loop logs the whole batch's loss/IoU."""
  args = dict(steps=1, batch_size=16, figures=0)
  train.train_and_evaluate(tiny(**args), tmp_path / "plain", quiet=True)
  flags = [
    f"--{k.replace('_', '-')}={v}"
    for k, v in dataclasses.asdict(tiny(**args)).items()
    if v is not None and not isinstance(v, bool)
  ]
  assert (
    main.main(
      ["train", *flags, "--accumulate", "2", "--out", str(tmp_path / "acc")]
    )
    == 0
  )
  printed = capsys.readouterr().out
  assert "loss pel+ce, 2 micro-batches per step" in printed
  # The printed run time is the saved one.
  wall = json.loads((tmp_path / "acc/metrics.json").read_text())["wall_time_s"]
  assert f"({wall:.0f} s, saved as wall_time_s)" in printed
  rows = {}
  for run in ("plain", "acc"):
    with (tmp_path / run / "train_curve.csv").open() as f:
      rows[run] = next(csv.DictReader(f))
  assert (
    json.loads((tmp_path / "acc/metrics.json").read_text())["config"][
      "accumulate"
    ]
    == 2
  )
  np.testing.assert_allclose(
    float(rows["acc"]["loss"]), float(rows["plain"]["loss"]), rtol=1e-5
  )
  assert rows["acc"]["train_iou"] == rows["plain"]["train_iou"]


def test_accumulate_refuses_uneven_parts(tmp_path):
  with pytest.raises(
    ValueError,
    match=r"--accumulate 3: .* --batch-size 8"
    r" over 8 device\(s\) is 1 rows each",
  ):
    train.train_and_evaluate(tiny(accumulate=3), tmp_path, quiet=True)
  with pytest.raises(ValueError, match="--accumulate 2: .* --batch-size 8"):
    train.train_and_evaluate(tiny(accumulate=2), tmp_path, quiet=True)
  with pytest.raises(ValueError, match="--accumulate 2 with --norm batch"):
    train.train_and_evaluate(
      tiny(accumulate=2, batch_size=16, norm="batch"), tmp_path, quiet=True
    )
  with pytest.raises(
    ValueError,
    match="--accumulate 3: .* --batch-size 8"
    r" over 1 device\(s\) is 8 rows each",
  ):
    accumulate.micro_batches(np.zeros((8, 4)), 3, 1)
  assert not any(tmp_path.iterdir())  # refused before writing anything


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  """jax.distributed on CPU (gloo): 2 processes x 2 devices vs one process."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        str(ROOT / "tests/examples_unet_worker.py"),
        str(port),
        str(i),
        str(tmp_path),
      ],
      env=env,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  try:
    logs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]

  # The same computation in this process, on one device, on the full batch.
  cfg = configs.get_config(
    image_size=16,
    num_train=4,
    width=4,
    depth=1,
    batch_size=8,
    warmup=0,
    steps=3,
  )
  ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
  batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, 16)
  logits = (
    np.random.default_rng(1).normal(size=(8, 16, 16, 2)).astype(np.float32)
  )
  pel = losses.region_loss_fn("pel", cfg)(
    logits, batch["mask"], from_logits=True, batch=True
  )
  model = models.make_model(cfg, 1)
  optimizer = steps.make_optimizer(cfg, model)
  loss, _, _ = nnx.jit(
    steps.train_step, static_argnames=("loss_fn", "num_classes")
  )(model, optimizer, batch, loss_fn=losses.make_loss(cfg), num_classes=2)
  want = {"param:" + k: v for k, v in params_of(model).items()}
  for i in range(2):
    got = np.load(tmp_path / f"process_{i}.npz")
    np.testing.assert_allclose(got["jit_pel"], pel, rtol=1e-6)
    np.testing.assert_allclose(got["pmap_pel"], pel, rtol=1e-6)
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-6)
    assert set(got.files) - {"jit_pel", "pmap_pel", "loss"} == set(want)
    for k, v in want.items():
      np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


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
  assert (
    checkpoint.Checkpoints(tmp_path / "resumed").manager.all_steps()[-1] == 6
  )


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
  with pytest.raises(interrupts.Interrupted) as got:
    train.train_and_evaluate(
      tiny(figures=0, ckpt_every=100), tmp_path, quiet=True
    )
  assert got.value.signum == signal.SIGTERM
  assert checkpoint.Checkpoints(tmp_path).latest_step() == 3  # step 2 finished
  assert _curve_steps(tmp_path) == [1, 2, 3]


def test_reused_out_is_refused_or_moved_aside(run_dir, tmp_path):
  """A second run in the same --out must not leave the first run's model."""
  out = tmp_path / "run"
  shutil.copytree(run_dir, out)
  first = saved_params(out)
  with pytest.raises(
    rundir.OutputError, match="not empty.*--resume.*--overwrite"
  ):
    train.train_and_evaluate(tiny(steps=2, figures=0, seed=1), out, quiet=True)
  assert main.main(["--out", str(out), "--steps", "1"]) == 2
  train.train_and_evaluate(
    tiny(steps=2, figures=0, seed=1, overwrite=True), out, quiet=True
  )
  new, moved = saved_params(out), saved_params(tmp_path / "run.previous-1")
  assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1
  for k in first:
    np.testing.assert_array_equal(moved[k], first[k], err_msg=k)
  assert any((new[k] != first[k]).any() for k in first)


def test_incompatible_and_corrupt_checkpoints(run_dir, tmp_path):
  model = models.make_model(tiny(width=8), 1)
  ckpts = checkpoint.Checkpoints(run_dir, create=False)
  with pytest.raises(checkpoint.CheckpointError, match=r"incompatible.*width"):
    checkpoint.restore(
      ckpts,
      model,
      architecture={
        "classes": 2,
        "width": 8,
        "depth": 1,
        "norm": "group",
        "in_channels": 1,
      },
    )
  with pytest.raises(
    checkpoint.CheckpointError, match="no checkpoint directory"
  ):
    checkpoint.load_model(tmp_path / "nowhere")

  broken = tmp_path / "broken"
  (broken / "checkpoints").mkdir(parents=True)
  step_dir = broken / "checkpoints" / "8"
  subprocess.run(
    ["cp", "-r", str(run_dir / "checkpoints" / "8"), str(step_dir)], check=True
  )
  for f in (step_dir / "model").rglob("*"):
    if f.is_file() and "ocdbt" in str(f.relative_to(step_dir)):
      f.write_bytes(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match=f"{step_dir}: corrupt"):
    checkpoint.load_model(broken)


def _flip_a_saved_bit(run_dir) -> None:
  """Rewrites the latest checkpoint's model arrays with one bit flipped.

  The arrays are stored compressed, so the flip goes through Orbax: the
  effect is what a flipped bit in the decompressed data would give.
  """
  step_dir = (
    run_dir
    / "checkpoints"
    / str(checkpoint.Checkpoints(run_dir, create=False).latest_step())
  )
  ckptr = ocp.StandardCheckpointer()
  tree = ckptr.restore(step_dir / "model")
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  flat = np.array(leaves[0]).view(np.uint32).ravel()
  flat[0] ^= 1 << 30  # an exponent bit: 0.05 becomes ~1.7e37
  leaves[0] = flat.view(np.float32).reshape(np.shape(leaves[0]))
  shutil.rmtree(step_dir / "model")
  ckptr.save(step_dir / "model", jax.tree_util.tree_unflatten(treedef, leaves))
  ckptr.wait_until_finished()


def test_bit_flipped_checkpoint_is_refused(run_dir, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(run_dir, out)
  _flip_a_saved_bit(out)
  with pytest.raises(
    checkpoint.CheckpointError, match="differ from their checksums"
  ):
    checkpoint.load_model(out)
  with pytest.raises(checkpoint.CheckpointError, match="corrupt checkpoint"):
    train.train_and_evaluate(tiny(steps=8, resume=True), out, quiet=True)


def test_non_finite_loss_stops_without_saving(tmp_path, monkeypatch):
  real = data.train_batch

  def nan_from_step_4(ds, seed, step, *args):
    batch = real(ds, seed, step, *args)
    if step >= 4:
      batch["image"] = np.full_like(batch["image"], np.nan)
    return batch

  monkeypatch.setattr(data, "train_batch", nan_from_step_4)
  out = tmp_path / "run"
  with pytest.raises(train.DivergenceError, match="step 5.*latest: step 3"):
    train.train_and_evaluate(
      tiny(steps=9, figures=0, ckpt_every=3, log_every=3), out, quiet=True
    )
  ckpts = checkpoint.Checkpoints(out, create=False)
  assert ckpts.manager.all_steps() == [3]
  assert all(np.isfinite(v).all() for v in saved_params(out).values())
  assert not (out / "metrics.json").exists()

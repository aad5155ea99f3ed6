"""Tests of examples/unet/main.py: the command line."""

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys

from examples_unet_helpers import bad_data
from examples_unet_helpers import tiny
import pytest

from examples.unet import checkpoint
from examples.unet import data
from examples.unet import fetch
from examples.unet import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_bad_data_stops_cli_before_writing(tmp_path, capsys):
  root, message = bad_data(tmp_path, "label_too_large")
  out = tmp_path / "out"
  assert main.main(["--data", str(root), "--out", str(out)]) == 2
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_ctrl_c_during_start_up(tmp_path, monkeypatch, capsys):
  real = data.synthetic

  def interrupted_while_loading(*args, **kw):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kw)

  monkeypatch.setattr(data, "synthetic", interrupted_while_loading)
  out = tmp_path / "out"
  assert (
    main.main(
      [
        "--out",
        str(out),
        "--image-size",
        "16",
        "--num-train",
        "8",
        "--depth",
        "1",
      ]
    )
    == 130
  )
  got = capsys.readouterr()
  assert "preparing data" in got.out
  assert "nothing was saved" in got.err and "--resume" not in got.err
  assert not out.exists()


def test_unwritable_out_is_a_clear_error(tmp_path, capsys):
  (tmp_path / "file").write_text("not a folder")
  out = tmp_path / "file" / "run"
  assert (
    main.main(
      [
        "--out",
        str(out),
        "--image-size",
        "16",
        "--depth",
        "1",
        "--num-train",
        "8",
        "--num-val",
        "2",
      ]
    )
    == 2
  )
  assert f"--out {out}: cannot write there" in capsys.readouterr().err


@pytest.mark.parametrize(
  "argv", [["examples/unet/main.py"], ["-m", "examples.unet.main"]]
)
def test_cli_entry_points(argv):
  out = subprocess.run(
    [sys.executable, *argv, "--help"],
    cwd=ROOT,
    text=True,
    capture_output=True,
    timeout=120,
  )
  assert out.returncode == 0, out.stderr
  assert "--init-from" in out.stdout and "--patch-size" in out.stdout


def test_xla_warnings_are_off_before_jax_loads():
  # XLA's "Constant folding ... > 1s" lines would break the progress lines.
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  code = (
    "import os, sys; import examples.unet.main;"
    " print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'jax' in sys.modules)"
  )
  got = subprocess.run(
    [sys.executable, "-c", code],
    cwd=ROOT,
    env=env,
    text=True,
    capture_output=True,
    timeout=120,
  )
  assert got.stdout.split() == ["3", "False"], got.stderr


def test_fetch_defaults_out_to_data_name(tmp_path, monkeypatch, capsys):
  calls = []

  def fake_fetch(name, out, **kw):
    calls.append((name, out))
    return {"config": {"classes": 4}}

  monkeypatch.setattr(fetch, "fetch", fake_fetch)
  assert main.main(["fetch", "he-types"]) == 0
  assert calls == [("he-types", "data/he-types")]
  # The loader reads a fetch output's train/ and val/ itself.
  assert (
    "train --data data/he-types --classes 4 --out runs/he-types"
    in capsys.readouterr().out
  )


class _Checkpoints:
  """The metadata of a run's latest checkpoint, as `checkpoint` reads it."""

  directory = pathlib.Path("runs/x/checkpoints")

  def __init__(self, **config):
    self.config = dataclasses.asdict(tiny(**config))

  def meta(self, step):
    return step, {"config": self.config}


def test_resume_refuses_a_changed_schedule_without_force():
  saved = _Checkpoints(lr=1e-2, steps=6)
  said = []
  for changed in (
    dict(lr=2e-2),
    dict(steps=9),
    dict(batch_size=16),
    dict(boundary_ramp=2),
  ):
    with pytest.raises(ValueError, match=r"--resume: --.*->.*--force"):
      checkpoint.check_resumable(tiny(**changed), saved, 3, said.append)
  checkpoint.check_resumable(tiny(lr=2e-2, force=True), saved, 3, said.append)
  assert said == ["--resume --force: continuing with --lr 0.01 -> 0.02"]
  said.clear()
  checkpoint.check_resumable(tiny(steps=6), saved, 6, said.append)
  assert len(said) == 1 and "already finished (step 6 of 6)" in said[0]

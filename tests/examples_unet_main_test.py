"""Tests of examples/unet/main.py: the command line."""

import os
import pathlib
import signal
import subprocess
import sys

from examples_unet_helpers import bad_data
import pytest

from examples.unet import data
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

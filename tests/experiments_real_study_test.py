"""The real-data study driver on tiny fake fetched sets (no network)."""

import json

import numpy as np
from PIL import Image
import pytest

from examples.unet import data
from experiments import real_study


def _fake_fetch(calls):
  """Writes a tiny DIR/{train,val,test}/{images,masks,instances} set."""

  def fetcher(name, out, wheel_dir=None):
    calls.append((name, str(out), wheel_dir))
    classes = 3 if name == "he-types" else 2
    k = 0
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
      for sub in ("images", "masks", "instances"):
        (out / split / sub).mkdir(parents=True, exist_ok=True)
      for _ in range(n):
        im, m = data.synthetic_example(3, k, 32, classes)
        k += 1
        Image.fromarray((im[..., 0] * 255).astype(np.uint8)).save(
          out / split / "images" / f"t{k}.png"
        )
        Image.fromarray(m.astype(np.uint8)).save(
          out / split / "masks" / f"t{k}.png"
        )
        Image.fromarray(m.astype(np.uint16)).save(
          out / split / "instances" / f"t{k}.png"
        )

  return fetcher


@pytest.mark.slow
def test_quick_real_study(tmp_path, monkeypatch):
  calls = []
  out = tmp_path / "real"
  argv = [
    "--out",
    str(out),
    "--data-root",
    str(tmp_path / "data"),
    "--quick",
    "--sets",
    "he-types",
    "--",
    "--arms",
    "dice,pel_n3+ce_patch,dice+ce_patch",
  ]
  results = real_study.main(argv, fetcher=_fake_fetch(calls))
  assert calls == [("he-types", str(tmp_path / "data" / "he-types"), None)]
  res = json.loads((out / "he-types" / "results.json").read_text())
  assert res["eval_split"] == "test"
  assert res["config"]["classes"] == 4
  row = res["per_seed"]["pel_n3+ce_patch"][0]
  assert set(row) == {"seed", "iou", "dice", "bf1", "object_f1", "aji"}
  assert (out / "he-types" / "overlays.png").stat().st_size > 0
  assert results["he-types"]["summary"].keys() == {
    "dice",
    "pel_n3+ce_patch",
    "dice+ce_patch",
  }
  text = (out / "real_results.md").read_text()
  assert "## AJI (aggregated Jaccard index)" in text
  assert "| synthetic (committed run) | he-types |" in text
  # the pair row carries the recipe-vs-its-control interval of each set
  pair = results["he-types"]["pairs"]["pel_n3+ce_patch - dice+ce_patch"]["aji"]
  assert f"{100 * pair['mean']:+.2f} [{100 * pair['lo']:+.2f}" in text
  assert "| pel_n2 | " in text  # an arm not run shows as a dash
  # the gradient analysis' closed forms are binary: skipped for 4 classes
  assert not (out / "he-types" / "gradient_shares.json").exists()

  # A second run with the same settings reuses the finished set; other
  # settings would redo it.
  def no_rerun(argv):
    raise AssertionError(f"finetune_study rerun: {argv}")

  monkeypatch.setattr(real_study.finetune_study, "main", no_rerun)
  again = real_study.main(argv, fetcher=_fake_fetch(calls))
  assert again["he-types"]["per_seed"] == results["he-types"]["per_seed"]
  assert (out / "real_results.md").read_text().split("Study time")[0] == (
    text.split("Study time")[0]
  )
  study_argv = ["--out", str(out / "he-types"), "--classes", "4", "--quick"]
  assert real_study.finished(out / "he-types", study_argv) is None


def test_unknown_set_is_refused(capsys):
  with pytest.raises(SystemExit):
    real_study.parse_args(["--sets", "he-nuclei,nope"])
  assert "unknown set(s) ['nope']" in capsys.readouterr().err

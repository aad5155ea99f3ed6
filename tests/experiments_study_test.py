"""The PEL study: t quantiles and paired CIs, closed-form gradients, quick run."""

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import gradient_analysis as ga
from experiments import stats
import pel_jax


@pytest.mark.parametrize(
  "q,df,want",
  [
    (0.975, 1, 12.7062),
    (0.975, 2, 4.3027),
    (0.975, 4, 2.7764),
    (0.975, 9, 2.2622),
    (0.975, 30, 2.0423),
    (0.95, 10, 1.8125),
    (0.995, 5, 4.0321),
    (0.025, 4, -2.7764),
  ],
)
def test_t_quantile_table(q, df, want):
  assert stats.t_quantile(q, df) == pytest.approx(want, abs=1e-4)


def test_t_cdf_symmetry_and_normal_limit():
  assert stats.t_cdf(0.0, 3) == pytest.approx(0.5)
  assert stats.t_cdf(-1.3, 7) == pytest.approx(1 - stats.t_cdf(1.3, 7))
  assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)


def test_paired_ci_hand_computed():
  # d = [1, 2, 0, 3, -1]: mean 1, sd sqrt(2.5), half = 2.7764 * sqrt(2.5/5)
  ci = stats.paired_ci([2, 3, 1, 4, 0], [1, 1, 1, 1, 1])
  assert ci["mean"] == pytest.approx(1.0)
  assert ci["sd"] == pytest.approx(math.sqrt(2.5))
  assert ci["half_width"] == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-5)
  assert ci["lo"] == pytest.approx(1 - 1.963243, rel=1e-5)
  assert math.isnan(stats.paired_ci([1.0], [0.0])["half_width"])


def _random_case(seed=0, shape=(2, 6, 7)):
  rng = np.random.default_rng(seed)
  p = rng.uniform(0.02, 0.98, shape)
  g = (rng.random(shape) < 0.35).astype(np.float64)
  return p, g


@pytest.mark.parametrize(
  "n,s,a,b",
  [
    (1.0, 1.0, 0.5, 0.5),
    (3.0, 10.0, 0.5, 0.5),
    (0.5, 10.0, 0.5, 0.5),
    (2.0, 1.0, 1.0, 1.0),
    (3.0, 2.0, 0.3, 0.7),
  ],
)
def test_closed_form_dl_dp_matches_jax(n, s, a, b):
  p, g = _random_case()
  kw = dict(exponent=n, scale=s, fp_weight=a, fn_weight=b, batch=True)
  grad = jax.grad(
    lambda x: pel_jax.pel_loss(x, jnp.asarray(g[..., None]), **kw)
  )(jnp.asarray(p[..., None]))
  d, r = ga.channel_sums(p, g, n=n, alpha=a, beta=b)
  want = ga.dl_dp(p, g, n=n, s=s, alpha=a, beta=b, d=d, r=r)
  np.testing.assert_allclose(
    np.asarray(grad)[..., 0], want, rtol=2e-4, atol=1e-7
  )
  # background pixels: one value, s R alpha / D, whatever their p
  assert np.allclose(want[g == 0], s * r * a / d)
  # foreground pixels: -(s/D) [n p^(n-1) - R (1 - beta)]
  np.testing.assert_allclose(
    want[g == 1], -(s / d) * (n * p[g == 1] ** (n - 1) - r * (1 - b))
  )


@pytest.mark.parametrize("name", list(ga.LOSSES))
def test_closed_form_binary_softmax_logits_match_jax(name):
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (2, 8, 8, 2)).astype(np.float32)
  y = (rng.random((2, 8, 8)) < 0.3).astype(np.int32)
  kw = ga.LOSSES[name]
  grad = np.asarray(
    jax.grad(
      lambda x: pel_jax.pel_loss(x, y, from_logits=True, batch=True, **kw)
    )(jnp.asarray(logits))
  )
  p1 = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))[..., 1]
  _, _, dz = ga.binary_softmax_grads(
    p1,
    y,
    n=kw["exponent"],
    s=kw["scale"],
    alpha=kw["fp_weight"],
    beta=kw["fn_weight"],
  )
  np.testing.assert_allclose(grad[..., 1], dz, rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(grad[..., 0], -dz, rtol=1e-3, atol=1e-7)


def test_shares_are_fractions():
  rng = np.random.default_rng(2)
  logits = rng.normal(0, 2, (2, 16, 16, 2)).astype(np.float32)
  y = (rng.random((2, 16, 16)) < 0.3).astype(np.int32)
  out = ga.shares(logits, y, names=("dice", "pel_n3"))
  assert out["uniform"]["top10_dev"] == pytest.approx(0.1, abs=0.01)
  for name in ("dice", "pel_n3"):
    for wrt in ("logits", "probs"):
      assert all(0 <= v <= 1 for v in out[name][wrt].values())


def test_quick_study_end_to_end(tmp_path):
  from experiments import finetune_study  # pylint: disable=import-outside-toplevel

  out = tmp_path / "study"
  finetune_study.main(
    [
      "--out",
      str(out),
      "--quick",
      "--seeds",
      "2",
      "--arms",
      "dice,pel_n3+ce_patch",
    ]
  )
  for f in (
    "results.json",
    "results.csv",
    "results.md",
    "bars.png",
    "gradient_curves.png",
    "weight_maps.png",
    "gradient_shares.json",
  ):
    assert (out / f).stat().st_size > 0, f
  res = json.loads((out / "results.json").read_text())
  assert set(res["summary"]) == {"dice", "pel_n3+ce_patch"}
  for rows in res["per_seed"].values():
    assert len(rows) == 2
    for r in rows:
      assert 0 <= r["iou"] <= r["dice"] <= 1
  d = res["summary"]["pel_n3+ce_patch"]["iou"]["delta"]
  diffs = [
    a["iou"] - b["iou"]
    for a, b in zip(res["per_seed"]["pel_n3+ce_patch"], res["per_seed"]["dice"])
  ]
  assert d["mean"] == pytest.approx(np.mean(diffs))
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and rows[0]["arm"] == "dice"
  assert "| pel_n3+ce_patch |" in (out / "results.md").read_text()


def test_quick_study_on_a_folder_of_mixed_sizes(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel

  from examples.unet import data  # pylint: disable=import-outside-toplevel
  from experiments import finetune_study  # pylint: disable=import-outside-toplevel

  root = tmp_path / "data"
  (root / "images").mkdir(parents=True)
  (root / "masks").mkdir()
  for i in range(8):
    im, m = data.synthetic_example(5, i, 48 if i % 2 else 40, 3)
    Image.fromarray((im[..., 0] * 255).astype(np.uint8)).save(
      root / "images" / f"x{i}.png"
    )
    Image.fromarray((m * 7).astype(np.uint8)).save(root / "masks" / f"x{i}.png")
  res = finetune_study.main(
    [
      "--out",
      str(tmp_path / "out"),
      "--quick",
      "--data",
      str(root),
      "--arms",
      "dice",
    ]
  )
  assert len(res["per_seed"]["dice"]) == 2
  assert (tmp_path / "out" / "weight_maps.png").stat().st_size > 0

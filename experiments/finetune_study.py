"""Does PEL help? The fine-tuning study, one command.

  python -m experiments.finetune_study --out runs/study          # ~3.5 min (2 idle cores)
  python -m experiments.finetune_study --out runs/quick --quick  # ~1-2 min

Protocol: train the example UNet (binary: foreground vs background) with
Dice + CE until validation IoU plateaus; from that one checkpoint fine-tune
every arm for the same number of steps with a fresh Adam: Dice (the
control), PEL n in {0.5, 2, 3} at the authors' scale (s = 10, weights 0.5,
batch sums), PEL(n=3) + CE on patches (the authors' recipe) and Dice + CE on
the same patches (the recipe's own control). Seed k of every arm draws the
same batches (`train_batch(train, 100 + k, step)`), so differences against
the control are paired; the 95% CI is a t interval over the paired seeds.

Writes results.json, results.csv, results.md, bars.png, gradient_curves.png,
weight_maps.png, gradient_shares.json, config.json and base.pkl (the base
checkpoint, reused by a later run with the same base configuration).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import pathlib
import platform
import sys

import numpy as np

from experiments import common
from experiments import figures
from experiments import gradient_analysis
from experiments import stats
from experiments.common import LossSpec

LABELS = {
  "iou": "IoU",
  "dice": "Dice",
  "bf1": "BF1",
  "object_f1": "F1obj",
  "aji": "AJI",
}
CONTROL = "dice"
# Further paired comparisons (treatment, control) reported when both ran.
PAIRS = (("pel_n3+ce_patch", "dice+ce_patch"), ("pel_n0.5", "pel_n3"))


@dataclasses.dataclass(frozen=True)
class Arm:
  name: str
  loss: LossSpec
  patches: bool = False  # fine-tune on `--patch-size` crops instead of full


ARMS = (
  Arm("dice", LossSpec("dice")),
  Arm("pel_n0.5", LossSpec("pel", 0.5)),
  Arm("pel_n2", LossSpec("pel", 2.0)),
  Arm("pel_n3", LossSpec("pel", 3.0)),
  Arm("pel_n3+ce_patch", LossSpec("pel", 3.0, ce=True), patches=True),
  Arm("dice+ce_patch", LossSpec("dice", ce=True), patches=True),
)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description="Does PEL help? Fine-tuning study.")
  ap.add_argument("--out", default="runs/study")
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument(
    "--base-steps",
    type=int,
    default=1500,
    help="most base steps (stops earlier at the IoU plateau)",
  )
  ap.add_argument("--finetune-steps", type=int, default=200)
  ap.add_argument(
    "--image-size",
    type=int,
    default=64,
    help="synthetic image size; the full-crop size for --data",
  )
  ap.add_argument(
    "--patch-size", type=int, default=32, help="crop size of the *_patch arms"
  )
  ap.add_argument("--width", type=int, default=8)
  ap.add_argument("--depth", type=int, default=3)
  ap.add_argument("--batch-size", type=int, default=8)
  ap.add_argument("--n-train", type=int, default=128)
  ap.add_argument("--n-val", type=int, default=48)
  ap.add_argument("--base-lr", type=float, default=1e-3)
  ap.add_argument("--finetune-lr", type=float, default=1e-4)
  ap.add_argument("--eval-every", type=int, default=150)
  ap.add_argument("--patience", type=int, default=3)
  ap.add_argument(
    "--arms",
    default=",".join(a.name for a in ARMS),
    help="comma-separated subset of: " + ", ".join(a.name for a in ARMS),
  )
  ap.add_argument(
    "--data",
    default=None,
    help="folder with images/ and masks/ (split 75/25), or with"
    " train/, val/ and test/ as `examples.unet.main fetch` writes"
    " (plateau on val/, metrics on test/)",
  )
  ap.add_argument(
    "--classes",
    type=int,
    default=2,
    help="classes incl. background; 2: any mask value > 0 is foreground",
  )
  ap.add_argument(
    "--overlay-index",
    type=int,
    default=0,
    help="evaluation image drawn in overlays.png",
  )
  ap.add_argument(
    "--report-only",
    action="store_true",
    help="rebuild the tables and bar chart from results.json",
  )
  ap.add_argument(
    "--quick",
    action="store_true",
    help="tiny settings for a smoke test (~1 min)",
  )
  args = ap.parse_args(argv)
  if args.quick:
    args.seeds = min(args.seeds, 2)
    args.base_steps, args.eval_every, args.patience = 30, 10, 2
    args.finetune_steps, args.image_size, args.patch_size = 5, 32, 16
    args.width, args.depth, args.n_train, args.n_val = 4, 2, 8, 4
    args.batch_size = 4
  return args


def run_config(args: argparse.Namespace) -> dict:
  """The settings a run's results depend on (what results.json records)."""
  return {
    k: v for k, v in vars(args).items() if k not in ("out", "report_only")
  }


def metric_names(per_seed: dict[str, list[dict]]) -> list[str]:
  """The metrics the runs recorded, in `common.METRICS` order."""
  first = next(iter(per_seed.values()))[0]
  return [m for m in common.METRICS if m in first]


def summarize(per_seed: dict[str, list[dict]], arms: list[str]) -> dict:
  """Mean/sd per arm and metric, and paired Δ vs the control with 95% CI."""
  out = {}
  for arm in arms:
    rows = per_seed[arm]
    out[arm] = {}
    for m in metric_names(per_seed):
      v = np.array([r[m] for r in rows])
      entry = {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
      }
      if CONTROL in per_seed:
        entry["delta"] = stats.paired_ci(v, [r[m] for r in per_seed[CONTROL]])
      out[arm][m] = entry
  return out


def pair_deltas(per_seed: dict[str, list[dict]]) -> dict:
  """Paired Δ with 95% CI for each of `PAIRS` whose two arms both ran."""
  return {
    f"{a} - {b}": {
      m: stats.paired_ci(
        [r[m] for r in per_seed[a]], [r[m] for r in per_seed[b]]
      )
      for m in metric_names(per_seed)
    }
    for a, b in PAIRS
    if a in per_seed and b in per_seed
  }


def pairs_markdown(pairs: dict) -> str:
  pts = lambda x: f"{100 * x:+.2f}"
  metrics = list(next(iter(pairs.values())))
  rows = [
    "| comparison | "
    + " | ".join(f"Δ{LABELS[m]} [95% CI]" for m in metrics)
    + " |",
    "|---" * (len(metrics) + 1) + "|",
  ]
  for name, d in pairs.items():
    rows.append(
      f"| {name} | "
      + " | ".join(
        f"{pts(d[m]['mean'])} [{pts(d[m]['lo'])}, {pts(d[m]['hi'])}]"
        for m in metrics
      )
      + " |"
    )
  return "\n".join(rows) + "\n"


def markdown(
  summary: dict, base: dict, n_seeds: int, split: str = "Validation"
) -> str:
  pts = lambda x: f"{100 * x:+.2f}"
  metrics = list(next(iter(summary.values())))
  head = (
    "| arm | "
    + " | ".join(LABELS[m] for m in metrics)
    + " | "
    + " | ".join(
      f"Δ{LABELS[m]}" + (" vs dice" if i == 0 else "") + " [95% CI]"
      for i, m in enumerate(metrics)
    )
    + " |"
  )
  rows = [
    head,
    "|---" * (2 * len(metrics) + 1) + "|",
    "| base (start) | "
    + " | ".join(f"{100 * base[m]:.2f}" for m in metrics)
    + " |" * len(metrics)
    + " |",
  ]
  for arm, s in summary.items():
    cells = [
      f"{100 * s[m]['mean']:.2f} ± {100 * s[m]['sd']:.2f}" for m in metrics
    ]
    deltas = []
    for m in metrics:
      d = s[m].get("delta")
      deltas.append(
        "—"
        if d is None or arm == CONTROL
        else f"{pts(d['mean'])} [{pts(d['lo'])}, {pts(d['hi'])}]"
      )
    rows.append(f"| {arm} | " + " | ".join(cells + deltas) + " |")
  return (
    f"{split} metrics in points (mean over the foreground classes;"
    f" mean ± sd over {n_seeds} seeds); Δ = paired difference to the"
    " `dice` control, t interval over seeds.\n\n" + "\n".join(rows) + "\n"
  )


def plot_bars(summary: dict, path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  arms = [a for a in summary if a != CONTROL]
  metrics = list(summary[arms[0]])
  fig, axes = plt.subplots(
    1, len(metrics), figsize=(4 * len(metrics), 3.6), sharey=False
  )
  for ax, m in zip(axes, metrics):
    d = [summary[a][m]["delta"] for a in arms]
    mean = np.array([x["mean"] for x in d]) * 100
    err = np.nan_to_num(np.array([x["half_width"] for x in d]) * 100)
    ax.bar(
      range(len(arms)),
      mean,
      yerr=err,
      capsize=4,
      color=["tab:green" if "dice" in a else "tab:red" for a in arms],
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"Δ{LABELS[m]} vs dice control (points, 95% CI)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def write_report(out: pathlib.Path, result: dict) -> str:
  """results.json/csv/md and bars.png from the per-seed metrics; the table."""
  per_seed, names = result["per_seed"], list(result["per_seed"])
  n_seeds, metrics = len(per_seed[names[0]]), metric_names(per_seed)
  result["summary"] = summarize(per_seed, names)
  result["pairs"] = pair_deltas(per_seed)
  split = {"val": "Validation", "test": "Test"}[result.get("eval_split", "val")]
  table = markdown(result["summary"], result["base"], n_seeds, split)
  (out / "results.json").write_text(json.dumps(result, indent=1))
  with open(out / "results.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arm", "seed", *metrics])
    for arm in names:
      for r in per_seed[arm]:
        w.writerow([arm, r["seed"], *(f"{r[m]:.6f}" for m in metrics)])
  base_steps = result["base"]["steps"]
  (out / "results.md").write_text(
    "# Fine-tuning study\n\n"
    + table
    + (
      "\nOther paired comparisons (points):\n\n"
      + pairs_markdown(result["pairs"])
      if result["pairs"]
      else ""
    )
    + (
      "\n## Gradient mass shares (base model, validation set)\n\n"
      + gradient_analysis.shares_table(result["gradient_shares"])
      + "\n"
      if result.get("gradient_shares")
      else ""
    )
    + f"\nBase: {base_steps} steps; wall time"
    f" {result['seconds']['total'] / 60:.1f} min.\n"
  )
  if CONTROL in per_seed and len(names) > 1:
    plot_bars(result["summary"], out / "bars.png")
  return table


def _line(m: dict) -> str:
  return " ".join(f"{LABELS[k]} {v:.4f}" for k, v in m.items())


def main(argv=None):
  args = parse_args(argv)
  if args.report_only:
    out = pathlib.Path(args.out)
    result = json.loads((out / "results.json").read_text())
    print(write_report(out, result))
    return result
  timer = common.Timer()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  log_lines = []

  def log(msg):
    line = f"[{timer():7.1f}s] {msg}"
    print(line, flush=True)
    log_lines.append(line)

  arms = [a for a in ARMS if a.name in args.arms.split(",")]
  if not arms:
    sys.exit(f"no known arm in --arms {args.arms!r}")
  cfg = run_config(args)
  (out / "config.json").write_text(json.dumps(cfg, indent=1))

  train, val, test = common.make_data(
    args.data, args.image_size, args.n_train, args.n_val, classes=args.classes
  )
  # The stopping rule reads val; the arms are compared on test when there is
  # one, so the reported numbers never steered training.
  evalset, eval_split = (val, "val") if test is None else (test, "test")
  crop = args.image_size
  if args.data:
    crop = min(crop, min(min(im.shape[:2]) for im in train.images))
    crop -= crop % 2**args.depth
  log(
    f"data: {len(train.images)} train / {len(val.images)} val"
    + ("" if test is None else f" / {len(test.images)} test")
    + f" images, {args.classes} classes, crop {crop}, patch {args.patch_size}"
  )
  graphdef, params = common.make_model(
    train.in_channels, args.width, args.depth, seed=0, classes=args.classes
  )

  # ---- base model: Dice + CE until the validation IoU plateaus (cached)
  base_keys = (
    "data",
    "classes",
    "image_size",
    "width",
    "depth",
    "batch_size",
    "n_train",
    "n_val",
    "base_lr",
    "base_steps",
    "eval_every",
    "patience",
  )
  base_cfg = {k: cfg[k] for k in base_keys}
  cache = out / "base.json"
  if (
    (out / "base.pkl").exists()
    and cache.exists()
    and json.loads(cache.read_text())["config"] == base_cfg
  ):
    params = common.load_params(out / "base.pkl", params)
    base_hist = json.loads(cache.read_text())["history"]
    log("base: reused base.pkl")
  else:
    log("base: training Dice + CE until validation IoU plateaus")
    params, base_hist = common.train_until_plateau(
      graphdef,
      params,
      train,
      val,
      LossSpec("dice", ce=True),
      max_steps=args.base_steps,
      lr=args.base_lr,
      seed=0,
      batch_size=args.batch_size,
      patch=crop,
      depth=args.depth,
      eval_every=args.eval_every,
      patience=args.patience,
      log=log,
    )
    common.save_params(out / "base.pkl", params)
    cache.write_text(json.dumps({"config": base_cfg, "history": base_hist}))
  base, base_logits = common.evaluate(
    graphdef, params, evalset, args.depth, with_logits=True
  )
  base_time = timer()
  log(f"base ({eval_split}): {_line(base)} after {base_hist[-1]['step']} steps")
  overlay = {"base": base_logits[args.overlay_index].argmax(-1)}

  # ---- gradient analysis of the base model's predictions (binary closed forms)
  shares = None
  if args.classes == 2:
    shares = gradient_analysis.analyse(graphdef, params, val, args.depth, out)
    log("gradient shares:\n" + gradient_analysis.shares_table(shares))

  # ---- fine-tuning arms, paired seeds
  per_seed = {}
  for arm in arms:
    per_seed[arm.name] = []
    for k in range(args.seeds):
      p, _, _ = common.train(
        graphdef,
        params,
        train,
        arm.loss,
        steps=args.finetune_steps,
        lr=args.finetune_lr,
        seed=100 + k,
        batch_size=args.batch_size,
        patch=args.patch_size if arm.patches else crop,
      )
      m, logits = common.evaluate(
        graphdef, p, evalset, args.depth, with_logits=True
      )
      if k == 0:
        overlay[arm.name] = logits[args.overlay_index].argmax(-1)
      per_seed[arm.name].append({"seed": k, **m})
      log(f"{arm.name} seed {k}: {_line(m)}")

  total = timer()
  result = {
    "config": cfg,
    "arms": {
      a.name: {"loss": a.loss.name(), "patches": a.patches} for a in arms
    },
    "eval_split": eval_split,
    "base": {**base, "steps": base_hist[-1]["step"], "history": base_hist},
    "per_seed": per_seed,
    "gradient_shares": shares,
    "seconds": {"base": base_time, "total": total},
    "platform": {
      "python": platform.python_version(),
      "machine": platform.machine(),
    },
  }
  table = write_report(out, result)
  figures.overlays(
    out / "overlays.png",
    evalset.images[args.overlay_index],
    evalset.masks[args.overlay_index],
    overlay,
    f"{evalset.names[args.overlay_index]} ({eval_split}), seed 0",
  )
  (out / "log.txt").write_text("\n".join(log_lines) + "\n")
  log(f"done in {total / 60:.1f} min\n{table}")
  return result


if __name__ == "__main__":
  main()

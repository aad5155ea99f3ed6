"""Does PEL help on real nuclei? The study on the fetched sets, one command.

  python -m experiments.real_study --out runs/real --data-root data
  python -m experiments.real_study --out runs/real_quick --data-root data --quick

For each set in `--sets` (he-nuclei, he-types, fluo-nuclei) this fetches it
into DATA_ROOT/NAME (`examples.unet.fetch`: pip, pinned sha256; a second run
only verifies), runs `experiments.finetune_study` on it into OUT/NAME with
the settings in `REAL` (same protocol as the synthetic study: Dice + CE base
to the validation plateau, then every arm from that checkpoint with paired
seeds; metrics on the test split), and writes OUT/real_results.md: each
arm's paired Δ vs the Dice control with 95% intervals, pixel and object
metrics, per set, next to the committed synthetic run
(experiments/results/results.json). Flags after `--` go to every study run
(e.g. `-- --seeds 10 --finetune-steps 400`).
"""

from __future__ import annotations

import argparse
import json
import pathlib

from examples.unet import fetch as fetch_lib
from experiments import common
from experiments import finetune_study

SETS = tuple(fetch_lib.DATASETS)
# Real-data settings: the synthetic study's sizes (64-px training crops of
# the 256-px tiles / fluorescence images, the recipe's patches at half that)
# with 8 paired seeds; they keep the three sets within an hour on 2 cores.
# Patience 5 (750 steps): IoU on the few validation tiles moves by several
# points between evaluations, and with 3 the base stopped at a lucky peak.
REAL = [
  "--seeds",
  "8",
  "--image-size",
  "64",
  "--patch-size",
  "32",
  "--base-steps",
  "3000",
  "--eval-every",
  "150",
  "--patience",
  "5",
  "--finetune-steps",
  "200",
  "--width",
  "8",
  "--depth",
  "3",
  "--batch-size",
  "8",
]
SYNTHETIC = pathlib.Path(__file__).with_name("results") / "results.json"
ROWS = [a.name for a in finetune_study.ARMS if a.name != finetune_study.CONTROL]
PAIR = "pel_n3+ce_patch - dice+ce_patch"


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="runs/real")
  ap.add_argument(
    "--data-root", default="data", help="fetched sets live in DATA_ROOT/NAME"
  )
  ap.add_argument(
    "--sets",
    default=",".join(SETS),
    help="comma-separated subset of " + ", ".join(SETS),
  )
  ap.add_argument(
    "--quick",
    action="store_true",
    help="finetune_study's --quick settings (smoke test)",
  )
  ap.add_argument(
    "--wheel-dir", default=None, help="keep/reuse the downloaded wheels here"
  )
  ap.add_argument(
    "study_args",
    nargs="*",
    help="after --: extra finetune_study flags for every set",
  )
  args = ap.parse_args(argv)
  sets = args.sets.split(",")
  unknown = [s for s in sets if s not in SETS]
  if unknown:
    ap.error(f"unknown set(s) {unknown}; choose from {', '.join(SETS)}")
  args.sets = sets
  return args


def _cell(d: dict | None) -> str:
  if d is None:
    return "—"
  pts = lambda x: f"{100 * x:+.2f}"
  return f"{pts(d['mean'])} [{pts(d['lo'])}, {pts(d['hi'])}]"


def _delta(result: dict, arm: str, metric: str) -> dict | None:
  if arm == PAIR:
    return result.get("pairs", {}).get(PAIR, {}).get(metric)
  return result["summary"].get(arm, {}).get(metric, {}).get("delta")


def side_by_side(results: dict[str, dict], metric: str) -> str:
  """Markdown: arms (rows) x sets (columns), paired Δ`metric` vs control."""
  names = list(results)
  rows = [
    f"| Δ{finetune_study.LABELS[metric]} vs dice [95% CI] | "
    + " | ".join(names)
    + " |",
    "|---" * (len(names) + 1) + "|",
  ]
  for arm in ROWS + [PAIR]:
    rows.append(
      f"| {arm} | "
      + " | ".join(_cell(_delta(results[n], arm, metric)) for n in names)
      + " |"
    )
  seeds = ", ".join(
    f"{n}: {len(next(iter(r['per_seed'].values())))}"
    for n, r in results.items()
  )
  return "\n".join(rows) + f"\n\nPaired seeds per set: {seeds}.\n"


def report(results: dict[str, dict], synthetic: dict | None) -> str:
  both = (
    {"synthetic (committed run)": synthetic} if synthetic else {}
  ) | results
  parts = [
    "# PEL fine-tuning study: synthetic and real nuclei sets\n",
    "Points; Δ = paired difference to the `dice` control (same seeds,"
    " same batches), 95% t interval over seeds. Real sets: metrics on"
    " the test split (the base's plateau was read on val); synthetic:"
    " validation set. he-types: mean over the 3 nucleus types.\n",
    "## Pixel IoU\n",
    side_by_side(both, "iou"),
    "## Pixel Dice\n",
    side_by_side(both, "dice"),
    "## Boundary F1 (2 px)\n",
    side_by_side(both, "bf1"),
  ]
  with_objects = {
    n: r
    for n, r in results.items()
    if "aji" in finetune_study.metric_names(r["per_seed"])
  }
  if with_objects:
    parts += [
      "## Nucleus detection F1 (IoU ≥ 0.5)\n",
      side_by_side(with_objects, "object_f1"),
      "## AJI (aggregated Jaccard index)\n",
      side_by_side(with_objects, "aji"),
    ]
  base = [
    "| set | base steps | "
    + " | ".join(finetune_study.LABELS[m] for m in common.METRICS)
    + " | minutes |",
    "|---" * (len(common.METRICS) + 3) + "|",
  ]
  for n, r in both.items():
    base.append(
      f"| {n} | {r['base']['steps']} | "
      + " | ".join(
        f"{100 * r['base'][m]:.2f}" if m in r["base"] else "—"
        for m in common.METRICS
      )
      + f" | {r['seconds']['total'] / 60:.1f} |"
    )
  parts += [
    "## Base models (Dice + CE at the plateau)\n",
    "\n".join(base) + "\n",
  ]
  return "\n".join(parts)


def finished(run_dir: pathlib.Path, study_argv: list[str]) -> dict | None:
  """The set's results.json when it holds a finished run of these settings.

  A later run of the study reuses it (the per-set runs are deterministic),
  so an interrupted study resumes at the first unfinished set; a run with
  other settings is redone.
  """
  path = run_dir / "results.json"
  if not path.is_file():
    return None
  result = json.loads(path.read_text())
  cfg = finetune_study.run_config(finetune_study.parse_args(study_argv))
  return result if result.get("config") == json.loads(json.dumps(cfg)) else None


def main(argv=None, fetcher=fetch_lib.fetch):
  args = parse_args(argv)
  out, root = pathlib.Path(args.out), pathlib.Path(args.data_root)
  out.mkdir(parents=True, exist_ok=True)
  timer = common.Timer()
  results = {}
  for name in args.sets:
    fetcher(name, root / name, wheel_dir=args.wheel_dir)
    study_argv = (
      [
        "--out",
        str(out / name),
        "--data",
        str(root / name),
        "--classes",
        str(fetch_lib.DATASETS[name].classes),
      ]
      + (["--quick"] if args.quick else REAL)
      + args.study_args
    )
    done = finished(out / name, study_argv)
    if done is not None:
      print(f"== {name}: reused {out / name / 'results.json'}", flush=True)
      results[name] = done
      continue
    print(
      f"== {name}: python -m experiments.finetune_study "
      + " ".join(study_argv),
      flush=True,
    )
    results[name] = finetune_study.main(study_argv)
  synthetic = json.loads(SYNTHETIC.read_text()) if SYNTHETIC.is_file() else None
  text = report(results, synthetic)
  minutes = sum(r["seconds"]["total"] for r in results.values()) / 60
  text += (
    f"\nStudy time {minutes:.1f} min ({', '.join(args.sets)}: the sum of"
    f" the per-set runs); this invocation {timer() / 60:.1f} min.\n"
  )
  (out / "real_results.md").write_text(text)
  print(text)
  return results


if __name__ == "__main__":
  main()

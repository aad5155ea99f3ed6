"""Command line of the UNet example: `train` (the default), `predict`, `fetch`.

  python -m examples.unet.main [train] [--steps N --loss pel+ce --out DIR ...]
  python -m examples.unet.main predict --checkpoint DIR --input DIR --output DIR
  python -m examples.unet.main fetch {he-nuclei,he-types,fluo-nuclei} [--out DIR]
  (or `python examples/unet/main.py ...` from the repository root)

Each subcommand is one `COMMANDS` entry: a help line, a function adding its
flags to a parser, and a function running it; the work lives in the modules.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
import os
import pathlib
import signal
import sys
import typing
from typing import NamedTuple

if __package__ in (
  None,
  "",
):  # run as a script: make `examples.unet` importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
  __package__ = "examples.unet"  # pylint: disable=redefined-builtin

# XLA's C++ log lines would break the progress lines: its slow-operation
# alarm ("Constant folding an instruction is taking > 1s", a compile-time
# note) is logged at ERROR level, so only level 3 hides it. Errors that stop
# a run still raise in Python. Set before JAX loads; an explicit
# TF_CPP_MIN_LOG_LEVEL in the environment wins (0 shows everything).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from . import configs  # light: no JAX, so --help stays fast


class Command(NamedTuple):
  help: str
  add_arguments: Callable[[argparse.ArgumentParser], None]
  run: Callable[[argparse.Namespace], object]


# --------------------------------------------------------------------- train
def _add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    flag = "--" + f.name.replace("_", "-")
    kind = hints[f.name]
    if kind is bool:
      parser.add_argument(
        flag,
        action=argparse.BooleanOptionalAction,
        default=f.default,
        help=f.metadata["help"],
      )
    else:
      base = next(
        t for t in typing.get_args(kind) or (kind,) if t is not type(None)
      )
      parser.add_argument(
        flag, type=base, default=f.default, help=f.metadata["help"]
      )


def _env_int(name: str) -> int | None:
  return int(os.environ[name]) if name in os.environ else None


def _train_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--out",
    default="runs/unet",
    help="output directory: metrics.json, CSV, checkpoints, figures",
  )
  _add_config_flags(parser, configs.Config)
  g = parser.add_argument_group(
    "several hosts (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,"
    " JAX_PROCESS_ID; on SLURM/TPU/Kubernetes just pass --distributed)"
  )
  g.add_argument(
    "--distributed",
    action="store_true",
    help="call jax.distributed.initialize (auto-detects clusters)",
  )
  g.add_argument(
    "--coordinator-address", default=os.environ.get("JAX_COORDINATOR_ADDRESS")
  )
  g.add_argument(
    "--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES")
  )
  g.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"))


def init_distributed(args: argparse.Namespace) -> None:
  """Starts multi-host JAX before any computation, if asked to."""
  if not (args.distributed or args.coordinator_address):
    return
  import jax  # pylint: disable=import-outside-toplevel

  # CPU hosts need gloo for cross-process collectives; GPU/TPU ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=args.coordinator_address,
    num_processes=args.num_processes,
    process_id=args.process_id,
  )


def _train(args: argparse.Namespace) -> object:
  from . import train  # pylint: disable=import-outside-toplevel

  init_distributed(args)
  fields = {f.name for f in dataclasses.fields(configs.Config)}
  cfg = configs.Config(**{k: v for k, v in vars(args).items() if k in fields})
  return train.train_and_evaluate(cfg, args.out)


# ------------------------------------------------------------------- predict
def _predict_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--checkpoint",
    required=True,
    help="run directory or its checkpoints/ folder",
  )
  parser.add_argument(
    "--input", required=True, help="folder of PNG/TIFF images"
  )
  parser.add_argument(
    "--output",
    required=True,
    help="folder for the PNG masks (and overlays/ of them on the images)",
  )
  parser.add_argument(
    "--masks",
    default=None,
    help="folder of true masks (same file names): also write metrics.json",
  )


def _predict(args: argparse.Namespace) -> object:
  from . import predict  # pylint: disable=import-outside-toplevel

  return predict.predict_folder(
    args.checkpoint, args.input, args.output, masks_dir=args.masks
  )


# --------------------------------------------------------------------- fetch
def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
  from . import fetch  # pylint: disable=import-outside-toplevel

  parser.add_argument("name", choices=list(fetch.DATASETS))
  parser.add_argument(
    "--out", default=None, help="folder to create (default: data/NAME)"
  )
  parser.add_argument(
    "--tile", type=int, default=256, help="H&E tile size in pixels"
  )
  parser.add_argument(
    "--wheel-dir",
    default=None,
    help="keep the downloaded wheel here (reused next time)",
  )


def _fetch(args: argparse.Namespace) -> object:
  from . import fetch  # pylint: disable=import-outside-toplevel

  out = args.out or f"data/{args.name}"
  manifest = fetch.fetch(
    args.name, out, tile=args.tile, wheel_dir=args.wheel_dir
  )
  print(
    f"train: python -m examples.unet.main train --data {out}"
    f" --classes {manifest['config']['classes']} --out runs/{args.name}"
  )
  return manifest


COMMANDS: dict[str, Command] = {
  "train": Command(
    "train a UNet with PEL (pel_jax) on synthetic or folder"
    " data (the default command)",
    _train_arguments,
    _train,
  ),
  "predict": Command(
    "segment a folder of images with a trained run",
    _predict_arguments,
    _predict,
  ),
  "fetch": Command(
    "download a real nuclei data set (pip, pinned sha256)"
    " into DIR/{train,val,test}/{images,masks,instances}",
    _fetch_arguments,
    _fetch,
  ),
}
DEFAULT_COMMAND = "train"


def parser_for(name: str) -> argparse.ArgumentParser:
  others = ", ".join(f"'{n}'" for n in COMMANDS if n != name)
  parser = argparse.ArgumentParser(
    prog=f"main.py {name}",
    description=COMMANDS[name].help,
    epilog=f"other commands: {others} (main.py COMMAND --help)",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  COMMANDS[name].add_arguments(parser)
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs `main.py [COMMAND] [flags]`; returns the exit status."""
  argv = sys.argv[1:] if argv is None else list(argv)
  name = argv.pop(0) if argv[:1] and argv[0] in COMMANDS else DEFAULT_COMMAND
  args = parser_for(name).parse_args(argv)
  from . import checkpoint  # pylint: disable=import-outside-toplevel
  from . import data  # pylint: disable=import-outside-toplevel
  from . import fetch  # pylint: disable=import-outside-toplevel
  from . import train  # pylint: disable=import-outside-toplevel

  try:
    COMMANDS[name].run(args)
  except (
    data.DataError,
    checkpoint.CheckpointError,
    train.DivergenceError,
    fetch.FetchError,
    ValueError,
  ) as e:
    print(f"\nerror: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    saved = getattr(e, "checkpoint", None)
    print(
      f"stopped; saved {saved}, continue with --resume"
      if saved
      else "stopped before training started; nothing was saved",
      file=sys.stderr,
    )
    return 128 + getattr(e, "signum", signal.SIGINT)
  return 0


if __name__ == "__main__":
  sys.exit(main())

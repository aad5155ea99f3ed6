"""Command line for the UNet example; the work is in train.py and predict.

  python -m examples.unet.main [train] [--steps N --loss pel+ce --out DIR ...]
  python -m examples.unet.main predict --checkpoint DIR --input DIR --output DIR
  python -m examples.unet.main fetch {he-nuclei,he-types,fluo-nuclei} --out DIR
  (or `python examples/unet/main.py ...` from the repository root)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import signal
import sys
import typing

if __package__ in (None, ""):  # run as a script: make `examples.unet` importable
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
  __package__ = "examples.unet"  # pylint: disable=redefined-builtin


def _add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
  hints = typing.get_type_hints(config_cls)
  for f in dataclasses.fields(config_cls):
    flag = "--" + f.name.replace("_", "-")
    kind = hints[f.name]
    if kind is bool:
      parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                          default=f.default, help=f.metadata["help"])
    else:
      base = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
      parser.add_argument(flag, type=base, default=f.default,
                          help=f.metadata["help"])


def _distributed_flags(parser: argparse.ArgumentParser) -> None:
  g = parser.add_argument_group(
      "several hosts (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,"
      " JAX_PROCESS_ID; on SLURM/TPU/Kubernetes just pass --distributed)")
  g.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize (auto-detects clusters)")
  g.add_argument("--coordinator-address", default=os.environ.get("JAX_COORDINATOR_ADDRESS"))
  g.add_argument("--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES"))
  g.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"))


def _env_int(name: str) -> int | None:
  return int(os.environ[name]) if name in os.environ else None


def init_distributed(args) -> None:
  """Starts multi-host JAX before any computation, if asked to."""
  if not (args.distributed or args.coordinator_address):
    return
  import jax  # pylint: disable=import-outside-toplevel
  # CPU hosts need gloo for cross-process collectives; GPU/TPU ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=args.coordinator_address,
                             num_processes=args.num_processes,
                             process_id=args.process_id)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["fetch"]:
    from . import fetch  # pylint: disable=import-outside-toplevel
    return fetch.main(argv[1:])
  from . import checkpoint, data, predict, train  # pylint: disable=import-outside-toplevel

  if argv[:1] == ["predict"]:
    parser = argparse.ArgumentParser(prog="main.py predict",
                                     description="Segment a folder of images.")
    parser.add_argument("--checkpoint", required=True,
                        help="run directory or its checkpoints/ folder")
    parser.add_argument("--input", required=True, help="folder of PNG/TIFF images")
    parser.add_argument("--output", required=True, help="folder for the PNG masks")
    args = parser.parse_args(argv[1:])
    run = lambda: predict.predict_folder(args.checkpoint, args.input, args.output)
  else:
    parser = argparse.ArgumentParser(
        prog="main.py [train]",
        description="Train a UNet with PEL (pel_jax) on synthetic or folder data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="runs/unet",
                        help="output directory: metrics.json, CSV, checkpoints, figures")
    _add_config_flags(parser, train.Config)
    _distributed_flags(parser)
    args = parser.parse_args(argv[1:] if argv[:1] == ["train"] else argv)
    init_distributed(args)
    fields = {f.name for f in dataclasses.fields(train.Config)}
    cfg = train.Config(**{k: v for k, v in vars(args).items() if k in fields})
    run = lambda: train.train_and_evaluate(cfg, args.out)
  try:
    run()
  except (data.DataError, checkpoint.CheckpointError, train.Diverged,
          ValueError) as e:
    print(f"\nerror: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    saved = getattr(e, "checkpoint", None)
    print(f"stopped; saved {saved}, continue with --resume" if saved else
          "stopped before training started; nothing was saved", file=sys.stderr)
    return 128 + getattr(e, "signum", signal.SIGINT)
  return 0


if __name__ == "__main__":
  sys.exit(main())

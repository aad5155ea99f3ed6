"""The run configuration: one dataclass whose fields are the `train` flags."""

from __future__ import annotations

import dataclasses


def _opt(default, help_):  # a config field with its --help text
  return dataclasses.field(default=default, metadata={"help": help_})


@dataclasses.dataclass
class Config:
  """Every command-line flag of `main.py train` (`--image-size` etc.)."""

  # data
  data: str | None = _opt(
    None, "folder with images/ and masks/; unset: the built-in synthetic set"
  )
  val_data: str | None = _opt(
    None, "separate validation folder; unset: a deterministic split of --data"
  )
  classes: int = _opt(
    2,
    "number of classes incl. background (synthetic: 2 = binary, 3 = blobs + curves)",
  )
  binary: bool = _opt(
    False, "collapse mask values > 0 (e.g. instance labels) to foreground 1"
  )
  image_size: int = _opt(64, "synthetic image size")
  num_train: int = _opt(256, "synthetic training images")
  num_val: int = _opt(32, "synthetic validation images")
  val_fraction: float = _opt(
    0.1, "validation fraction of --data without --val-data"
  )
  patch_size: int | None = _opt(
    None,
    "training crop size; unset: the synthetic image size, or 128 capped by the smallest image",
  )
  # model
  width: int = _opt(8, "channels of the first UNet level (doubles per level)")
  depth: int = _opt(3, "number of poolings")
  norm: str = _opt("group", "group | layer | batch | none")
  upsample: str = _opt(
    "resize",
    "decoder upsampling: resize (nearest x2 + 3x3 conv) | transpose (stride-2 transposed conv, before 0.3.0: striped masks)",
  )
  bf16: bool = _opt(False, "mixed precision: bf16 compute, f32 params and loss")
  fused_head: bool = _opt(
    False,
    "training loss by pel_jax.head_loss: the last 1x1 conv fused into the loss, the [B, H, W, classes] logits never built (same params and loss as without)",
  )
  # optimisation
  steps: int = _opt(300, "training steps")
  batch_size: int = _opt(8, "global batch size (divisible by the device count)")
  accumulate: int = _opt(
    1,
    "micro-batches per step: the global batch in K parts, exact batch-PEL/CE gradient (K divides the per-device batch)",
  )
  lr: float = _opt(
    3e-3, "peak learning rate (AdamW, linear warmup + cosine decay)"
  )
  warmup: int = _opt(50, "warmup steps")
  weight_decay: float = _opt(1e-4, "AdamW weight decay")
  clip: float = _opt(1.0, "gradient clipping by global norm")
  loss: str = _opt(
    "pel+ce",
    "sum of weighted terms among dice, jaccard, tversky, pel, ce, boundary, e.g. 'pel+ce', '0.5*dice+ce', 'dice+boundary'",
  )
  boundary_ramp: int | None = _opt(
    None,
    "steps over which the boundary term's weight grows linearly from 0.01 to 1 times its --loss weight (Kervadec et al. 2019: 0.01, +0.01 per epoch); unset: the whole run (--steps); 0: no ramp",
  )
  exponent: float = _opt(3.0, "PEL exponent n")
  scale: float = _opt(10.0, "PEL scale")
  fp_weight: float | None = _opt(
    None, "FP weight of pel/tversky; unset: 0.5 for pel, 0.3 for tversky"
  )
  fn_weight: float | None = _opt(
    None, "FN weight of pel/tversky; unset: 0.5 for pel, 0.7 for tversky"
  )
  batch_dice: bool = _opt(
    True, "region losses sum over the whole (global) batch, as the PEL authors"
  )
  # run
  seed: int = _opt(0, "seed of data, initialisation and augmentation")
  ckpt_every: int = _opt(100, "checkpoint every N steps (and at the end)")
  eval_every: int = _opt(0, "validate every N steps (0: only at the end)")
  log_every: int = _opt(10, "progress and CSV row every N steps")
  resume: bool = _opt(False, "continue from the latest checkpoint in --out")
  force: bool = _opt(
    False,
    "with --resume: continue although --lr, --steps, --warmup, --batch-size or --seed differ from the run's (they set its schedule and data order)",
  )
  overwrite: bool = _opt(
    False,
    "start afresh in a non-empty --out: its old contents move to <out>.previous-<k>",
  )
  init_from: str | None = _opt(
    None, "initialise the model from this checkpoint (phase-2 fine-tuning)"
  )
  figures: int = _opt(4, "validation examples to draw in figures/")
  surface_tolerance: float = _opt(
    2.0, "tolerance in pixels of the validation surface Dice"
  )


def get_config(**overrides) -> Config:
  return Config(**overrides)

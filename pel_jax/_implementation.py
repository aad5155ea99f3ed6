"""Which kernels compute the region sums: the XLA core or the Pallas kernels.

`implementation="xla"` (the default) is `pel_jax._core.region_sums`, with
each platform's XLA layout. `implementation="pallas"` is
`pel_jax._pallas.region_sums`: Mosaic kernels lowered for TPU, Triton kernels
for CUDA and ROCm, and on any other platform (the CPU) the TPU kernels in
Pallas's interpret mode, exact and slow: meant for tests, not for speed.
The Pallas kernels have been compiled for TPU and H100 without a device,
never run or timed there (benchmarks/README.md), so nothing defaults to them.

They compute the four sums `(TP, sum p, sum g, N)` of one device: every
option that reads only those (probabilities, sigmoid or softmax logits,
integer ids or float targets, `where`, `ignore_index`, `batch`, the ratio's
options, the generalized, focal, log, micro and absent-class forms) works;
the options that need other sums, or sums across devices, raise.
"""

from __future__ import annotations

from pel_jax import _core
from pel_jax import _pallas

IMPLEMENTATIONS = ("xla", "pallas")

# `StatsConfig` field -> the `pel_loss` option that sets it, for the sums
# the Pallas kernels lack.
_NOT_IN_PALLAS = (
  ("squared", "`squared=True`"),
  ("soft_labels", "`soft_labels=True` (with float targets)"),
  ("cross_entropy", "`ce_weight > 0`"),
  ("axis_name", "`axis_name`"),
)


def check_implementation(implementation) -> str:
  """`implementation`, if it names one; else a ValueError."""
  if not isinstance(implementation, str) or (
    implementation not in IMPLEMENTATIONS
  ):
    raise ValueError(
      f"`implementation` must be one of {IMPLEMENTATIONS}, got"
      f" {implementation!r}."
    )
  return implementation


def region_sums(implementation: str, cfg, predictions, targets, mask):
  """`_core.region_sums` or, for "pallas", `_pallas.region_sums`.

  Raises ValueError, at trace time, naming the first option of `cfg` that
  the Pallas kernels do not compute.
  """
  if check_implementation(implementation) == "xla":
    return _core.region_sums(cfg, predictions, targets, mask)
  for field, option in _NOT_IN_PALLAS:
    if getattr(cfg, field):
      raise ValueError(
        f"`implementation='pallas'` does not support {option}: the Pallas"
        " kernels compute the sums TP, sum p, sum g and N on one device"
        " only. Use `implementation='xla'` (the default) for this option."
      )
  return _pallas.region_sums(cfg, predictions, targets, mask)

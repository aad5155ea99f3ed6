"""What the peer-value generators share: one peer run and the JSON file.

Imported by the `make_*_values.py` scripts beside it, which run in the
peers' virtual environment (torch), never in the test suite.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch


def case(name, peer, settings, fn, x, target, mask=None) -> dict:
  """`fn(x, target[, mask])` on `x` rounded to float32, run in float64:
  the inputs, the value and its gradient with respect to `x`."""
  x = np.asarray(x, np.float32).astype(np.float64)
  xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
  args = (xt, torch.as_tensor(target))
  if mask is not None:
    args += (torch.as_tensor(mask),)
  value = fn(*args)
  value.backward()
  record = {
    "name": name,
    "peer": peer,
    "settings": settings,
    "inputs": x.tolist(),
    "targets": np.asarray(target).tolist(),
    "value": value.item(),
    "grad": xt.grad.numpy().tolist(),
  }
  if mask is not None:
    record["mask"] = np.asarray(mask).tolist()
  return record


def write(out: pathlib.Path, versions: dict, modules, cases: list) -> None:
  """Refuses peer `modules` whose versions differ from `versions` (by
  module name), then writes the versions (and torch's) and the cases."""
  for module in modules:
    want = versions[module.__name__]
    if module.__version__ != want:
      raise SystemExit(f"{module.__name__} {module.__version__} != {want}")
  record = {
    "versions": {"torch": torch.__version__, **versions},
    "cases": cases,
  }
  out.write_text(json.dumps(record) + "\n")
  print(f"wrote {len(cases)} cases to {out}")

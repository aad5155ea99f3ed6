"""Compiled (not timed) value+grad of pel_jax for TPU and GPU targets.

XLA compiles each program for a TPU or an NVIDIA GPU on a machine with
neither ("deviceless" ahead-of-time compilation) and reports, per program,
the bytes accessed of its cost analysis, the temporaries of its buffer
assignment and its kernels (the top-level instructions of the optimised
HLO). Nothing runs: the time column is an estimate, bytes accessed over the
target's peak HBM bandwidth. Every ratio is to the `a * a` floor compiled
for the same target and shape in the same process.

The platform compilers are version-pinned to jax and live in separate
environments (the TPU and CUDA plugins do not share one), so one process
compiles one family and `--write-results` merges its rows into the
committed results (replacing those of the targets it compiled):

    python3 -m venv /tmp/venv-tpu
    /tmp/venv-tpu/bin/pip install -e ".[compiled-tpu]" "jax==<the checkout's>"
    /tmp/venv-tpu/bin/python benchmarks/bench_compiled.py --target tpu \
      --write-results
    # GPU: ".[compiled-gpu]" in another venv, then --target gpu

jax's own `tpu` and `cuda12` extras pin libtpu and the CUDA plugin to the
jax they install. `--target all` compiles every target whose plugin is
installed and says which it skipped; `--breakdown` prints each program's
kernels with their estimated bytes, so that a regression can be traced to
the fusion that caused it.
"""

from __future__ import annotations

import os

# No TPU metadata server and no CUDA device here: the plugins only compile.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# pylint: disable=wrong-import-position
import argparse
from collections.abc import Callable
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys

import jax
from jax.experimental import topologies
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np
import optax

import pel_jax

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import bench_loss  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Target:
  label: str
  family: str  # "tpu" or "gpu"
  topology: str  # TPU topology name, or the GPU's target config
  hbm_gb_s: float  # peak HBM bandwidth (datasheet), for the estimate only


# GPU target configs: XLA's xla/tools/hlo_opt/gpu_specs/{h100_sxm,a100}
# .txtpb (Apache-2.0), with the cuDNN and CUDA versions of the pip wheels
# (9.28, 12.9). Fusion decisions read the device fields; no autotuning runs.
_GPU_COMMON = """  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  threads_per_core_limit: 2048
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
"""
_GPU_TAIL = """}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 28 }
runtime_version { major: 12 minor: 9 patch: 0 }
"""
_H100 = (
  "gpu_device_info {\n"
  + _GPU_COMMON
  + """  shared_memory_per_core: 233472
  core_count: 132
  fpus_per_core: 128
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84929347584
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
"""
  + _GPU_TAIL
  + 'device_description_str: "NVIDIA H100 80GB HBM3"\n'
)
_A100 = (
  "gpu_device_info {\n"
  + _GPU_COMMON
  + """  shared_memory_per_core: 65536
  core_count: 56
  fpus_per_core: 64
  memory_bandwidth: 732160000000
  l2_cache_size: 4194304
  clock_rate_ghz: 1.4805
  device_memory_size: 79050250240
  cuda_compute_capability { major: 8 minor: 0 }
"""
  + _GPU_TAIL
  + 'device_description_str: "sm_8.0 (XLA gpu_specs/a100.txtpb)"\n'
)

TARGETS = {
  "tpu-v5e": Target("TPU v5e", "tpu", "v5e:2x2", 819.0),
  "tpu-v6e": Target("TPU v6e", "tpu", "v6e:2x2", 1640.0),
  "tpu-v5p": Target("TPU v5p", "tpu", "v5p:2x2x1", 2765.0),
  "h100": Target("H100 SXM", "gpu", _H100, 3352.0),
  # XLA's config says 732 GB/s; the A100 80GB SXM datasheet says 2039.
  "a100": Target("A100 SXM", "gpu", _A100, 2039.0),
}
FAMILIES = {"tpu": "libtpu", "gpu": "jax_cuda12_plugin"}


def missing(family: str) -> str | None:
  """Why `family`'s compiler is not here, or None when it is."""
  module = FAMILIES[family]
  if importlib.util.find_spec(module) is None:
    extra = "tpu" if family == "tpu" else "cuda12"
    return f"{module} is not installed (pip install 'jax[{extra}]')"
  return None


def device_sharding(target: Target) -> NamedSharding:
  """A one-device sharding on the target: what the compile is for."""
  if target.family == "tpu":
    topo = topologies.get_topology_desc(
      topology_name=target.topology, platform="tpu"
    )
  else:
    topo = topologies.get_topology_desc(
      platform="cuda", target_config=target.topology, topology="1x1x1"
    )
  mesh = Mesh(np.array(topo.devices[:1]), ("d",))
  return NamedSharding(mesh, PartitionSpec())


# ------------------------------------------------------------------- cases

CLASSES = (1, 2, 4, 8, 16, 21, 32, 64, 128)
# The loss: exponent 3, scale and both weights 0.5.
OPTIONS = dict(exponent=3.0, scale=0.5, fp_weight=0.5, fn_weight=0.5)


@dataclasses.dataclass(frozen=True)
class Case:
  classes: int
  dims: int = 2
  dtype: str = "float32"
  targets: str = "ids"  # "ids" (integer class ids) or "soft" (float)

  @property
  def shape(self) -> tuple[int, ...]:
    """At least 2^26 logits (128 MiB in bfloat16): past TPU VMEM."""
    if self.dims == 3:
      return (8, 128, 128, 128, self.classes)
    wide = 1 << max(self.classes - 1, 0).bit_length()
    return (max(16, 512 // wide), 512, 512, self.classes)

  @property
  def name(self) -> str:
    dtype = "bf16" if self.dtype == "bfloat16" else "f32"
    return f"{self.classes}-class {self.dims}D {dtype} {self.targets}"


def cases(classes=CLASSES, dtypes=("float32", "bfloat16"), targets=None):
  kinds = targets or ("ids", "soft")
  out = [Case(c, 2, d, t) for c in classes for d in dtypes for t in kinds]
  if 8 in classes:
    out += [Case(8, 3, d, t) for d in dtypes for t in kinds]
  return out


FLOOR = "a * a"
PEL = "pel_jax"
PLAIN = "plain autodiff"
OPTAX = "optax dice_loss"


def _onehot(case: Case, t):
  return jax.nn.one_hot(t, case.classes) if case.targets == "ids" else t


def variants(case: Case) -> dict[str, Callable]:
  """name -> value+grad (in the predictions) of each loss of the case.

  optax's Dice (n = 1, scale 1) is the nearest library loss, not the same
  formula; it sums in the input dtype, and takes one-hot targets.
  """
  losses = {
    PEL: lambda x, t: pel_jax.pel_loss(x, t, from_logits=True, **OPTIONS),
    PLAIN: lambda x, t: bench_loss.plain_pel(
      x, _onehot(case, t), logits=True, **OPTIONS
    ),
    OPTAX: lambda x, t: jnp.mean(
      optax.losses.dice_loss(x, _onehot(case, t).astype(x.dtype))
    ),
  }
  return {k: jax.value_and_grad(f) for k, f in losses.items()}


def arguments(case: Case, sharding) -> tuple:
  x = jax.ShapeDtypeStruct(case.shape, jnp.dtype(case.dtype), sharding=sharding)
  if case.targets == "ids":
    t = jax.ShapeDtypeStruct(case.shape[:-1], jnp.int32, sharding=sharding)
  else:
    t = x
  return x, t


# ----------------------------------------------------------------- measure

_DTYPE_BYTES = {
  name: size
  for size, names in (
    (1, "pred s8 u8"),
    (2, "bf16 f16 s16 u16"),
    (4, "f32 s32 u32"),
    (8, "f64 s64 u64"),
  )
  for name in names.split()
}
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\](\{[^}]*\})?")
# Views and constants are no kernels (bench_loss counts arrays the same way).
_NOT_KERNELS = (*bench_loss._VIEWS, "constant")


def _arrays(text: str) -> list[tuple[str, int, bool]]:
  """(dims, bytes, in VMEM) of each array type written in `text`."""
  out = []
  for dtype, dims, layout in _ARRAY.findall(text):
    if dtype not in _DTYPE_BYTES:
      continue
    size = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    # On TPU, memory space S(1) is VMEM: no HBM traffic.
    out.append((dims, size * _DTYPE_BYTES[dtype], "S(1)" in (layout or "")))
  return out


@dataclasses.dataclass
class Kernel:
  name: str
  opcode: str
  result: str
  hbm_bytes: int  # operands + results outside VMEM (an estimate)
  full_size: int  # results with the predictions' dims
  ops: str  # the fused computation's opcodes, most frequent first


def _fused_opcodes(text: str, computation: str) -> str:
  start = text.find(f"\n%{computation} ")
  if start < 0:
    start = text.find(f"\n{computation} ")
  body = text[start : text.find("\n}", start)] if start >= 0 else ""
  counts: dict[str, int] = {}
  for op in re.findall(r"= \S+ ([\w-]+)\(", body):
    if op not in _NOT_KERNELS:
      counts[op] = counts.get(op, 0) + 1
  ranked = sorted(counts.items(), key=lambda kv: -kv[1])
  return " ".join(f"{op}x{n}" if n > 1 else op for op, n in ranked[:6])


def kernels(text: str, shape: tuple[int, ...]) -> list[Kernel]:
  """The kernels of an optimised HLO module (its ENTRY's real instructions).

  Bytes are each kernel's operands plus results (HBM only on TPU), the
  way XLA's cost analysis counts a fusion that reads each operand whole.
  """
  entry = text[text.find("\nENTRY ") :].split("\n}", 1)[0]
  full = ",".join(map(str, shape))
  sizes: dict[str, int] = {}
  out = []
  for line in entry.splitlines()[1:]:
    lhs, _, rhs = line.strip().partition(" = ")
    parsed = re.match(r"(\(.*?\)|\S+) ([\w-]+)\((.*?)\)", rhs)
    if parsed is None:
      continue
    result, opcode, operands = parsed.groups()
    name = lhs.removeprefix("ROOT ").lstrip("%")
    arrays = _arrays(result)
    sizes[name] = sum(b for _, b, vmem in arrays if not vmem)
    if opcode in _NOT_KERNELS or opcode.endswith("-done"):
      continue
    names = re.findall(r"%([\w.-]+)", operands)
    called = re.search(r"calls=%?([\w.-]+)", rhs)
    out.append(
      Kernel(
        name,
        opcode,
        result if len(result) < 60 else result[:57] + "...",
        sizes[name] + sum(sizes.get(n, 0) for n in names),
        sum(d == full for d, _, _ in arrays),
        _fused_opcodes(text, called.group(1)) if called else "",
      )
    )
  return out


def compile_one(fn: Callable, args: tuple, family: str):
  """(bytes accessed, flops, temp bytes, HLO text) of `jit(fn)` compiled."""
  compiled = jax.jit(fn).trace(*args).lower().compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  module = compiled.runtime_executable().hlo_modules()[0]
  if cost is None:  # a compile-only GPU executable: XLA's generic analysis
    # pylint: disable-next=import-outside-toplevel
    from jax._src import xla_bridge
    from jax._src.lib import _jax

    cost = _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module)
  temp = compiled.memory_analysis().temp_size_in_bytes
  text = compiled.as_text() if family == "tpu" else module.to_string()
  return float(cost["bytes accessed"]), float(cost["flops"]), temp, text


def measure(key: str, target: Target, case: Case, breakdown=False) -> list:
  """Rows of one case on one target: each variant and the floor."""
  sharding = device_sharding(target)
  x, t = arguments(case, sharding)
  input_bytes = x.size * x.dtype.itemsize
  fns = {FLOOR: (lambda a: a * a, (x,))}
  fns.update({k: (f, (x, t)) for k, f in variants(case).items()})
  rows = []
  for name, (fn, args) in fns.items():
    nbytes, flops, temp, text = compile_one(fn, args, target.family)
    found = kernels(text, case.shape)
    rows.append(
      dict(
        target=key,
        device=target.label,
        case=case.name,
        classes=case.classes,
        dims=case.dims,
        dtype=case.dtype,
        targets=case.targets,
        shape=list(case.shape),
        variant=name,
        bytes=nbytes,
        flops=flops,
        temp_bytes=temp,
        input_bytes=input_bytes,
        temp_over_input=temp / input_bytes,
        kernels=len(found),
        full_size_results=sum(k.full_size for k in found),
        est_us=nbytes / (target.hbm_gb_s * 1e3),
      )
    )
    if breakdown and name != FLOOR:
      print(f"\n{target.label} | {case.name} {case.shape} | {name}")
      print(breakdown_table(found, nbytes, input_bytes))
  floor = rows[0]["bytes"]
  for r in rows:
    r["over_floor"] = r["bytes"] / floor
  return rows


def breakdown_table(found: list[Kernel], total: float, input_bytes) -> str:
  lines = [
    "| kernel | op | result | est. bytes ÷ input | fused ops |",
    "|---|---|---|---:|---|",
  ]
  for k in found:
    lines.append(
      f"| {k.name} | {k.opcode} | `{k.result}` "
      f"| {k.hbm_bytes / input_bytes:.2f} | {k.ops} |"
    )
  est = sum(k.hbm_bytes for k in found)
  lines.append(
    f"| sum (estimate) | | | {est / input_bytes:.2f} | cost analysis: "
    f"{total / input_bytes:.2f} |"
  )
  return "\n".join(lines)


# ----------------------------------------------------------------- results


def versions() -> dict:
  out = {}
  for dist in ("jax", "jaxlib", "libtpu", "jax-cuda12-plugin", "optax"):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      out[dist] = importlib.metadata.version(dist)
  return out


def checkout() -> str:
  """The commit of the compiled pel_jax (`+` with uncommitted changes)."""
  git = ["git", "-C", os.path.dirname(os.path.dirname(pel_jax.__file__))]
  try:
    head = subprocess.run(
      git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
      git + ["status", "--porcelain", "pel_jax"], capture_output=True, text=True
    ).stdout.strip()
  except OSError:
    return "unknown"
  return (head or "unknown") + ("+" if dirty else "")


def _by(rows, **where):
  return [r for r in rows if all(r[k] == v for k, v in where.items())]


def _per_case(rows) -> dict[str, dict[str, dict]]:
  """case name -> variant -> row, in the order measured."""
  names = dict.fromkeys(r["case"] for r in rows)
  return {n: {r["variant"]: r for r in _by(rows, case=n)} for n in names}


def _summary(results: dict) -> list[str]:
  out = [
    "| target | pel_jax ÷ a*a: median (max) | plain | optax "
    "| cases pel > plain | cases pel > optax | worst pel ÷ plain |",
    "|---|---|---|---|---|---|---|",
  ]
  for block in results.values():
    cases = _per_case(block["rows"]).items()
    over = lambda k: [v[k]["over_floor"] for _, v in cases]
    ratio = {n: v[PEL]["bytes"] / v[PLAIN]["bytes"] for n, v in cases}
    more = lambda k: sum(v[PEL]["bytes"] > v[k]["bytes"] for _, v in cases)
    worst = max(ratio, key=ratio.get)
    cell = lambda k: f"{np.median(over(k)):.2f} ({max(over(k)):.2f})"
    out.append(
      f"| {block['meta']['device']} | {cell(PEL)} | {cell(PLAIN)} "
      f"| {cell(OPTAX)} | {more(PLAIN)} of {len(ratio)} "
      f"| {more(OPTAX)} of {len(ratio)} | {ratio[worst]:.2f} ({worst}) |"
    )
  return out


def markdown(results: dict) -> str:
  """A summary, then one table per target: bytes over the `a * a` floor."""
  out = [
    "# Compiled value+grad: bytes accessed, temporaries, kernels",
    "",
    "Generated by `benchmarks/bench_compiled.py --write-results`: programs "
    "compiled for each target without the device (nothing was timed). "
    "Loss: `pel_loss(x, t, from_logits=True, exponent=3, scale=0.5, "
    "fp_weight=0.5, fn_weight=0.5)`; plain = autodiff of the same formula "
    "(softmax/sigmoid, one_hot); optax = `optax.losses.dice_loss` (Dice, "
    "n = 1). Columns: bytes accessed (XLA cost analysis) ÷ those of `a * a` "
    "on the same array; temporaries ÷ the logits' bytes; kernels; est. µs "
    "= bytes ÷ peak HBM bandwidth (an estimate, not a measurement).",
    "",
    *_summary(results),
  ]
  for block in results.values():
    meta = block["meta"]
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    out += [
      "",
      f"## {meta['device']} ({meta['hbm_gb_s']:.0f} GB/s; pel_jax "
      f"{meta.get('pel_jax', 'unknown')}; {vers}; {meta['date']})",
      "",
      "| case | shape | pel_jax ÷ a*a | plain ÷ a*a | optax ÷ a*a "
      "| pel ÷ plain | pel ÷ optax | temp ÷ input pel / plain / optax "
      "| kernels pel / plain / optax | est. µs pel / plain / a*a |",
      "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name, v in _per_case(block["rows"]).items():
      pel, plain, opt, floor = v[PEL], v[PLAIN], v[OPTAX], v[FLOOR]
      out.append(
        f"| {name} | {'x'.join(map(str, pel['shape']))} "
        f"| {pel['over_floor']:.2f} | {plain['over_floor']:.2f} "
        f"| {opt['over_floor']:.2f} | {pel['bytes'] / plain['bytes']:.2f} "
        f"| {pel['bytes'] / opt['bytes']:.2f} "
        f"| {pel['temp_over_input']:.1f} / {plain['temp_over_input']:.1f} / "
        f"{opt['temp_over_input']:.1f} "
        f"| {pel['kernels']} / {plain['kernels']} / {opt['kernels']} "
        f"| {pel['est_us']:.0f} / {plain['est_us']:.0f} / "
        f"{floor['est_us']:.0f} |"
      )
  return "\n".join(out) + "\n"


def merge_results(path: str, new: dict, order=None) -> dict:
  """The committed results with `new`'s keys replaced (others kept).

  Keys come out in `order` (default: `TARGETS`'), unknown ones dropped.
  """
  old = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
  merged = {**old, **new}
  return {
    k: merged[k] for k in (TARGETS if order is None else order) if k in merged
  }


def _write_markdown(results: dict) -> None:
  with open(os.path.join(_HERE, "results_compiled.md"), "w") as f:
    f.write(markdown(results))


def _selected(target: str) -> list[str]:
  if target in ("all", "tpu", "gpu"):
    return [k for k, t in TARGETS.items() if target in ("all", t.family)]
  return [target]


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--target", default="all", choices=[*TARGETS, "tpu", "gpu", "all"]
  )
  parser.add_argument(
    "--classes", default="all", help="comma-separated, or all"
  )
  parser.add_argument(
    "--dtype", default="all", choices=["float32", "bfloat16", "all"]
  )
  parser.add_argument(
    "--targets", default="all", choices=["ids", "soft", "all"]
  )
  parser.add_argument(
    "--breakdown", action="store_true", help="print each program's kernels"
  )
  parser.add_argument(
    "--write-results",
    action="store_true",
    help="merge into results_compiled.json and rewrite results_compiled.md",
  )
  parser.add_argument(
    "--rewrite-markdown",
    action="store_true",
    help="only rewrite results_compiled.md from results_compiled.json",
  )
  args = parser.parse_args(argv)
  json_path = os.path.join(_HERE, "results_compiled.json")
  if args.rewrite_markdown:
    _write_markdown(merge_results(json_path, {}))
    return {}
  classes = (
    CLASSES
    if args.classes == "all"
    else tuple(int(c) for c in args.classes.split(","))
  )
  dtypes = ("float32", "bfloat16") if args.dtype == "all" else (args.dtype,)
  kinds = None if args.targets == "all" else (args.targets,)
  results = {}
  for key in _selected(args.target):
    target = TARGETS[key]
    why = missing(target.family)
    if why:
      print(f"skipped {key}: {why}", flush=True)
      continue
    rows = []
    for case in cases(classes, dtypes, kinds):
      rows += measure(key, target, case, args.breakdown)
      pel = _by(rows, case=case.name, variant=PEL)[0]
      plain = _by(rows, case=case.name, variant=PLAIN)[0]
      print(
        f"{key} {case.name}: pel {pel['over_floor']:.2f}, plain "
        f"{plain['over_floor']:.2f} x a*a",
        flush=True,
      )
    meta = dict(
      device=target.label,
      hbm_gb_s=target.hbm_gb_s,
      versions=versions(),
      pel_jax=checkout(),
      date=datetime.date.today().isoformat(),
      command="python benchmarks/bench_compiled.py "
      + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    results[key] = dict(meta=meta, rows=rows)
  if not results:
    print("nothing compiled: no platform plugin is installed")
  if args.write_results and results:
    merged = merge_results(json_path, results)
    with open(json_path, "w") as f:
      json.dump(merged, f, indent=1)
      f.write("\n")
    _write_markdown(merged)
  elif results:
    print(markdown(results))
  return results


if __name__ == "__main__":
  main()

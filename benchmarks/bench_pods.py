"""The UNet example's train step compiled for pods: memory and collectives.

XLA compiles `examples/unet/steps.train_step` (the example's default loss,
`pel+ce` with batch PEL) for a 256-chip TPU v5e pod (`v5e:16x16`) and for one
host of 8 H100s, without a device ("deviceless" compilation, see
`bench_compiled.py`), in two layouts of the same global batch:

- `data`: a `('data',)` mesh of every device, the batch split on it;
- `data+space`: a `('data', 'space')` mesh, the batch split on 'data' and the
  image height on 'space' (spatial partitioning).

Parameters and optimizer state are replicated, as `steps.DataParallel` lays
them out. For each program it reports the per-device memory of XLA's buffer
assignment and every collective of the optimised HLO, sorted into the
gradient's all-reduce (parameter-shaped), the loss's `[G, C]` region sums,
scalars (loss terms, |grad|), the convolutions' halo exchanges
(collective-permute) and the rest, flagging any collective of at least a
per-device image's pixel count (full-size). It also compiles the loss alone
(value+grad of `pel_loss` on sharded `[B, H, W, C]` logits): its only
collectives should be `[G, C]` sums.

    python3 -m venv /work/venv-tpu
    /work/venv-tpu/bin/pip install -e ".[compiled-tpu,examples]" "jax==<the checkout's>"
    /work/venv-tpu/bin/python benchmarks/bench_pods.py --pod tpu --write-results
    # GPU: ".[compiled-gpu,examples]" in another venv, then --pod gpu

`--write-results` merges the pods it compiled into results_pods.json and
rewrites results_pods.md. `--pod cpu` compiles for this machine's devices
(the tests' 8 simulated CPUs), with no plugin.
"""

from __future__ import annotations

import os
import sys

# No TPU metadata server and no CUDA device here: the plugins only compile.
# libtpu locks /tmp/libtpu_lockfile for one process; compiling needs no
# exclusive chip, so let other compile-only processes run beside this one.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
# pylint: disable=wrong-import-position
import argparse  # noqa: E402
from collections import Counter  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import bench_compiled as bc  # noqa: E402
from flax import nnx  # noqa: E402
import jax  # noqa: E402
from jax.experimental import topologies  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
import numpy as np  # noqa: E402

from examples.unet import configs  # noqa: E402
from examples.unet import losses  # noqa: E402
from examples.unet import models  # noqa: E402
from examples.unet import steps  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Pod:
  label: str
  target: str | None  # bench_compiled.TARGETS key; None: this host's devices
  topology: str  # TPU topology name or GPU slices x hosts x devices
  space: int  # devices along 'space' in the data+space layout
  hbm_gib: float  # per device


PODS = {
  "tpu-v5e-256": Pod(
    "TPU v5e 16x16 (256 chips)", "tpu-v5e", "v5e:16x16", 4, 16
  ),
  "h100x8": Pod("8 H100 SXM (1 host)", "h100", "1x1x8", 4, 80),
  "cpu": Pod("this host's devices", None, "", 2, 0),
}


@dataclasses.dataclass(frozen=True)
class Model:
  """The example's config (its `pel+ce` loss) at a pod-sized image."""

  classes: int = 21
  width: int = 8  # the example's defaults
  depth: int = 3
  image: int = 256
  per_device: int = 4  # images per device in the data layout
  channels: int = 3

  def config(self, batch: int) -> configs.Config:
    return configs.get_config(
      classes=self.classes,
      width=self.width,
      depth=self.depth,
      image_size=self.image,
      batch_size=batch,
    )


def devices(pod: Pod) -> list:
  if pod.target is None:
    return jax.devices()
  target = bc.TARGETS[pod.target]
  if target.family == "tpu":
    topo = topologies.get_topology_desc(
      topology_name=pod.topology, platform="tpu"
    )
  else:
    topo = topologies.get_topology_desc(
      platform="cuda", target_config=target.topology, topology=pod.topology
    )
  return list(topo.devices)


def meshes(pod: Pod) -> dict[str, Mesh]:
  devs = np.array(devices(pod))
  n = devs.size
  return {
    "data": Mesh(devs, ("data",)),
    "data+space": Mesh(
      devs.reshape(n // pod.space, pod.space), ("data", "space")
    ),
  }


LAYOUTS = ("data", "data+space")


def _spec(mesh: Mesh) -> P:
  return P(*mesh.axis_names)  # batch on 'data', height on 'space'


def _abstract(shape, dtype, sharding):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def train_program(model: Model, mesh: Mesh):
  """(jitted pure train step, abstract args, parameter shapes, batch)."""
  batch = model.per_device * mesh.size
  cfg = model.config(batch)

  def init():
    net = models.make_model(cfg, model.channels)
    return net, steps.make_optimizer(cfg, net)

  graphdef, state = nnx.split(nnx.eval_shape(init))
  loss_fn = losses.make_loss(cfg)

  def step(state, batch):
    net, optimizer = nnx.merge(graphdef, state)
    out = steps.train_step(net, optimizer, batch, loss_fn, cfg.classes)
    return nnx.state((net, optimizer)), *out

  replicated = NamedSharding(mesh, P())
  state = jax.tree.map(lambda a: _abstract(a.shape, a.dtype, replicated), state)
  split = NamedSharding(mesh, _spec(mesh))
  hw = (model.image, model.image)
  data = {
    "image": _abstract((batch, *hw, model.channels), jnp.float32, split),
    "mask": _abstract((batch, *hw), jnp.int32, split),
  }
  params = nnx.state(nnx.eval_shape(init)[0], nnx.Param)
  shapes = [tuple(a.shape) for a in jax.tree.leaves(params)]
  return jax.jit(step, donate_argnums=0), (state, data), shapes, batch


def loss_program(model: Model, mesh: Mesh):
  """value+grad of the example's PEL alone on sharded logits."""
  batch = model.per_device * mesh.size
  cfg = model.config(batch)
  loss = losses.region_loss_fn("pel", cfg)
  split = NamedSharding(mesh, _spec(mesh))
  hw = (model.image, model.image)
  args = (
    _abstract((batch, *hw, model.classes), jnp.float32, split),
    _abstract((batch, *hw), jnp.int32, split),
  )
  fn = jax.value_and_grad(
    lambda x, t: loss(x, t, from_logits=True, batch=cfg.batch_dice)
  )
  return jax.jit(fn), args, batch


# ------------------------------------------------------------- collectives

_COLLECTIVE = re.compile(
  r"^\s*(?:ROOT )?%?([\w.-]+) = (.*?) (all-reduce|all-gather|reduce-scatter"
  r"|collective-permute|all-to-all|ragged-all-to-all|collective-broadcast)"
  r"(?:-start)?\((.*)$"
)


def _group_size(attrs: str, n: int) -> int:
  """Devices in one replica group (2 for a collective-permute's pair)."""
  if "source_target_pairs" in attrs:
    return 2
  m = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", attrs)
  if m:  # mesh['axis_0'=4,'axis_1'=2] {'axis_1'}: the named axes
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
    return int(
      np.prod([int(sizes[a]) for a in re.findall(r"'(\w+)'", m.group(2))])
    )
  m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attrs)
  if m:  # iota form [groups, size]<=[...]
    return int(m.group(2))
  m = re.search(r"replica_groups=\{\{([\d,]*)\}", attrs)
  if m:
    return len(m.group(1).split(","))
  return n  # replica_groups={}: every device


def _op_name(attrs: str) -> str:
  m = re.search(r'op_name="([^"]*)"', attrs)
  name = m.group(1) if m else ""
  return re.sub(r"^jit\([^)]*\)/", "", name.split(";")[0])


def collectives(text: str, n: int) -> list[dict]:
  """Each collective of an optimised HLO module (the async pairs once)."""
  out = []
  for line in text.splitlines():
    m = _COLLECTIVE.match(line)
    if m is None:
      continue
    name, result, opcode, attrs = m.groups()
    arrays = [
      (tuple(int(d) for d in dims.split(",") if d), nbytes)
      for dims, nbytes, _ in bc._arrays(result)  # pylint: disable=protected-access
    ]
    if opcode != "all-reduce" and result.startswith("("):
      arrays = arrays[len(arrays) // 2 :]  # async (operand, result) pairs
    out.append(
      dict(
        name=name,
        opcode=opcode,
        arrays=arrays,
        group=_group_size(attrs, n),
        op_name=_op_name(attrs),
      )
    )
  return out


KINDS = ("gradient", "region sums", "scalars", "halo", "other", "full-size")


def classify(
  found: list[dict], params, classes: int, pixels: int, batch: int
) -> list:
  """(kind, shape, bytes, opcode, group, op_name) per array of `found`.

  All-reduced arrays of a parameter's size are the gradient (XLA TPU
  reshapes some, e.g. `[64]` to `[8, 8]`), each parameter once per replica
  group size (the spatial layout reduces over 'space' and then 'data'), so
  that a `[C]` region sum is not taken for the head's `[C]` bias; arrays of
  `G * C` elements (G up to 8 * `batch`) are region sums, a larger 1-D one
  of at most all parameters' size (XLA GPU flattens the combined gradient
  all-reduce, with the loss scalars) the gradient too, a
  collective-permute of a convolution a halo, and any other array of
  `pixels` (a device's share of the image pixels) elements or more is
  full-size. The example's `[C, C]` confusion matrix is "other".
  """
  sums = 8 * batch * classes
  total = sum(int(np.prod(p)) for p in params)
  left = Counter()  # (size, group) -> parameters of that size not seen
  out = []
  for c in found:
    for shape, nbytes in c["arrays"]:
      size = int(np.prod(shape or (1,)))
      key = (size, c["group"])
      if key not in left:
        left[key] = sum(int(np.prod(p)) == size for p in params)
      reduce = c["opcode"] in ("all-reduce", "reduce-scatter")
      if reduce and left[key] > 0:
        left[key] -= 1
        kind = "gradient"
      elif reduce and len(shape) == 1 and sums < size <= total + 8:
        kind = "gradient"  # XLA GPU's one flat buffer (and loss scalars)
      elif c["opcode"] == "collective-permute" and "conv" in c["op_name"]:
        kind = "halo"
      elif size >= pixels:
        kind = "full-size"
      elif size == 1:
        kind = "scalars"
      elif size % classes == 0 and size <= sums and size != classes**2:
        kind = "region sums"
      else:
        kind = "other"
      out.append((kind, shape, nbytes, c["opcode"], c["group"], c["op_name"]))
  return out


def summary(arrays: list) -> dict[str, tuple[int, int]]:
  """kind -> (arrays, bytes)."""
  out = {k: (0, 0) for k in KINDS}
  for kind, _, nbytes, *_ in arrays:
    count, total = out[kind]
    out[kind] = (count + 1, total + nbytes)
  return out


# ----------------------------------------------------------------- measure


def _compile(fn, args, family: str):
  compiled = fn.trace(*args).lower().compile()
  if family == "tpu":
    text = compiled.as_text()
  else:  # a compile-only GPU executable prints through its module
    text = compiled.runtime_executable().hlo_modules()[0].to_string()
  return compiled, text


def measure(key: str, model: Model, layouts=LAYOUTS) -> list[dict]:
  pod = PODS[key]
  family = bc.TARGETS[pod.target].family if pod.target else "cpu"
  rows = []
  for layout, mesh in meshes(pod).items():
    if layout not in layouts:
      continue
    spec = dict(zip(mesh.axis_names, mesh.devices.shape))
    rows_h = model.image // spec.get("space", 1)
    fn, args, params, batch = train_program(model, mesh)
    compiled, text = _compile(fn, args, family)
    mem = compiled.memory_analysis()
    local = batch // spec["data"]
    pixels = local * rows_h * model.image
    found = classify(
      collectives(text, mesh.size), params, model.classes, pixels, batch
    )
    rows.append(
      dict(
        pod=key,
        program="train step",
        layout=layout,
        mesh=spec,
        batch=batch,
        local=[local, rows_h, model.image],
        params_bytes=int(sum(np.prod(s) for s in params) * 4),
        arguments=mem.argument_size_in_bytes,
        outputs=mem.output_size_in_bytes,
        alias=mem.alias_size_in_bytes,
        temps=mem.temp_size_in_bytes,
        collectives=[list(a) for a in found],
      )
    )
    fn, args, batch = loss_program(model, mesh)
    nbytes, _, temp, text = bc.compile_one(fn, args, family)
    found = classify(
      collectives(text, mesh.size), [], model.classes, pixels, batch
    )
    rows.append(
      dict(
        pod=key,
        program="pel_loss value+grad",
        layout=layout,
        mesh=spec,
        batch=batch,
        local=[local, rows_h, model.image],
        logits_bytes=batch * model.image**2 * model.classes * 4,
        bytes_accessed=nbytes,
        temps=temp,
        collectives=[list(a) for a in found],
      )
    )
    for row in rows[-2:]:
      print(
        f"{key} {layout} {row['program']}: "
        + ", ".join(
          f"{k} {n}" for k, (n, _) in summary(row["collectives"]).items() if n
        ),
        flush=True,
      )
  return rows


# ----------------------------------------------------------------- results


def _size(nbytes: float) -> str:
  for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
    if nbytes >= scale:
      return f"{nbytes / scale:.1f} {unit}"
  return f"{nbytes:.0f} B"


def _cell(count: int, nbytes: int) -> str:
  return f"{count}: {_size(nbytes)}" if count else "–"


def _mesh(spec: dict) -> str:
  return " × ".join(f"{v} {k}" for k, v in spec.items())


def markdown(results: dict) -> str:
  rows = [r for res in results.values() for r in res["rows"]]
  train = [r for r in rows if r["program"] == "train step"]
  loss = [r for r in rows if r["program"] != "train step"]
  out = [
    "# The UNet example's train step compiled for pods",
    "",
    "Written by `benchmarks/bench_pods.py --write-results` (deviceless",
    "compilation: no device ran). Per device; the gradient is",
    "parameter-sized, the region sums `[G, C]`; full-size means at least a",
    "device's share of the image pixels.",
    "",
  ]
  for key, res in results.items():
    meta = res["meta"]
    out.append(
      f"- {key}: {meta['device']}; model {meta['model']}; pel_jax "
      f"{meta['pel_jax']}, {meta['date']}, `{meta['command']}`"
    )
  out += [
    "",
    "## Per-device memory of the train step",
    "",
    "| pod | layout | mesh | batch | per device [b, h, w] | parameters "
    "| arguments | outputs | donated | temporaries | peak ≈ a + o − d + t |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in train:
    peak = r["arguments"] + r["outputs"] - r["alias"] + r["temps"]
    out.append(
      f"| {r['pod']} | {r['layout']} | {_mesh(r['mesh'])} | {r['batch']} "
      f"| {r['local']} | {_size(r['params_bytes'])} "
      f"| {_size(r['arguments'])} | {_size(r['outputs'])} "
      f"| {_size(r['alias'])} | {_size(r['temps'])} | {_size(peak)} |"
    )
  out += [
    "",
    "## Collectives (arrays: bytes per device)",
    "",
    "| pod | layout | program | " + " | ".join(KINDS) + " |",
    "|---|---|---|" + "---|" * len(KINDS),
  ]
  for r in train + loss:
    cells = summary(r["collectives"])
    out.append(
      f"| {r['pod']} | {r['layout']} | {r['program']} | "
      + " | ".join(_cell(*cells[k]) for k in KINDS)
      + " |"
    )
  out += [
    "",
    "## Every collective but the gradient's",
    "",
    "| pod | layout | program | kind | op | shape | bytes | group | from |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in train + loss:
    seen = Counter(
      (kind, op, tuple(shape), nbytes, group, name)
      for kind, shape, nbytes, op, group, name in r["collectives"]
      if kind != "gradient"
    )
    for (kind, op, shape, nbytes, group, name), n in seen.items():
      times = f" ×{n}" if n > 1 else ""
      out.append(
        f"| {r['pod']} | {r['layout']} | {r['program']} | {kind} | {op} "
        f"| {list(shape)}{times} | {_size(nbytes)} | {group} "
        f"| `{name[-70:]}` |"
      )
  return "\n".join(out) + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--pod", default="all", choices=[*PODS, "tpu", "gpu", "all"]
  )
  for field in dataclasses.fields(Model):
    parser.add_argument(
      "--" + field.name.replace("_", "-"), type=int, default=field.default
    )
  parser.add_argument("--layout", default="all", choices=[*LAYOUTS, "all"])
  parser.add_argument("--write-results", action="store_true")
  args = parser.parse_args(argv)
  model = Model(
    **{f.name: getattr(args, f.name) for f in dataclasses.fields(Model)}
  )
  layouts = LAYOUTS if args.layout == "all" else (args.layout,)
  if args.pod == "all":
    keys = [k for k in PODS if PODS[k].target]
  elif args.pod in ("tpu", "gpu"):
    keys = [
      k
      for k, p in PODS.items()
      if p.target and bc.TARGETS[p.target].family == args.pod
    ]
  else:
    keys = [args.pod]
  results = {}
  for key in keys:
    pod = PODS[key]
    why = pod.target and bc.missing(bc.TARGETS[pod.target].family)
    if why:
      print(f"skipped {key}: {why}", flush=True)
      continue
    meta = dict(
      device=pod.label,
      model=", ".join(f"{k}={v}" for k, v in dataclasses.asdict(model).items()),
      loss=configs.get_config().loss,
      versions=bc.versions(),
      pel_jax=bc.checkout(),
      date=datetime.date.today().isoformat(),
      command="python benchmarks/bench_pods.py "
      + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    results[key] = dict(meta=meta, rows=measure(key, model, layouts))
  if args.write_results and results:
    path = os.path.join(_HERE, "results_pods.json")
    merged = bc.merge_results(path, results, PODS)
    with open(path, "w") as f:
      json.dump(merged, f, indent=1)
      f.write("\n")
    with open(os.path.join(_HERE, "results_pods.md"), "w") as f:
      f.write(markdown(merged))
  else:
    print(markdown(results))
  return results


if __name__ == "__main__":
  main()

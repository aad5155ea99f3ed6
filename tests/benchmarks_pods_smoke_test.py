"""Smoke test of benchmarks/bench_pods.py on the 8 simulated CPU devices."""

import numpy as np

from tests.benchmarks_helpers import load_bench


def _bench():
  return load_bench("bench_pods")


def test_spatially_sharded_step_sorts_its_collectives(capsys):
  bench = _bench()
  args = "--classes 3 --width 4 --depth 1 --image 8 --per-device 1"
  results = bench.main(
    ["--pod", "cpu", "--layout", "data+space", *args.split()]
  )
  rows = results["cpu"]["rows"]
  assert [(r["program"], r["mesh"]) for r in rows] == [
    ("train step", {"data": 4, "space": 2}),
    ("pel_loss value+grad", {"data": 4, "space": 2}),
  ]
  step, loss = (bench.summary(r["collectives"]) for r in rows)
  # Every parameter's gradient is all-reduced: at least their bytes.
  assert step["gradient"][1] >= rows[0]["params_bytes"]
  # The 3x3 convolutions over the split height exchange halos. (The region
  # sums are not asserted: XLA CPU's layout gathers its partial sums.)
  assert step["halo"][0] > 0
  for row, kinds in zip(rows, (step, loss)):
    assert sum(n for n, _ in kinds.values()) == len(row["collectives"])
  assert loss["gradient"] == (0, 0) and loss["halo"] == (0, 0)
  assert rows[0]["temps"] > 0 and rows[0]["alias"] > 0  # the state donated
  out = capsys.readouterr().out
  assert "| cpu | data+space | train step |" in out


def test_classify_sorts_by_size():
  bench = _bench()

  def c(opcode, *shapes, group=8, op_name=""):
    arrays = [(s, 4 * int(np.prod(s))) for s in shapes]
    return dict(opcode=opcode, arrays=arrays, group=group, op_name=op_name)

  found = [
    c("all-reduce", (3, 3, 4, 8), (3,), (8, 8)),  # (64,) laid out [8, 8]
    c("all-reduce", (3,), (), (1, 3), (9,)),
    c("all-reduce", (3,), group=2),  # the bias again, over another axis
    c("collective-permute", (1, 1, 8, 4), group=2, op_name="jvp()/conv"),
    c("all-gather", (1, 8, 8, 3), group=2, op_name="reshape"),
  ]
  params = [(3, 3, 4, 8), (3,), (64,)]
  kinds = [k for k, *_ in bench.classify(found, params, 3, 64, 1)]
  assert kinds == [
    *("gradient",) * 3,
    *("region sums", "scalars", "region sums", "other"),
    "gradient",
    "halo",
    "full-size",
  ]

"""One process of the two-process loopback test in examples_unet_test.py.

Usage: python tests/examples_unet_worker.py PORT PROCESS_ID OUT_DIR
Each process has 2 CPU devices; together they form a 4-device mesh. Writes
the global PEL (jit-sharded, and pel_jax under pmap with axis_name) and the
parameters after one data-parallel train step (`steps.DataParallel`) to
OUT_DIR/process_<id>.npz.
"""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax

port, pid, out = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
  coordinator_address=f"127.0.0.1:{port}",
  num_processes=2,
  process_id=pid,
  initialization_timeout=60,
)

from flax import nnx  # noqa: E402
import numpy as np  # noqa: E402

from examples.unet import configs  # noqa: E402
from examples.unet import data  # noqa: E402
from examples.unet import inference  # noqa: E402
from examples.unet import losses  # noqa: E402
from examples.unet import models  # noqa: E402
from examples.unet import steps  # noqa: E402

# The same tiny setting as test_two_processes_match_one_process() in
# examples_unet_test.py.
cfg = configs.get_config(
  image_size=16, num_train=4, width=4, depth=1, batch_size=8, warmup=0, steps=3
)
ds = data.synthetic(cfg.seed, cfg.num_train, cfg.image_size, cfg.classes)
local = slice(4 * pid, 4 * pid + 4)  # this host's half of the global batch
batch = data.train_batch(ds, cfg.seed, 0, cfg.batch_size, 16, local)
rng = np.random.default_rng(1)
logits = rng.normal(size=(8, 16, 16, 2)).astype(np.float32)[local]
pel = losses.region_loss_fn("pel", cfg)

model = models.make_model(cfg, 1)
optimizer = steps.make_optimizer(cfg, model)
parallel = steps.DataParallel(losses.make_loss(cfg), cfg.classes)
parallel.replicate(model, optimizer)
x = jax.make_array_from_process_local_data(parallel.batch_sharding, logits)
y = jax.make_array_from_process_local_data(
  parallel.batch_sharding, batch["mask"]
)
jit_pel = jax.jit(
  lambda x, y: pel(x, y, from_logits=True, batch=True),
  out_shardings=parallel.replicated,
)(x, y)
pmap_pel = jax.pmap(
  lambda x, y: pel(x, y, from_logits=True, batch=True, axis_name="d"),
  axis_name="d",
)(logits.reshape(2, 2, 16, 16, 2), batch["mask"].reshape(2, 2, 16, 16))
loss, _, _ = parallel.step(model, optimizer, batch)
params = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
np.savez(
  out / f"process_{pid}.npz",
  jit_pel=inference.to_host(jit_pel),
  pmap_pel=np.asarray(pmap_pel)[0],
  loss=inference.to_host(loss),
  **{
    "param:" + jax.tree_util.keystr(k): inference.to_host(v) for k, v in params
  },
)
jax.distributed.shutdown()

"""Test setup: 8 simulated CPU devices, set before JAX initialises a backend."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

assert jax.device_count() == 8, (
  "tests need 8 simulated CPU devices; JAX started before conftest set"
  f" XLA_FLAGS (found {jax.devices()})"
)


def pytest_configure(config):
  config.addinivalue_line(
    "markers", "slow: a long example test (CI runs it; -m 'not slow' skips)"
  )

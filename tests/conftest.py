"""Test setup: 8 simulated CPU devices, set before JAX initialises a backend.

Also marks whole files `smoke` (a first check, `pytest -m smoke`) or `slow`
(training runs, studies and benchmark scripts, `pytest -m "not slow"`); the
markers are registered in pyproject.toml, and the plain command runs all.
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

assert jax.device_count() == 8, (
  "tests need 8 simulated CPU devices; JAX started before conftest set"
  f" XLA_FLAGS (found {jax.devices()})"
)

# Input checks, integer labels, the README's usage, the public API's
# conventions, the example's command line and data loader: cheap, and they
# touch every entry point.
SMOKE = frozenset(
  {
    "examples_unet_data_test.py",
    "examples_unet_main_test.py",
    "labels_test.py",
    "layout_test.py",
    "readme_usage_test.py",
    "validation_test.py",
  }
)
# Whole programs: example training runs, the studies, the benchmark scripts.
SLOW = frozenset(
  {
    "benchmarks_accumulate_example_smoke_test.py",
    "benchmarks_accumulate_smoke_test.py",
    "benchmarks_distance_smoke_test.py",
    "benchmarks_losses_smoke_test.py",
    "benchmarks_lovasz_smoke_test.py",
    "benchmarks_smoke_test.py",
    "examples_unet_test.py",
    "experiments_real_study_test.py",
    "experiments_study_test.py",
  }
)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.path.name in SMOKE:
      item.add_marker(pytest.mark.smoke)
    if item.path.name in SLOW:
      item.add_marker(pytest.mark.slow)

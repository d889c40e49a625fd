"""Shared test setup.

The environment is set at import time, before any test module (or hale_jax) imports jax:
8 virtual CPU devices, the CPU platform and a fast-compiling XLA backend.  Nothing else is enabled globally; tests that need
float64 use the ``x64`` fixture.

``rng`` gives each test its own ``np.random.default_rng(seed)``; the seed is derived from the
test's node id (stable across runs, different between tests) plus ``HALE_TEST_SEED`` (default 0)
to draw fresh inputs on demand.  It is stored in ``request.node.user_properties`` and printed in
the report of a failing test.
"""

from __future__ import annotations

import os
import sys
import zlib

_DEVICE_FLAG = "--xla_force_host_platform_device_count=8"
if "jax" in sys.modules:  # pragma: no cover - only if something imported jax before pytest
  import warnings
  warnings.warn("jax was imported before tests/conftest.py; XLA_FLAGS/JAX_PLATFORMS may not apply")
# Tests compile far more than they run: XLA's CPU backend without its LLVM optimisations
# compiles about a third faster.  Every comparison in the suite is between runs of this same
# setting or against float64 references with tolerances.
_FAST_COMPILE = "--xla_backend_optimization_level=0"
_flags = os.environ.get("XLA_FLAGS", "")
for _flag in (_DEVICE_FLAG, _FAST_COMPILE):
  if _flag.split("=")[0] not in _flags:
    _flags = f"{_flags} {_flag}".strip()
os.environ["XLA_FLAGS"] = _flags
os.environ["JAX_PLATFORMS"] = "cpu"

# Make `import hale_jax` work however pytest is invoked (the package lives one level up).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

_SEED_KEY = "rng_seed"


def _seed_for(nodeid: str) -> int:
  base = int(os.environ.get("HALE_TEST_SEED", "0"))
  return (zlib.crc32(nodeid.encode("utf-8")) + base) % (2**32)


@pytest.fixture
def rng(request) -> np.random.Generator:
  """A fresh generator whose seed depends on the test; printed when the test fails."""
  seed = _seed_for(request.node.nodeid)
  request.node.user_properties.append((_SEED_KEY, seed))
  return np.random.default_rng(seed)


@pytest.fixture
def x64():
  """Runs the test with ``jax_enable_x64`` on (float64 arrays), restored afterwards."""
  import jax
  with jax.enable_x64(True):
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  report = outcome.get_result()
  if report.failed:
    for key, value in item.user_properties:
      if key == _SEED_KEY:
        report.sections.append(
            ("rng seed", f"np.random.default_rng({value})  (HALE_TEST_SEED="
                         f"{os.environ.get('HALE_TEST_SEED', '0')}, node {item.nodeid})"))

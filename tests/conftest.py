"""Shared test setup.

The environment is set at import time, before any test module (or hale_jax) imports jax:
8 virtual CPU devices, the CPU platform, a fast-compiling XLA backend and one persistent
compilation cache for the whole run (below).  Nothing else is enabled globally; tests that need
float64 use the ``x64`` fixture.

``rng`` gives each test its own ``np.random.default_rng(seed)``; the seed is derived from the
test's node id (stable across runs, different between tests) plus ``HALE_TEST_SEED`` (default 0)
to draw fresh inputs on demand.  It is stored in ``request.node.user_properties`` and printed in
the report of a failing test.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

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

# One persistent compilation cache for the run, in a new folder that the process creating it
# removes at exit: the commands the tests start, the xdist workers (which inherit this
# environment) and tests that rebuild a jitted function all compile the same programs, and
# each program is compiled once.  A cached executable is the compiled one: no result changes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="hale-jax-tests-xla-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Make `import hale_jax` work however pytest is invoked (the package lives one level up).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import contextlib  # noqa: E402
import io  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hale_jax  # noqa: E402
from hale_jax.config import Config  # noqa: E402
from hale_jax.data import load_folder  # noqa: E402
from hale_jax.loop import train  # noqa: E402

from benchmarks import faults  # noqa: E402
from tests import helpers  # noqa: E402

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


# Trained runs that several files share (package scope).  Under pytest-xdist with
# ``--dist loadfile`` (the README's command) each file runs in one worker, and the files whose
# tests take any of these runs run in the same worker, so that each run is trained once.
SHARED_RUNS = ("wave", "portable", "tracked")
_TEST_SIGNATURE = re.compile(r"^def (test_\w+)\(([^)]*)\)", re.M)


def files_sharing_runs(folder: Path = Path(__file__).parent) -> set[str]:
  """Names of the test files with a test function that takes one of :data:`SHARED_RUNS`."""
  return {path.name for path in folder.glob("test_*.py")
          if any(set(re.findall(r"\w+", args)) & set(SHARED_RUNS)
                 for _, args in _TEST_SIGNATURE.findall(path.read_text(encoding="utf-8")))}


def pytest_xdist_make_scheduler(config, log):
  """``--dist loadfile``, with the files of :func:`files_sharing_runs` as one unit."""
  if config.getvalue("dist") != "loadfile":
    return None
  from xdist.scheduler import LoadFileScheduling  # pylint: disable=import-outside-toplevel
  sharing = files_sharing_runs()

  class SharedRunsScheduling(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
      path = nodeid.split("::", 1)[0]
      return "shared-runs" if Path(path).name in sharing else path
  return SharedRunsScheduling(config, log)


# ----------------------------------------------- run folders shared by several test files

@pytest.fixture(scope="package")
def labelled_data_dir(tmp_path_factory):
  return helpers.labelled_dataset(tmp_path_factory.mktemp("workflow-data") / "tiny")


@pytest.fixture(scope="package")
def fake(labelled_data_dir, tmp_path_factory):
  return helpers.fake_run(tmp_path_factory.mktemp("fake") / "run", labelled_data_dir)


@pytest.fixture(scope="package")
def fake_model(fake):
  return hale_jax.load(fake)


@pytest.fixture(scope="package")
def portable(labelled_data_dir, tmp_path_factory):
  """A trained run on the tiny folder (3 epochs, a checkpoint per epoch)."""
  workdir = tmp_path_factory.mktemp("portable") / "run"
  config = Config.make(**helpers.RUN, max_epochs=3, eval_every=1, checkpoint_every_epochs=1)
  lines = []
  with faults.compilation_cache(helpers.compile_cache_dir(tmp_path_factory)):
    results = train(config, load_folder(labelled_data_dir), workdir, log=lines.append,
                    data_spec=helpers.folder_spec(labelled_data_dir))
  return workdir, config, results, lines


@pytest.fixture(scope="package")
def tracked(labelled_data_dir, tmp_path_factory):
  """The portable run's settings (so the same first three epochs) with TensorBoard, a fake
  W&B, a metrics.jsonl reader, early stopping (``patience=2`` and ``min_delta=1``: no gain
  can count, so it stops after 3 validations), and ranking chunks of 32 that run out of
  device memory above 16 (every compiled ranking function raises XLA's error)."""
  base = tmp_path_factory.mktemp("tracked")
  workdir, tb = base / "run", base / "tb"
  config = Config.make(**helpers.RUN, max_epochs=10, eval_every=1, patience=2, min_delta=1.0,
                       tensorboard_dir=str(tb), wandb_project="hale-test", eval_chunk=32)
  fake, reader, lines, calls, stdout = helpers.FakeWandb(), helpers.MetricsReader(workdir), [], [], io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), \
      faults.compilation_cache(helpers.compile_cache_dir(tmp_path_factory)):
    mp.setitem(sys.modules, "wandb", fake.module)
    helpers.oom_after_compile(mp, 16, calls)
    results = train(config, load_folder(labelled_data_dir), workdir, log=lines.append,
                    data_spec=helpers.folder_spec(labelled_data_dir), callbacks=[reader])
  return types.SimpleNamespace(workdir=workdir, tb=tb, config=config, results=results,
                               lines=lines, wandb=fake, reader=reader, oom_calls=calls,
                               stdout=stdout.getvalue().splitlines())


@pytest.fixture(scope="package")
def data_dir(tmp_path_factory):
  return faults.write_folder(helpers.tiny_graph(), tmp_path_factory.mktemp("reliability-data") / "tiny",
                             helpers.RENAME)


@pytest.fixture(scope="package")
def cache(tmp_path_factory):
  return helpers.compile_cache_dir(tmp_path_factory)


@pytest.fixture(scope="package")
def wave(data_dir, cache, tmp_path_factory):
  """The independent command-line runs, started together: a run with a checkpoint per epoch
  (alone first, so that the cache holds its compiled functions before the others start), a
  run that diverges, a run whose data will change, and the quirky dataset with
  --strip_whitespace.  (Refusals that need no training, bad workdirs and fields with
  spaces, run through the launcher's main in-process: the quick tests above.)"""
  base = tmp_path_factory.mktemp("wave")
  env = faults.launcher_env(cache)
  changing = base / "changing-data"
  shutil.copytree(data_dir, changing)
  quirky = helpers.quirky_dataset(base / "quirky-data")
  dirs = {name: base / name for name in ("ckpt", "nan", "changing", "quirky")}
  (ckpt,) = helpers.cli_many([helpers.launch_args(data_dir, dirs["ckpt"], "--max_epochs=3", "--eval_every=1",
                               "--checkpoint_every_epochs=1", "--max_to_keep=3")], env)
  names = ["nan", "changing", "quirky"]
  procs = helpers.cli_many([
      helpers.launch_args(data_dir, dirs["nan"], "--max_epochs=3", "--eval_every=1",
              "--checkpoint_every_epochs=1", "--activation=linear2x", "--learning_rate=1e3"),
      helpers.launch_args(changing, dirs["changing"], "--max_epochs=3", "--eval_every=1",
              "--checkpoint_every_epochs=1"),
      helpers.launch_args(quirky, dirs["quirky"], "--max_epochs=2", "--strip_whitespace"),
  ], env)
  out = dict(zip(names, procs), ckpt=ckpt)
  return types.SimpleNamespace(base=base, env=env, dirs=dirs, procs=out, changing=changing,
                               quirky=quirky)

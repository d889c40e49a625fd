"""train() and the launcher on several devices: meshes, resume across meshes, multi-host.

In float64 (``dtype="float64"``): the training amplifies rounding about 1000-fold (see
``test_sharding.test_epochs_match_single_device``), so only float64 can tell a layout bug from
summation order.  Tolerance: 1e-5 relative, max|a - b| / max|b| per array.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hale_jax import mesh as meshes
from hale_jax import synthetic
from hale_jax.config import Config
from hale_jax.data import load_folder
from hale_jax.layout import Layout
from hale_jax.loop import Interrupted, train

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-5


def _quiet(line):
  del line


def _graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The graph as a dataset folder, for the launcher."""
  folder = tmp_path_factory.mktemp("graph")
  g = _graph()
  for s in ("train", "valid", "test"):
    (folder / f"{s}.txt").write_text("".join(
        f"{g.entities[h]}\t{g.relations[r]}\t{g.entities[t]}\n" for h, r, t in g.split(s)))
  return folder


@pytest.fixture(scope="module")
def graph(data_dir):
  """The graph as the launcher reads it (its ids follow the files), so that in-process runs
  and launched ones train the same problem."""
  return load_folder(data_dir)


def _config(**kw) -> Config:
  base = dict(model="RotL", dim=16, batch_size=64, lse_chunk=0, max_epochs=3, max_seconds=0,
              eval_every=1, learning_rate=0.01, dtype="float64", mesh="none")
  base.update(kw)
  with jax.enable_x64(base["dtype"] == "float64"):
    return Config.make(**base)


def _assert_rel_close(actual, expected, what=""):
  a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert a.shape == b.shape, (what, a.shape, b.shape)
  err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
  assert err <= RTOL, f"{what}: relative error {err:.3g} > {RTOL}"


def _same_params(dir_a, dir_b):
  with np.load(Path(dir_a) / "best_params.npz") as pa, \
       np.load(Path(dir_b) / "best_params.npz") as pb:
    assert sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
      _assert_rel_close(pa[k], pb[k], what=k)


def _results(workdir):
  return json.loads((Path(workdir) / "results.json").read_text())


def _same_metrics(ra, rb):
  assert ra["metrics"]["best_epoch"] == rb["metrics"]["best_epoch"]
  for split in ("valid", "test"):
    for mode, m in ra["metrics"][split].items():
      for key, value in m.items():
        assert value == pytest.approx(rb["metrics"][split][mode][key], rel=1e-6), \
            (split, mode, key)
  np.testing.assert_allclose([c["loss"] for c in ra["curve"]],
                             [c["loss"] for c in rb["curve"]], rtol=RTOL)


@pytest.fixture(scope="module")
def single_run(graph, tmp_path_factory):
  """The reference: 3 epochs on one device."""
  workdir = tmp_path_factory.mktemp("single") / "run"
  with jax.enable_x64(True):
    train(_config(), graph, workdir, log=_quiet)
  return workdir


@pytest.mark.slow
def test_train_on_mesh_matches_one_device(graph, single_run, tmp_path):
  """data:4,model:2 end to end (tests/test_sharding.py checks the epochs of every mesh,
  data:1,model:8 included, against one device)."""
  mesh = "data:4,model:2"
  lines = []
  with jax.enable_x64(True):
    res = train(_config(mesh=mesh), graph, tmp_path / "run", log=lines.append)
  assert res["layout"] == {"mesh": mesh, "processes": 1}
  assert any(f"layout: {mesh}" in line for line in lines)
  _same_metrics(res, _results(single_run))
  _same_params(tmp_path / "run", single_run)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["AttH"])  # rotation, reflection, attention and curvature
def test_hyperbolic_model_on_mesh_matches_one_device(graph, tmp_path, model):
  """A hyperbolic model (its distance under each query's curvature, in the uniformity LSE
  over the row-sharded table and in the sharded ranking), with learned tail biases: 3 epochs on
  data:4,model:2 equal 3 on one device."""
  results = {}
  with jax.enable_x64(True):
    for mesh in ("none", "data:4,model:2"):
      workdir = tmp_path / mesh.replace(":", "").replace(",", "_")
      results[mesh] = (train(_config(model=model, bias="learn", mesh=mesh), graph, workdir,
                             log=_quiet), workdir)
  (single, single_dir), (sharded, sharded_dir) = results["none"], results["data:4,model:2"]
  assert sharded["layout"]["mesh"] == "data:4,model:2"
  assert single["metrics"]["valid"]["realistic"]["mrr"] > 0  # it ranked something
  _same_metrics(sharded, single)
  _same_params(sharded_dir, single_dir)
  with np.load(Path(single_dir) / "best_params.npz") as p:
    assert {"curvature", "reflection", "context", "bias_tail"} <= set(p.files)


def _stop_after(n):
  calls = []

  def should_stop():
    calls.append(None)
    return "test stop" if len(calls) == n else None
  return should_stop


@pytest.mark.slow
def test_resume_on_other_meshes_and_on_one_device(graph, single_run, tmp_path):
  """Segments of one step (after a first one of ``budget.PROBE_STEPS``), stopped inside
  epochs: 10 steps of the first epoch on data:2,model:4 (8 devices, 248 table rows); on to step
  17 of the second on data:1,model:3 (3 devices, 249 rows); the rest on one device (247 rows),
  in segments of the default length.  Each resume places the last layout's state and the
  losses of the epoch so far on a new one, and the run ends where the one-device run does."""
  workdir, tiny = tmp_path / "run", 1e-9  # segment seconds: one step per segment
  with jax.enable_x64(True):
    with pytest.raises(Interrupted, match="checkpoint saved at epoch 0, step 10 of 40 of "
                                          "epoch 1 in .*checkpoints/10;"):
      train(_config(mesh="data:2,model:4", segment_seconds=tiny), graph, workdir, log=_quiet,
            should_stop=_stop_after(3))  # 8 + 1 + 1 steps
    assert json.loads((workdir / "run.json").read_text())["config"]["mesh"] == "data:2,model:4"
    lines = []
    with pytest.raises(Interrupted, match="checkpoint saved at epoch 1, step 17 of 40 of "
                                          "epoch 2 in .*checkpoints/57;"):
      train(_config(mesh="data:1,model:3", segment_seconds=tiny), graph, workdir,
            log=lines.append, devices=jax.devices()[:3], should_stop=_stop_after(40))
    assert any(l.startswith(f"resumed from {workdir / 'checkpoints' / '10'}: epoch 0, step 10 "
                            f"of 40 of epoch 1,") for l in lines), lines
    assert any("layout: data:1,model:3" in line for line in lines), lines
    lines = []
    res = train(_config(mesh="none"), graph, workdir, log=lines.append)
  assert any(l.startswith(f"resumed from {workdir / 'checkpoints' / '57'}: epoch 1, step 17 "
                          f"of 40 of epoch 2,") for l in lines), lines
  assert res["timings"]["resumed"] and res["layout"]["mesh"] is None
  assert res["metrics"]["epochs"] == 3 and res["metrics"]["steps"] == 120
  _same_metrics(res, _results(single_run))
  _same_params(workdir, single_run)


def test_auto_mesh_is_one_device_on_cpu():
  assert len(jax.devices()) == 8
  big = 10 ** 12  # bytes: would not fit any device, yet CPU devices of one process stay one
  assert meshes.auto_mesh_spec(big, jax.devices()) is None
  assert meshes.auto_mesh_spec(100, jax.devices()[:1]) is None
  for spec in ("auto", "none", " none "):
    mesh = meshes.resolve_mesh(spec, 100)
    assert dict(mesh.shape) == {"data": 1, "model": 1} and mesh.devices.flat[0] == jax.devices()[0]
  mesh = meshes.resolve_mesh("model:2", 100)
  assert dict(mesh.shape) == {"data": 4, "model": 2}
  mesh = meshes.resolve_mesh("none", 100, jax.devices()[3:5])
  assert mesh.devices.flat[0] == jax.devices()[3]
  layout = Layout.for_run(_config(mesh="auto", dtype="float32"), 247)
  assert layout.single_device and layout.rows == 247
  layout = Layout.for_run(_config(mesh="data:2,model:4", dtype="float32"), 247)
  assert layout.describe()["mesh"] == "data:2,model:4" and layout.rows == 248
  assert meshes.table_bytes(10, 4, "float32", "adam") == 10 * 4 * 4 * 3
  assert meshes.table_bytes(10, 4, "float64", "adagrad") == 10 * 4 * 8 * 2


def test_bad_mesh_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="unknown axis 'rows'"):
    _config(mesh="rows:2", dtype="float32")
  workdir = tmp_path / "never-written"
  with jax.enable_x64(True), pytest.raises(ValueError, match="needs data\\*model = 6"):
    train(_config(mesh="data:3,model:2"), _graph(), workdir, log=_quiet)
  assert not workdir.exists()  # refused before anything was written


# ----------------------------------------------------------------------------- multi-host

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch_args(data_dir, workdir, *extra):
  return [sys.executable, "-m", "hale_jax.launch", f"--data_dir={data_dir}",
          f"--workdir={workdir}", "--model=RotL", "--dim=16", "--batch_size=64",
          "--lse_chunk=0", "--max_epochs=3", "--max_seconds=0", "--eval_every=1",
          "--learning_rate=0.01", "--dtype=float64", *extra]


def _env(devices: int):
  env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu",
             JAX_ENABLE_X64="1")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


@pytest.mark.slow
def test_two_processes_match_one(data_dir, single_run, tmp_path):
  """2 processes x 4 CPU devices (gloo over 127.0.0.1) on a data:4,model:2 mesh that spans
  both: the same results as one process on one device (the in-process reference trained the
  same files with the same config)."""
  port = _free_port()
  multi = tmp_path / "multi"
  procs = [subprocess.Popen(
      _launch_args(data_dir, multi, "--mesh=data:4,model:2",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={i}"),
      cwd=tmp_path, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err[-3000:]}"
  assert "epoch    3" in outs[0][0] and "epoch" not in outs[1][0]  # progress from process 0
  rm = _results(multi)
  assert rm["layout"] == {"mesh": "data:4,model:2", "processes": 2}
  assert rm["device"]["count"] == 8
  _same_metrics(rm, _results(single_run))
  _same_params(multi, single_run)
  assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_multi_host_flags_must_come_together(data_dir, tmp_path):
  out = subprocess.run(_launch_args(data_dir, tmp_path / "w", "--num_processes=2"),
                       cwd=tmp_path, env=_env(1), capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: multi-host needs all of")

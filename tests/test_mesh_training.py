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

from hale_jax import synthetic, train

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-5


def _graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _config(**kw) -> train.Config:
  base = dict(model="RotL", dim=16, batch_size=64, lse_chunk=0, max_epochs=3, max_seconds=0,
              eval_every=1, learning_rate=0.01, dtype="float64", mesh="none")
  base.update(kw)
  return train.Config(**base)


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
def single_run(tmp_path_factory):
  """The reference: 3 epochs on one device."""
  workdir = tmp_path_factory.mktemp("single") / "run"
  with jax.enable_x64(True):
    train.train(_config(), _graph(), workdir, log=lambda s: None)
  return workdir


@pytest.mark.parametrize("mesh", ["data:4,model:2", "data:1,model:8"])
def test_train_on_mesh_matches_one_device(single_run, tmp_path, mesh):
  lines = []
  with jax.enable_x64(True):
    res = train.train(_config(mesh=mesh), _graph(), tmp_path / "run", log=lines.append)
  assert res["layout"] == {"mesh": mesh, "processes": 1}
  assert any(f"layout {mesh}" in line for line in lines)
  _same_metrics(res, _results(single_run))
  _same_params(tmp_path / "run", single_run)


def test_resume_on_another_mesh(single_run, tmp_path):
  """Two epochs on 8 devices (data:1,model:8: 248 table rows), stopped; the third on 4 devices
  (data:2,model:2: 248 rows too, but data:1,model:3 on 3 devices pads to 249)."""
  workdir = tmp_path / "run"
  epochs = []

  def stop_after_two():
    epochs.append(None)
    return "test stop" if len(epochs) == 2 else None

  with jax.enable_x64(True):
    with pytest.raises(train.Interrupted):
      train.train(_config(mesh="data:1,model:8"), _graph(), workdir, log=lambda s: None,
                  should_stop=stop_after_two)
    lines = []
    res = train.train(_config(mesh="data:1,model:3"), _graph(), workdir, log=lines.append,
                      devices=jax.devices()[:3])
  assert any("resumed from" in line and "epoch 2" in line for line in lines), lines
  assert res["timings"]["resumed"] and res["layout"]["mesh"] == "data:1,model:3"
  assert res["metrics"]["epochs"] == 3
  _same_metrics(res, _results(single_run))
  _same_params(workdir, single_run)


def test_resume_from_mesh_on_one_device(single_run, tmp_path):
  workdir = tmp_path / "run"
  calls = []
  with jax.enable_x64(True):
    with pytest.raises(train.Interrupted):
      train.train(_config(mesh="data:2,model:4"), _graph(), workdir, log=lambda s: None,
                  should_stop=lambda: calls.append(0) or ("stop" if len(calls) == 1 else None))
    res = train.train(_config(mesh="none"), _graph(), workdir, log=lambda s: None)
  assert res["timings"]["resumed"] and res["layout"]["mesh"] is None
  _same_params(workdir, single_run)


def test_auto_mesh_is_one_device_on_cpu():
  from hale_jax import sharding
  assert len(jax.devices()) == 8
  assert sharding.resolve_mesh(_config(mesh="auto"), 100) is None
  assert sharding.resolve_mesh(_config(mesh="none"), 100) is None
  mesh = sharding.resolve_mesh(_config(mesh="model:2"), 100)
  assert dict(mesh.shape) == {"data": 4, "model": 2}


def test_bad_mesh_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="unknown axis 'rows'"):
    _config(mesh="rows:2", dtype="float32").validate()
  workdir = tmp_path / "never-written"
  with jax.enable_x64(True), pytest.raises(ValueError, match="needs data\\*model = 6"):
    train.train(_config(mesh="data:3,model:2"), _graph(), workdir, log=lambda s: None)
  assert not workdir.exists()  # refused before anything was written


# ----------------------------------------------------------------------------- multi-host

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("graph")
  g = _graph()
  for s in ("train", "valid", "test"):
    (folder / f"{s}.txt").write_text("".join(
        f"{g.entities[h]}\t{g.relations[r]}\t{g.entities[t]}\n" for h, r, t in g.split(s)))
  return folder


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


def test_two_processes_match_one(data_dir, tmp_path):
  """2 processes x 4 CPU devices (gloo over 127.0.0.1) on a data:4,model:2 mesh that spans
  both: the same results as one process on one device."""
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
  one = tmp_path / "one"
  out = subprocess.run(_launch_args(data_dir, one, "--mesh=none"), cwd=tmp_path, env=_env(1),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rm, r1 = _results(multi), _results(one)
  assert rm["layout"] == {"mesh": "data:4,model:2", "processes": 2}
  assert rm["device"]["count"] == 8
  _same_metrics(rm, r1)
  _same_params(multi, one)
  assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit())


def test_multi_host_flags_must_come_together(data_dir, tmp_path):
  out = subprocess.run(_launch_args(data_dir, tmp_path / "w", "--num_processes=2"),
                       cwd=tmp_path, env=_env(1), capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: multi-host needs all of")

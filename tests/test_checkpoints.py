"""Checkpoints: exact resume after SIGKILL, SIGTERM, corrupt checkpoints, wall-clock resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hale_jax import checkpoints, synthetic, train

REPO = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = ["--dim=16", "--batch_size=64", "--max_epochs=30", "--max_seconds=0",
               "--eval_every=5", "--checkpoint_every_epochs=1", "--learning_rate=0.01"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("graph")
  g = synthetic.generate(seed=4, num_trees=3, branching=3, depth=4)
  for s in ("train", "valid", "test"):
    (folder / f"{s}.txt").write_text("".join(
        f"{g.entities[h]}\t{g.relations[r]}\t{g.entities[t]}\n" for h, r, t in g.split(s)))
  return folder


def _cmd(data_dir, workdir):
  return [sys.executable, "-m", "hale_jax.launch", f"--data_dir={data_dir}",
          f"--workdir={workdir}", *LAUNCH_ARGS]


def _env():
  return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


def _steps(workdir):
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _same_outcome(a, b):
  ra = json.loads((Path(a) / "results.json").read_text())
  rb = json.loads((Path(b) / "results.json").read_text())
  assert ra["metrics"]["test"] == rb["metrics"]["test"]
  assert ra["metrics"]["valid"] == rb["metrics"]["valid"]
  assert ra["metrics"]["best_epoch"] == rb["metrics"]["best_epoch"]
  assert [c["valid_mrr"] for c in ra["curve"]] == [c["valid_mrr"] for c in rb["curve"]]
  with np.load(Path(a) / "best_params.npz") as pa, np.load(Path(b) / "best_params.npz") as pb:
    assert sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
      np.testing.assert_array_equal(pa[k], pb[k])
  return ra, rb


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("runs") / "straight"
  out = subprocess.run(_cmd(data_dir, workdir), env=_env(), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr
  return workdir


def test_sigkill_mid_run_then_resume_is_bit_identical(data_dir, uninterrupted, tmp_path):
  workdir = tmp_path / "killed"
  proc = subprocess.Popen(_cmd(data_dir, workdir), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and (not _steps(workdir) or _steps(workdir)[-1] < 7):
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / "results.json").exists()
  killed_at = _steps(workdir)[-1]
  assert killed_at < 30
  out = subprocess.run(_cmd(data_dir, workdir), env=_env(), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr
  assert "resumed from" in out.stdout
  resumed, _ = _same_outcome(workdir, uninterrupted)
  assert resumed["timings"]["resumed"] is True


def test_sigterm_leaves_a_usable_checkpoint(data_dir, uninterrupted, tmp_path):
  workdir = tmp_path / "terminated"
  cmd = _cmd(data_dir, workdir)
  cmd[cmd.index("--checkpoint_every_epochs=1")] = "--checkpoint_every_epochs=0"
  proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  for line in proc.stdout:  # the first validation line: training is under way
    if line.startswith("epoch"):
      break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert "checkpoint saved" in err and "Traceback" not in err
  assert _steps(workdir), "no checkpoint after SIGTERM"
  assert not (workdir / "results.json").exists()
  cmd[cmd.index("--checkpoint_every_epochs=0")] = "--checkpoint_every_epochs=1"
  out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  assert "resumed from" in out.stdout
  _same_outcome(workdir, uninterrupted)


def _small():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _cfg(**kw):
  base = dict(model="RotE", dim=8, batch_size=128, max_epochs=6, max_seconds=0, eval_every=2,
              checkpoint_every_epochs=1, max_to_keep=3)
  base.update(kw)
  return train.Config(**base)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path):
  data = _small()
  train.train(_cfg(), data, tmp_path / "ref", log=lambda s: None)
  workdir = tmp_path / "w"
  train.train(_cfg(), data, workdir, log=lambda s: None)
  assert _steps(workdir) == [4, 5, 6]
  # Simulate a crash while finishing: no results yet, and a damaged last checkpoint.
  (workdir / "results.json").unlink()
  (workdir / "best_params.npz").unlink()
  for f in (workdir / "checkpoints" / "6" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  lines = []
  train.train(_cfg(), data, workdir, log=lines.append)
  assert any("cannot be restored" in l and "checkpoints/6" in l for l in lines), lines
  assert any("resumed from" in l and "checkpoints/5" in l for l in lines), lines
  _same_outcome(workdir, tmp_path / "ref")


def test_wall_clock_budget_counts_seconds_already_spent(tmp_path):
  data = _small()
  calls = []

  def stop_after_three_epochs():
    calls.append(1)
    return "SIGTERM" if len(calls) == 3 else None

  cfg = _cfg(max_epochs=0, max_seconds=2.0, eval_every=0, checkpoint_every_epochs=0)
  with pytest.raises(train.Interrupted, match="rerun the same command"):
    train.train(cfg, data, tmp_path / "w", log=lambda s: None,
                should_stop=stop_after_three_epochs)
  ckpt = checkpoints.Checkpointer(tmp_path / "w", log=lambda s: None)
  template = train.init_state(cfg, data)
  _, meta, step = ckpt.restore_latest({"state": template, "best_params": template.params})
  ckpt.close()
  assert step == 3 and meta["epoch"] == 3
  assert meta["config"]["model"] == "RotE" and meta["entities"] == list(data.entities)
  assert meta["relations"] == list(data.relations)
  spent = meta["train_seconds"]
  assert spent > 0
  res = train.train(cfg, data, tmp_path / "w", log=lambda s: None)
  assert res["timings"]["resumed"] is True
  assert res["timings"]["train_seconds"] > spent
  # The budget covers both processes: no more than one epoch beyond it.
  per_epoch = res["timings"]["seconds_per_epoch"]
  assert res["timings"]["train_seconds"] <= cfg.max_seconds + 3 * per_epoch + 0.5
  assert res["curve"][0]["epoch"] <= 3 or res["curve"][0]["train_seconds"] >= spent


def test_vocabulary_meta_names_or_hash(monkeypatch):
  data = _small()
  meta = checkpoints.vocabulary_meta(data)
  assert meta == {"entities": list(data.entities), "relations": list(data.relations)}
  monkeypatch.setattr(checkpoints, "VOCABULARY_IN_CHECKPOINT_MAX",
                      data.num_entities + data.num_relations - 1)
  assert checkpoints.vocabulary_meta(data) == {"vocab_sha256": checkpoints.vocabulary_hash(data)}

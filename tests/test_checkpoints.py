"""Checkpoints: exact resume after SIGKILL, SIGTERM, corrupt checkpoints, wall-clock resume."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from hale_jax import checkpoints, dataspec, options, rundata, rundir, synthetic
from hale_jax.config import Config
from hale_jax.layout import Layout
from hale_jax.program import Program
from hale_jax.loop import Interrupted, train
from hale_jax.mesh import single_device_mesh

REPO = Path(__file__).resolve().parents[1]
LAUNCH_ARGS = ["--dim=16", "--batch_size=64", "--max_epochs=15", "--max_seconds=0",
               "--eval_every=5", "--checkpoint_every_epochs=1", "--learning_rate=0.01"]


def _quiet(line):
  del line


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
  """The checkpoint steps in ``workdir`` (numbered by the optimiser steps done)."""
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _steps_per_epoch(data_dir, batch_size=64):
  """Steps of an epoch of the launcher's run on ``data_dir`` (two queries per triple)."""
  return 2 * len((Path(data_dir) / "train.txt").read_text().splitlines()) // batch_size


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
  """The reference run, trained in this process from the launcher's own flags and data spec
  (the launcher runs this same ``train``; a process of its own would add only start-up)."""
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)
  # Checkpoints change nothing but the time it takes (checkpoint_every_epochs is resumable).
  fv(["launch", f"--data_dir={data_dir}", *LAUNCH_ARGS, "--checkpoint_every_epochs=0"])
  spec = dataspec.Folder(str(Path(data_dir).resolve()))
  workdir = tmp_path_factory.mktemp("runs") / "straight"
  train(options.config_from_flags(fv), spec.load(), workdir, log=_quiet,
        data_spec=spec)
  return workdir


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_is_bit_identical(data_dir, uninterrupted, tmp_path):
  """One run, three processes: SIGKILL mid-run (checkpoints every epoch); a resume that gets
  SIGTERM after its first validation (no checkpoint by epochs: SIGTERM's own checkpoint is
  the one to continue from); a resume to the end (its final checkpoint only).  The outcome is
  the uninterrupted run's, bit for bit."""
  workdir, epoch = tmp_path / "run", _steps_per_epoch(data_dir)
  proc = subprocess.Popen(_cmd(data_dir, workdir), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and (not _steps(workdir) or _steps(workdir)[-1] < 3 * epoch):
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / "results.json").exists()
  killed_at = _steps(workdir)[-1]
  assert 3 * epoch <= killed_at < 10 * epoch, killed_at

  cmd = _cmd(data_dir, workdir)
  cmd[cmd.index("--checkpoint_every_epochs=1")] = "--checkpoint_every_epochs=0"
  proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  seen = []
  for line in proc.stdout:  # the first validation line: training is under way again
    seen.append(line)
    if line.startswith("epoch"):
      break
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert any("resumed from" in line for line in seen), seen
  assert "checkpoint saved" in err and "Traceback" not in err
  assert _steps(workdir)[-1] > killed_at, "no checkpoint after SIGTERM"
  assert not (workdir / "results.json").exists()

  out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  assert "resumed from" in out.stdout
  resumed, _ = _same_outcome(workdir, uninterrupted)
  assert resumed["timings"]["resumed"] is True


def _small():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _cfg(**kw) -> Config:
  base = dict(model="RotE", dim=8, batch_size=128, max_epochs=6, max_seconds=0, eval_every=2,
              checkpoint_every_epochs=1, max_to_keep=3)
  base.update(kw)
  return Config.make(**base)


def _garble(step_dir: Path):
  for f in (step_dir / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path):
  data = _small()
  workdir, epoch = tmp_path / "w", 2 * len(data.train) // _cfg().optim.batch_size
  train(_cfg(), data, workdir, log=_quiet)
  assert _steps(workdir) == [4 * epoch, 5 * epoch, 6 * epoch]
  shutil.copytree(workdir, tmp_path / "ref")  # the finished run is the reference
  # Simulate a crash while finishing: no results yet, and a damaged last checkpoint.
  (workdir / "results.json").unlink()
  (workdir / "best_params.npz").unlink()
  _garble(workdir / "checkpoints" / str(6 * epoch))
  lines = []
  train(_cfg(), data, workdir, log=lines.append)
  assert any("cannot be restored" in l and f"checkpoints/{6 * epoch}" in l for l in lines), lines
  assert any(l.startswith(f"resumed from {workdir / 'checkpoints' / str(5 * epoch)}: epoch 5,")
             for l in lines), lines
  _same_outcome(workdir, tmp_path / "ref")


def test_checkpointer_restores_the_newest_readable_step(tmp_path):
  """The fallback of the test above on the Checkpointer alone (no training)."""
  lines = []
  ckpt = checkpoints.Checkpointer(tmp_path, max_to_keep=2, log=lines.append)
  template = {"w": jnp.zeros((3, 2)), "n": jnp.zeros((), jnp.int32)}
  for step in (1, 2, 3):
    ckpt.save(step, {"w": jnp.full((3, 2), float(step)), "n": jnp.asarray(step)},
              {"epoch": step, "note": "x"})
  assert _steps(tmp_path) == [2, 3]  # max_to_keep
  ckpt.save(3, {"w": jnp.full((3, 2), 30.0), "n": jnp.asarray(30)}, {"epoch": 30})  # replaced
  state, meta, step, _ = ckpt.restore_latest(template)
  assert step == 3 and meta == {"epoch": 30} and int(state["n"]) == 30
  assert isinstance(state["w"], np.ndarray)  # host arrays: the caller places them
  np.testing.assert_array_equal(state["w"], 30.0)
  _garble(tmp_path / "checkpoints" / "3")
  state, meta, step, _ = ckpt.restore_latest(template)
  assert step == 2 and meta["epoch"] == 2 and meta["note"] == "x"
  np.testing.assert_array_equal(state["w"], 2.0)
  assert "checkpoints/3 cannot be restored" in lines[0], lines
  ckpt.save_best(2, {"entity": jnp.ones((4, 2))})
  ckpt.close()
  np.testing.assert_array_equal(checkpoints.restore_best(tmp_path / "best")["entity"], 1.0)
  empty = checkpoints.Checkpointer(tmp_path / "empty", log=_quiet)
  assert empty.restore_latest(template) is None
  empty.close()
  with pytest.raises(FileNotFoundError, match="no best_params.npz and no best/"):
    rundata.load_params(tmp_path / "nowhere", {"entity": (4, 2)})


@pytest.mark.slow
def test_wall_clock_budget_counts_seconds_already_spent(tmp_path):
  data = _small()
  calls = []

  def stop_after_three_epochs():
    calls.append(1)
    return "SIGTERM" if len(calls) == 3 else None

  cfg = _cfg(max_epochs=0, max_seconds=1.0, eval_every=50, checkpoint_every_epochs=0,
             segment_seconds=0)  # one segment per epoch: three polls are three epochs
  with pytest.raises(Interrupted, match="rerun the same command"):
    train(cfg, data, tmp_path / "w", log=_quiet, should_stop=stop_after_three_epochs)
  ckpt = checkpoints.Checkpointer(tmp_path / "w", log=_quiet)
  template = Program.build(cfg, Layout(single_device_mesh(), data.num_entities),
                           data.num_relations).init_state()
  _, meta, step, partial = ckpt.restore_latest({"state": template, "best_params": template.params})
  ckpt.close()
  assert step == 3 * meta["steps_per_epoch"] and meta["epoch"] == 3  # numbered by steps
  assert meta["epoch_step"] == 0 and partial is None
  assert meta["config"]["model"] == "RotE" and meta["entities"] == list(data.entities)
  assert meta["relations"] == list(data.relations)
  assert meta["layout"] == {"mesh": None, "processes": 1}
  spent = meta["train_seconds"]
  assert spent > 0
  res = train(cfg, data, tmp_path / "w", log=_quiet)
  assert res["timings"]["resumed"] is True
  assert res["timings"]["train_seconds"] > spent
  assert res["metrics"]["stop_reason"] == "training budget 1s reached"
  # The budget covers both processes: no more than one epoch beyond it.
  per_epoch = res["timings"]["seconds_per_epoch"]
  assert res["timings"]["train_seconds"] <= cfg.budget.max_seconds + 3 * per_epoch + 0.5
  # Nothing validated before the interruption (eval_every=50); after it, every 50 epochs counted
  # from the start of the run and once at the end, each point past epoch 3, numbered by steps,
  # and counting the seconds spent before it.
  assert meta["curve"] == []
  epochs = [point["epoch"] for point in res["curve"]]
  assert epochs and epochs[:-1] == list(range(50, 50 * len(epochs), 50)), epochs
  assert epochs[-1] > 3 and epochs == sorted(set(epochs)), epochs
  seconds = [point["train_seconds"] for point in res["curve"]]
  assert spent <= seconds[0] and seconds == sorted(seconds), (spent, seconds)
  assert [point["step"] for point in res["curve"]] == [e * meta["steps_per_epoch"] for e in epochs]


def test_vocabulary_meta_names_or_hash(monkeypatch):
  data = _small()
  sha = rundir.vocabulary_hash(data)
  meta = checkpoints.vocabulary_meta(data, sha)
  assert meta == {"entities": list(data.entities), "relations": list(data.relations)}
  monkeypatch.setattr(checkpoints, "VOCABULARY_IN_CHECKPOINT_MAX",
                      data.num_entities + data.num_relations - 1)
  assert checkpoints.vocabulary_meta(data, sha) == {"vocab_sha256": sha}
  # The hash covers the names and their order.
  other = synthetic.generate(seed=1, num_trees=3, branching=3, depth=4)
  assert rundir.vocabulary_hash(other) != sha and len(sha) == 64


@pytest.mark.slow
def test_vocabulary_hash_is_the_sha256_of_the_names_one_a_line(rng):
  import hashlib

  def reference(data):
    h = hashlib.sha256()
    for names in (data.entities, data.relations):
      for n in names:
        h.update(n.encode("utf-8") + b"\n")
      h.update(b"\0")
    return h.hexdigest()

  chars = list("abz019 _") + ["é", "中", "😀"]
  for count in (0, 1, 70_000):  # no names, one, more than one block
    names = tuple("".join(rng.choice(chars, rng.integers(1, 6))) + str(i) for i in range(count))
    data = synthetic.generate()
    for vocab in ({"entities": names}, {"relations": names}):
      changed = dataclasses.replace(data, **vocab)
      assert rundir.vocabulary_hash(changed) == reference(changed)
  big = synthetic.power_law(70_000, triples_per_entity=1, num_relations=3, held_out=5)
  assert rundir.vocabulary_hash(big) == reference(big)  # NumberedNames vocabularies

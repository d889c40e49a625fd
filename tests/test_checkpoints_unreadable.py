"""Checkpoints that cannot be restored: named, kept or set aside, never lost.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import jax.numpy as jnp

from hale_jax import runfiles
from hale_jax.config import Config
from hale_jax.data import load_folder
from hale_jax.loop import train
from hale_jax import checkpoints
from hale_jax.checkpoints import Checkpointer, UnreadableCheckpoints

from benchmarks import faults
from tests import helpers


def _garble(step_dir: Path) -> None:
  for f in (step_dir / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")


def _tiny_state(value: float) -> dict:
  return {"w": jnp.full((3, 2), value), "n": jnp.asarray(int(value))}


def test_unreadable_checkpoints_are_named_and_kept(tmp_path):
  template = _tiny_state(0.0)
  ckpt = Checkpointer(tmp_path, max_to_keep=3, log=helpers.quiet)
  for step in (1, 2, 3):
    ckpt.save(step, _tiny_state(step), {"epoch": step})
  ckpt.close()
  for step in (1, 2, 3):
    _garble(tmp_path / "checkpoints" / str(step))
  before = helpers.file_listing(tmp_path)
  lines = []
  ckpt = Checkpointer(tmp_path, max_to_keep=1, log=lines.append)
  with pytest.raises(UnreadableCheckpoints) as err:
    ckpt.restore_latest(template)
  msg = str(err.value)
  assert "\n" not in msg and "no checkpoint restores" in msg and "nothing was changed" in msg
  assert msg.index("step 3:") < msg.index("step 2:") < msg.index("step 1:")
  assert len(lines) == 3 and all("cannot be restored" in l for l in lines)
  assert helpers.file_listing(tmp_path) == before  # nothing moved or deleted
  ckpt.close()


def test_unreadable_newest_step_is_set_aside_for_good(tmp_path):
  template = _tiny_state(0.0)
  ckpt = Checkpointer(tmp_path, max_to_keep=2, log=helpers.quiet)
  for step in (1, 2):
    ckpt.save(step, _tiny_state(step), {"epoch": step})
  _garble(tmp_path / "checkpoints" / "2")
  garbled = helpers.file_listing(tmp_path / "checkpoints" / "2")
  lines = []
  ckpt = Checkpointer(tmp_path, max_to_keep=1, log=lines.append)
  state, meta, step, _ = ckpt.restore_latest(template)
  assert step == 1 and meta == {"epoch": 1} and int(state["n"]) == 1
  aside = tmp_path / "checkpoints" / checkpoints.UNREADABLE / "2"
  assert any("moved the unreadable checkpoint" in l and str(aside) in l for l in lines), lines
  for step in (2, 3, 4):  # later saves and max_to_keep=1 cleanups
    ckpt.save(step, _tiny_state(step), {"epoch": step})
  assert helpers.checkpoint_steps(tmp_path / "checkpoints") == [4]
  assert helpers.file_listing(aside) == garbled
  ckpt.close()


@pytest.mark.slow
def test_unrestorable_checkpoints_refuse_then_overwrite_and_set_aside(wave, data_dir, cache,
                                                                      tmp_path):
  base = wave.dirs["ckpt"]
  helpers.assert_ok(wave.procs["ckpt"])
  assert helpers.checkpoint_steps(base / "checkpoints") == [helpers.EPOCH, 2 * helpers.EPOCH, 3 * helpers.EPOCH]
  every, newest = tmp_path / "every", tmp_path / "newest"
  for copy in (every, newest):  # killed during the final evaluation: no results yet
    shutil.copytree(base, copy)
    (copy / "results.json").unlink()
    (copy / runfiles.PARAMS).unlink()
  for epoch in (1, 2, 3):
    _garble(every / "checkpoints" / str(epoch * helpers.EPOCH))
  third, second = newest / "checkpoints" / str(3 * helpers.EPOCH), newest / "checkpoints" / str(2 * helpers.EPOCH)
  _garble(third)
  garbled = helpers.file_listing(third)
  before = helpers.file_listing(every)
  refused, resumed = helpers.cli_many([
      helpers.launch_args(data_dir, every, "--max_epochs=3", "--eval_every=1", "--checkpoint_every_epochs=1",
              "--max_to_keep=3"),
      helpers.launch_args(data_dir, newest, "--max_epochs=4", "--eval_every=1",
              "--checkpoint_every_epochs=1", "--max_to_keep=1")], wave.env)
  msg = helpers.one_line_error(refused)
  assert "no checkpoint restores" in msg and "--overwrite" in msg
  assert msg.index(f"step {3 * helpers.EPOCH}:") < msg.index(f"step {2 * helpers.EPOCH}:") < \
      msg.index(f"step {helpers.EPOCH}:")
  assert helpers.file_listing(every) == before  # nothing deleted, moved or rewritten
  assert not (every / "checkpoints" / checkpoints.UNREADABLE).exists()

  helpers.assert_ok(resumed)
  out = resumed.stdout
  assert f"checkpoint {third} cannot be restored" in out
  aside = newest / "checkpoints" / checkpoints.UNREADABLE / str(3 * helpers.EPOCH)
  assert f"moved the unreadable checkpoint {third} to {aside}" in out
  assert f"resumed from {second}: epoch 2," in out
  assert helpers.checkpoint_steps(newest / "checkpoints") == [4 * helpers.EPOCH]  # later saves and cleanups (max_to_keep=1) ...
  assert helpers.file_listing(aside) == garbled  # ... left the unreadable step alone
  results = faults.strict_json((newest / "results.json").read_text())
  assert results["metrics"]["epochs"] == 4
  lines = (newest / "metrics.jsonl").read_text().splitlines()
  assert [faults.strict_json(l)["epoch"] for l in lines] == [1, 2, 3, 4]  # 3 once, retrained

  lines = []
  config = Config.make(**helpers.RUN, max_epochs=3, eval_every=1, checkpoint_every_epochs=1)
  with faults.compilation_cache(cache):  # --overwrite, in this process
    results = train(config, load_folder(data_dir), every, log=lines.append, overwrite=True,
                    data_spec={"kind": "folder", "path": str(data_dir.resolve())})
  assert not [l for l in lines if "resumed" in l or "cannot be restored" in l], lines
  assert results["metrics"]["epochs"] == 3 and results["timings"]["resumed"] is False
  assert helpers.checkpoint_steps(every / "checkpoints") == [helpers.EPOCH, 2 * helpers.EPOCH, 3 * helpers.EPOCH]

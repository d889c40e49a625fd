"""The training loop's divergence: exit status 3, and a rerun from the last finite checkpoint.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

import pytest

from hale_jax import runfiles
from hale_jax.config import Config
from hale_jax.data import load_folder
from hale_jax.loop import train
from hale_jax.checkpoints import Checkpointer
from hale_jax.loop import Diverged
from hale_jax.trainer import Trainer

from benchmarks import faults
from tests import helpers


@pytest.mark.slow
def test_nan_run_exits_3_and_a_rerun_with_a_lower_rate_starts_over(wave, data_dir, cache):
  proc, workdir = wave.procs["nan"], wave.dirs["nan"]
  msg = helpers.one_line_error(proc, status=3)
  assert msg.startswith("error: the training loss became nan at epoch 1; nothing after the "
                        "last checkpoint was saved"), msg
  assert "--learning_rate" in msg and "starts over: no checkpoint was saved before" in msg
  run = faults.strict_json((workdir / "run.json").read_text())
  assert run["diverged"] == {"epoch": 1, "loss": "nan"}
  assert not (workdir / "results.json").exists()
  assert not (workdir / runfiles.PARAMS).exists()
  assert helpers.checkpoint_steps(workdir / "checkpoints") == []
  helpers.assert_strict_outputs(workdir)
  # The same command with a sane rate (in this process: the exit status is not the point).
  config = Config.make(**{**helpers.RUN, "learning_rate": 0.005}, max_epochs=3, eval_every=1,
                       checkpoint_every_epochs=1, activation="linear2x")
  lines = []
  with faults.compilation_cache(cache):
    results = train(config, load_folder(data_dir), workdir, log=lines.append,
                    data_spec={"kind": "folder", "path": str(data_dir.resolve())})
  assert (f"the earlier run in {workdir} diverged at epoch 1; it left no checkpoint, so "
          f"training starts over") in lines
  assert results["metrics"]["epochs"] == 3 and results["config"]["learning_rate"] == 0.005
  assert "diverged" not in faults.strict_json((workdir / "run.json").read_text())
  helpers.assert_strict_outputs(workdir)


@pytest.mark.slow
def test_divergence_after_a_checkpoint_continues_from_it_and_saves_each_epoch_once(
    data_dir, cache, tmp_path, monkeypatch):
  """A loss that becomes NaN at epoch 3 (injected) ends the run with epochs 1 and 2 saved; a
  rerun with a lower rate continues from epoch 2.  Across both, with --max_to_keep=1 and a
  checkpoint per epoch, every epoch is saved exactly once (the last one too)."""
  saved = []
  real_save, real_segment = Checkpointer.save, Trainer.run_segment

  def spy(self, step, state, meta, partial=None):
    saved.append((meta["epoch"], meta["epoch_step"], step))
    return real_save(self, step, state, meta, partial)

  def nan_at_third(self, count):
    loss, seconds = real_segment(self, count)
    return (float("nan") if self.progress.epoch == 2 else loss), seconds

  monkeypatch.setattr(Checkpointer, "save", spy)
  monkeypatch.setattr(Trainer, "run_segment", nan_at_third)
  config = Config.make(**helpers.RUN, max_epochs=3, eval_every=1, checkpoint_every_epochs=1,
                       max_to_keep=1)
  data, spec = load_folder(data_dir), {"kind": "folder", "path": str(data_dir)}
  workdir = tmp_path / "run"
  with faults.compilation_cache(cache):
    with pytest.raises(Diverged) as err:
      train(config, data, workdir, log=helpers.quiet, data_spec=spec)
    assert "continues from its last finite checkpoint, epoch 2" in str(err.value)
    assert "\n" not in str(err.value)
    assert saved == [(1, 0, helpers.EPOCH), (2, 0, 2 * helpers.EPOCH)]
    assert faults.strict_json((workdir / "run.json").read_text())["diverged"] == \
        {"epoch": 3, "loss": "nan"}
    helpers.assert_strict_outputs(workdir)
    monkeypatch.setattr(Trainer, "run_segment", real_segment)
    lines = []
    results = train(config.replace(learning_rate=0.005), data, workdir, log=lines.append,
                    data_spec=spec)
  assert any(l.endswith("diverged at epoch 3; continuing from its last finite checkpoint "
                        "(epoch 2)") for l in lines), lines
  assert saved == [(1, 0, helpers.EPOCH), (2, 0, 2 * helpers.EPOCH), (3, 0, 3 * helpers.EPOCH)]
  assert results["metrics"]["epochs"] == 3 and results["timings"]["resumed"] is True
  assert helpers.checkpoint_steps(workdir / "checkpoints") == [3 * helpers.EPOCH]
  assert not list(workdir.rglob("*.tmp"))
  helpers.assert_strict_outputs(workdir)

"""Epochs in segments: sizing, the budget and checkpoints inside an epoch, exact resumes from
inside an epoch, progress lines, and stop requests (one signal saves, a second exits).

The in-process runs replace the clock of training (``Trainer.run_segment``'s seconds) by a
fixed time per step, so that where a time budget ends, how segments are sized and the
learning rate of a time-based schedule are the same on any machine; every number they train
is real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import budget as budgets
from hale_jax import callbacks, checkpoints, runfiles, stopping, synthetic, tracking
from hale_jax.callbacks import ProgressReport
from hale_jax.config import Config
from hale_jax.data import with_reciprocals
from hale_jax.layout import Layout, to_host
from hale_jax.program import Program
from hale_jax.loop import Interrupted, train
from hale_jax.mesh import single_device_mesh
from hale_jax.trainer import Progress, Trainer

from benchmarks import faults
from tests import helpers

REPO = Path(__file__).resolve().parents[1]
STEPS = 20  # steps per epoch of the graph below at batch 128 (1294 triples, 2 queries each)
STEP_SECONDS = 0.0625  # the fake clock of training (sums of it are exact in binary)


def _quiet(line):
  del line


def _graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _config(**kw) -> Config:
  base = dict(model="RotL", dim=8, batch_size=128, max_epochs=3, max_seconds=0, eval_every=1,
              learning_rate=0.01, checkpoint_every_seconds=0)
  base.update(kw)
  return Config.make(**base)


@pytest.fixture
def fake_clock(monkeypatch):
  """Training takes ``STEP_SECONDS`` per step, as far as the loop can tell."""
  real = Trainer.run_segment

  def run_segment(self, count):
    loss, _ = real(self, count)
    return loss, STEP_SECONDS * count

  monkeypatch.setattr(Trainer, "run_segment", run_segment)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return helpers.compile_cache_dir(tmp_path_factory)


class Recorder(callbacks.Callback):
  def __init__(self):
    self.reports, self.validations = [], []

  def on_progress(self, r):
    self.reports.append(r)

  def on_validation(self, v):
    self.validations.append(v)


# ------------------------------------------------------------------------------- sizing

def test_segment_sizes_follow_the_step_time_and_stop_at_the_epoch_end():
  sizer = budgets.SegmentSizer(1.0, 100)
  assert sizer.count(0) == budgets.PROBE_STEPS and sizer.seconds(0) is None  # nothing measured
  sizer.measured(budgets.PROBE_STEPS, 0.08)  # 10 ms a step: 100 steps a segment
  assert sizer.seconds(0) is None  # the probe alone: the next segment runs whatever the budget
  assert sizer.count(0) == 100
  sizer.measured(100, 5.0)  # 50 ms a step: 20 steps
  assert sizer.count(0) == 20 and sizer.count(60) == 20 and sizer.seconds(0) == pytest.approx(1)
  assert sizer.count(75) == 25  # 5 would be left, under half a segment: the rest at once
  assert sizer.count(90) == 10 and sizer.seconds(90) == pytest.approx(0.5)
  sizer.measured(1, 10.0)  # slower than a segment: one step at a time
  assert sizer.count(3) == 1
  whole = budgets.SegmentSizer(0.0, 100)  # 0: whole epochs, from where the epoch stands
  assert whole.count(0) == 100 and whole.count(30) == 70
  whole.measured(70, 7.0)  # no probe: sized from the first
  assert whole.seconds(0) == pytest.approx(10.0)


def test_budget_stops_before_a_segment_that_would_overrun_and_validates_by_its_rules():
  timed = budgets.Budget(_config(max_epochs=0, max_seconds=10.0, eval_every=0))
  assert timed.exhausted(Progress(), 50.0) is None  # the first segment always runs
  assert timed.exhausted(Progress(epoch_step=3, train_seconds=12.0), None) is None  # unknown
  assert timed.exhausted(Progress(epoch_step=3, train_seconds=12.0), 0.0) is not None
  assert timed.exhausted(Progress(epoch_step=3, train_seconds=8.0), 1.5) is None
  assert timed.exhausted(Progress(epoch_step=3, train_seconds=8.0), 2.5) == \
      "training budget 10s reached"
  epochs = budgets.Budget(_config(max_epochs=4, eval_every=2))
  assert epochs.exhausted(Progress(epoch=4), 0.0) == "max_epochs 4 reached"
  assert epochs.exhausted(Progress(epoch=3, epoch_step=7), 0.0) is None
  # Epoch rules act at epoch ends only.
  assert epochs.validate_now(Progress(epoch=2), True)
  assert not epochs.validate_now(Progress(epoch=2, epoch_step=5), False)
  assert not epochs.validate_now(Progress(epoch=3), True)
  assert epochs.validate_now(Progress(epoch=4), True)  # the end of the budget
  auto = budgets.Budget(_config(max_epochs=40, eval_every=0))
  assert auto.validate_now(Progress(epoch=2), True) and not auto.validate_now(Progress(epoch=3),
                                                                              True)
  # The time rule also inside an epoch, every 1/20 of the budget, unless validation dominates.
  assert timed.validate_now(Progress(epoch_step=5, train_seconds=0.6, last_eval_at=0.0), False)
  assert not timed.validate_now(Progress(epoch_step=5, train_seconds=0.6, last_eval_at=0.3),
                                False)
  assert not timed.validate_now(Progress(epoch_step=5, train_seconds=0.6, eval_seconds=0.4),
                                False)
  assert timed.validate_now(Progress(epoch_step=5, train_seconds=0.6, eval_seconds=0.3), False)
  policy = budgets.CheckpointPolicy(_config(checkpoint_every_epochs=2))
  assert policy.due(True, 4, False) and not policy.due(False, 4, False)
  assert policy.due(False, 3, True) and not policy.due(True, 3, False)


# ------------------------------------------------------------------- the compiled segment

def test_an_epoch_in_any_segments_is_the_epoch_bit_for_bit(rng):
  """Random segment lengths, with the epoch's draw redone at random points (as after a
  restore), give the state and loss of the epoch in one segment bit for bit; the key moves on
  only at the epoch's end."""
  data, cfg = _graph(), _config(dim=4, batch_size=256)
  layout = Layout(single_device_mesh(), data.num_entities)
  queries = with_reciprocals(data.train, data.num_relations).astype(np.int32)
  train_set = layout.place_training_set(queries)
  program = Program.build(cfg, layout, data.num_relations)
  segment, steps = program.segment(queries.shape[0])

  def run(state, plan, start, count, fresh):
    return segment(state, plan, train_set, layout.scalar(start, np.int32),
                   layout.scalar(count, np.int32), layout.scalar(fresh, np.bool_))

  whole, whole_plan = program.init_state(), program.new_plan(queries.shape[0])
  key0 = to_host(whole.key)
  parts, plan = program.init_state(), program.new_plan(queries.shape[0])
  for _ in range(2):
    whole, whole_plan, whole_loss = run(whole, whole_plan, 0, steps, True)
    start, fresh = 0, True
    while start < steps:
      count = int(min(steps - start, rng.integers(1, 4)))
      key = to_host(parts.key)
      parts, plan, loss = run(parts, plan, start, count, fresh)
      start, fresh = start + count, bool(rng.integers(0, 2))
      if start < steps:
        np.testing.assert_array_equal(to_host(parts.key), key)
        assert np.isfinite(float(loss))
    assert float(loss) == float(whole_loss)
    for a, b in zip(jax.tree.leaves(to_host(parts)), jax.tree.leaves(to_host(whole))):
      np.testing.assert_array_equal(a, b)
  assert int(parts.step) == 2 * steps
  np.testing.assert_array_equal(to_host(parts.key), jax.random.split(
      jax.random.split(jnp.asarray(key0), 3)[0], 3)[0])


# ------------------------------------------------------------------------- callbacks

def _report(epoch=1, epoch_step=5, train_seconds=30.0, max_epochs=4, max_seconds=0.0):
  return ProgressReport(epoch=epoch, epoch_step=epoch_step, steps_per_epoch=20,
                        step=20 * epoch + epoch_step, train_seconds=train_seconds,
                        eval_seconds=2.0, loss=0.5, learning_rate=0.01,
                        triples_per_second=1234.0, max_seconds=max_seconds,
                        max_epochs=max_epochs)


def test_progress_lines_inside_an_epoch():
  lines = []
  printer = callbacks.ProgressPrinter(lines.append, every=0.0)
  printer.on_start({"epoch": 0, "epoch_step": 0, "steps_per_epoch": 20, "train_seconds": 0.0,
                    "eval_seconds": 0.0})
  printer.on_progress(_report())  # 1.25 epochs in 30 s: 24 s an epoch, 2.75 left
  assert lines[-1] == ("  training epoch 2: 25.0% (5/20 steps) | loss 0.5000 | 1,234 triples/s "
                       "| train time 30.0s | time left 1m06s"), lines
  printer.on_progress(_report(epoch=2, epoch_step=0, train_seconds=48.0, max_epochs=0,
                              max_seconds=100.0))
  assert lines[-1].startswith("  training epoch 2: done | ") and lines[-1].endswith(
      "| time left 52s"), lines
  quiet = callbacks.ProgressPrinter(lines.append)  # the default: after 10 s without a line
  quiet.on_progress(_report())
  assert len(lines) == 2
  assert callbacks.ProgressPrinter(lines.append, every=None)._every == \
      callbacks.PROGRESS_EVERY_SECONDS  # pylint: disable=protected-access


def test_progress_of_older_checkpoints_and_metrics_lines_by_step(tmp_path):
  """A checkpoint from before segments lacks the new fields: they default.  metrics.jsonl
  keeps the lines up to the checkpoint's step, also inside an epoch."""
  p = Progress.from_meta({"epoch": 3, "train_seconds": 1.5, "eval_seconds": 0.1,
                          "last_eval_at": 1.5, "loss": 0.2, "best": None, "best_epoch": 3,
                          "curve": [], "config": {}})
  assert (p.epoch, p.epoch_step, p.epoch_started_at, p.learning_rate) == (3, 0, 0.0, None)
  (tmp_path / runfiles.METRICS).write_text("".join(
      json.dumps({"epoch": step // 20, "step": step}) + "\n" for step in (20, 30, 40, 47)))
  tracking.MetricsFile(tmp_path).on_start({"epoch": 1, "epoch_step": 10, "step": 30})
  kept = (tmp_path / runfiles.METRICS).read_text().splitlines()
  assert [json.loads(l)["step"] for l in kept] == [20, 30]


@pytest.fixture
def handlers():
  """Restores this process's SIGTERM and SIGINT handlers after a test installs its own."""
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  yield
  for s, h in before.items():
    signal.signal(s, h)


def test_a_second_signal_exits_at_once_or_after_the_held_work(handlers, capsys):
  stop = stopping.StopRequest()
  assert stop() is None
  stop._handle(signal.SIGTERM, None)  # pylint: disable=protected-access
  assert stop() == "SIGTERM" and stop.exit_code() == 128 + signal.SIGTERM
  with pytest.raises(SystemExit) as held:
    with stop.hold():
      stop._handle(signal.SIGTERM, None)  # pylint: disable=protected-access
      done = "the held work goes on"
  assert done and held.value.code == 128 + signal.SIGTERM
  outside = stopping.StopRequest()
  outside._handle(signal.SIGINT, None)  # pylint: disable=protected-access
  with pytest.raises(SystemExit) as now:
    outside._handle(signal.SIGINT, None)  # pylint: disable=protected-access
  assert now.value.code == 128 + signal.SIGINT
  err = capsys.readouterr().err.splitlines()
  assert err == [
      "SIGTERM received: saving a checkpoint after the running segment (send it again to "
      "stop at once)",
      "SIGTERM received again: stopping after the running segment, without a checkpoint",
      "SIGINT received: saving a checkpoint after the running segment (send it again to "
      "stop at once)",
      "SIGINT received again: stopping now, without a checkpoint"]


# ------------------------------------------------------------------ runs inside an epoch

def _numbers(workdir: Path) -> tuple:
  """What an exact resume must reproduce: the results' metrics, the validation curve (with
  its rates), metrics.jsonl and the best parameters."""
  res = faults.strict_json((workdir / "results.json").read_text())
  curve = [(c["epoch"], c["step"], c["loss"], c["valid_mrr"], c["learning_rate"])
           for c in res["curve"]]
  lines = [faults.strict_json(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  jsonl = [(r["step"], r["loss"], r["valid_mrr"], r["learning_rate"]) for r in lines]
  with np.load(workdir / "best_params.npz") as f:
    params = {k: f[k] for k in f.files}
  return res["metrics"], curve, jsonl, params


class StopAtEpoch:
  def __init__(self, epoch):
    self.epoch = epoch

  def on_validation(self, v):
    return f"epoch {self.epoch} is enough" if v.epoch == self.epoch else None


@pytest.mark.slow
def test_resume_inside_an_epoch_is_exact(fake_clock, cache, tmp_path):
  """A time-based cosine schedule (the rate of an epoch depends on the training seconds at its
  start), ended by a callback after 3 epochs.  Uninterrupted in whole epochs, and in segments
  of 5 steps (after the first of 8) stopped inside epoch 2 and resumed: the same numbers, bit
  for bit; the resumed part of epoch 2 keeps that epoch's rate."""
  data = _graph()
  cfg = _config(max_epochs=0, max_seconds=5.5, lr_schedule="cosine", segment_seconds=0.0)
  with faults.compilation_cache(cache):
    train(cfg, data, tmp_path / "whole", log=_quiet, callbacks=[StopAtEpoch(3)])
    parts = cfg.replace(segment_seconds=5 * STEP_SECONDS)
    # polls: 8, +5, +7 (the rest of epoch 1: 2 more would be under half a segment), +5, +5
    with pytest.raises(Interrupted, match=r"test stop: checkpoint saved at epoch 1, step 10 of "
                                          r"20 of epoch 2 in .*checkpoints/30; rerun"):
      train(parts, data, tmp_path / "parts", log=_quiet, callbacks=[StopAtEpoch(3)],
            should_stop=helpers.stop_after(5))
    ckpt = checkpoints.Checkpointer(tmp_path / "parts", log=_quiet)
    template = Program.build(parts, Layout(single_device_mesh(), data.num_entities),
                             data.num_relations).init_state()
    restored = ckpt.restore_latest({"state": template, "best_params": template.params},
                                   {"losses": np.zeros(0, np.float32)})
    ckpt.close()
    assert restored.step == 30 and restored.meta["epoch_step"] == 10
    assert restored.meta["epoch_started_at"] == 20 * STEP_SECONDS
    assert restored.partial["losses"].shape == (10,)
    lines = []
    train(parts, data, tmp_path / "parts", log=lines.append, callbacks=[StopAtEpoch(3)])
  assert any(l.startswith(f"resumed from {tmp_path / 'parts' / 'checkpoints' / '30'}: epoch 1, "
                          f"step 10 of 20 of epoch 2, 1.9s of training already spent")
             for l in lines), lines
  whole, resumed = _numbers(tmp_path / "whole"), _numbers(tmp_path / "parts")
  assert resumed[0] == whole[0] and whole[0]["epochs"] == 3 and whole[0]["steps"] == 60
  assert resumed[1] == whole[1] and resumed[2] == whole[2]
  rates = [c[4] for c in whole[1]]
  assert len(set(rates)) == 3 and rates[0] == 0.01  # a rate per epoch, from the clock
  for k, v in whole[3].items():
    np.testing.assert_array_equal(resumed[3][k], v)


@pytest.mark.slow
def test_time_budget_ends_inside_an_epoch_with_progress_lines(fake_clock, cache, tmp_path,
                                                              monkeypatch):
  """An epoch of 1.25 s (fake) against a budget of 0.8 s: segments of 8 steps, then 2; the one
  that would overrun is not run, so the run ends after 12 of 20 steps, validated and
  checkpointed there, with progress lines along the way.  A larger budget continues it."""
  monkeypatch.setattr(callbacks, "PROGRESS_EVERY_SECONDS", 0.0)  # a line after every segment
  data, recorder, lines = _graph(), Recorder(), []
  cfg = _config(max_epochs=0, max_seconds=0.8, eval_every=5, segment_seconds=2 * STEP_SECONDS)
  workdir = tmp_path / "run"
  with faults.compilation_cache(cache):
    res = train(cfg, data, workdir, log=lines.append, callbacks=[recorder])
  m = res["metrics"]
  assert m["stop_reason"] == "training budget 0.8s reached"
  assert (m["epochs"], m["steps"]) == (0, 12)
  assert [r.epoch_step for r in recorder.reports] == [8, 10, 12]
  assert [(v.epoch, v.epoch_step, v.step) for v in recorder.validations] == [(0, 12, 12)]
  assert [(c["epoch"], c["step"]) for c in res["curve"]] == [(0.6, 12)]
  assert "stopped after 0 epochs and 12 of 20 steps: training budget 0.8s reached" in lines
  progress = [l for l in lines if l.startswith("  training epoch 1: ")]
  assert [l.split(" | ")[0] for l in progress] == [
      "  training epoch 1: 40.0% (8/20 steps)", "  training epoch 1: 50.0% (10/20 steps)",
      "  training epoch 1: 60.0% (12/20 steps)"]
  assert [l for l in lines if l.startswith("epoch ")][0].startswith("epoch    0.60 | loss ")
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == [12]
  lines = []
  with faults.compilation_cache(cache):
    more = train(cfg.replace(max_seconds=1.6), data, workdir, log=lines.append)
  assert any(f"resumed from {workdir / 'checkpoints' / '12'}: epoch 0, step 12 of 20 of epoch 1,"
             in l for l in lines), lines
  assert more["metrics"]["epochs"] == 1 and more["timings"]["resumed"]


# ------------------------------------------------------------------------- signals

def _launch(workdir: Path, *extra: str) -> list[str]:
  """An epoch of 7,836 steps (the generated graph at batch 2) in segments of ~10 ms."""
  return [sys.executable, "-m", "hale_jax.launch", "--dataset=synthetic",
          f"--workdir={workdir}", "--dim=8", "--batch_size=2", "--max_epochs=1",
          "--max_seconds=0", "--segment_seconds=0.01", "--checkpoint_every_seconds=0", *extra]


def _started(proc: subprocess.Popen) -> list[str]:
  """The output up to the compile line (training starts right after it)."""
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.startswith("compiled in"):
      return seen
  raise AssertionError(f"no compile line: {seen}")


@pytest.mark.slow
def test_sigterm_inside_an_epoch_saves_there_and_the_rerun_resumes_there(cache, tmp_path):
  """SIGTERM as training starts: the segment under way ends, the checkpoint lies inside the
  (single, long) epoch, the exit status is 143 without a traceback; the rerun continues from
  there to the end of the epoch."""
  workdir, env = tmp_path / "run", faults.launcher_env(cache)
  proc = subprocess.Popen(_launch(workdir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _started(proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert "Traceback" not in err
  stopped = [l for l in err.splitlines() if l.startswith("stopped: SIGTERM: checkpoint saved at ")]
  assert len(stopped) == 1, err
  step = int(stopped[0].split("checkpoints/")[1].split(";")[0])
  assert 0 < step < 7836 and f"epoch 0, step {step:,} of 7,836 of epoch 1 in" in stopped[0]
  again = subprocess.run(_launch(workdir), cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr
  assert f"resumed from {workdir / 'checkpoints' / str(step)}: epoch 0, step {step:,} of 7,836 " \
         f"of epoch 1," in again.stdout
  res = faults.strict_json((workdir / "results.json").read_text())
  assert (res["metrics"]["epochs"], res["metrics"]["steps"]) == (1, 7836)


@pytest.mark.slow
def test_a_second_signal_exits_with_one_line_and_no_traceback(cache, tmp_path):
  """A second SIGTERM once the first is acknowledged, while segments of ~2 s run: it ends the
  process after the segment (or the checkpoint write) under way, without a traceback.  (Two
  signals that both arrive while Python waits on the device are one to Python's handler, so
  the second is sent after the first one's line.)"""
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_launch(workdir, "--max_epochs=50", "--segment_seconds=2"), cwd=REPO,
                          env=faults.launcher_env(cache), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _started(proc)
  time.sleep(0.5)  # past the first, short segment
  proc.send_signal(signal.SIGTERM)
  first = ""
  while "SIGTERM received: saving a checkpoint" not in first:
    line = proc.stderr.readline()
    assert line, f"no line for the first SIGTERM: {first}"
    first += line
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  err = first + err
  assert proc.returncode == 128 + signal.SIGTERM, err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert len([l for l in err.splitlines() if "SIGTERM received again: stopping" in l]) == 1, err
  assert not (workdir / "results.json").exists()


@pytest.mark.slow
def test_drawing_a_large_epoch_is_announced_and_changes_nothing(tmp_path, monkeypatch):
  """Each epoch's draw of a graph with many training queries gets a line before and after;
  the run's numbers are those of a run without the lines."""
  from hale_jax import trainer as trainer_module  # pylint: disable=import-outside-toplevel
  quiet_res = train(_config(max_epochs=2), _graph(), tmp_path / "quiet", log=lambda line: None)
  monkeypatch.setattr(trainer_module, "DRAW_NOTICE_QUERIES", 1)
  lines = []
  res = train(_config(max_epochs=2), _graph(), tmp_path / "loud", log=lines.append)
  announced = [l.split(":")[0].strip() for l in lines if "order" in l]
  assert announced == ["epoch 1"] * 2 + ["epoch 2"] * 2
  assert any("drawing the order of" in l for l in lines) and any("order drawn in" in l for l in lines)
  assert res["metrics"]["test"] == quiet_res["metrics"]["test"]
  assert [c["loss"] for c in res["curve"]] == [c["loss"] for c in quiet_res["curve"]]

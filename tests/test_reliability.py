"""Issue 33's reliability items: divergence (exit 3), the stall warning, the workdir lock,
unrestorable checkpoints, changed data files, input quirks through the launcher, the final
checkpoint written once, atomic and complete outputs, filesystem errors, reciprocal names that
cannot collide, quiet and well-worded commands.  Item 10 (no traceback) is checked wherever a
command fails.  Item 11 (downloads) is tested in test_datasets.py.

The quick tests need no training; refusals that come before any compile run through the
launcher's ``main`` in this process (:func:`_launch_in_process`).  The end-to-end ones
(``slow``) start their command-line runs in waves of concurrent processes (:func:`_cli_many`)
sharing JAX's persistent compilation cache (``faults.launcher_env``; this process uses it
too, within ``faults.compilation_cache``, where a test trains in-process); the first command
with new shapes runs alone, so that no process reads a cache entry while another writes it.
``test_fault_injection_kills_lose_nothing`` runs ``benchmarks/faults.py``.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import hale_jax
from hale_jax import checkpoints, inference, rundir, runfiles, synthetic, trained
from hale_jax.checkpoints import Checkpointer, UnreadableCheckpoints
from hale_jax.config import Config
from hale_jax.data import load_folder
from hale_jax.loop import Diverged, train
from hale_jax.rundir import WorkdirError, WorkdirLock
from hale_jax.trainer import Trainer

from benchmarks import faults
from tests import helpers

REPO = Path(__file__).resolve().parents[1]
RENAME = {"child_of": "parent_of_reverse"}  # collides with parent_of's default reciprocal name
COMMON = ("--dim=8", "--batch_size=64", "--max_seconds=0", "--learning_rate=0.01")
RUN = dict(model="RotL", dim=8, batch_size=64, max_seconds=0, learning_rate=0.01)
NUM_ENTITIES = 84
EPOCH = 13  # steps per epoch at batch 64 (418 training triples); checkpoints count steps


def _quiet(line):
  del line


def _graph():
  return synthetic.generate(seed=0, num_trees=2, branching=3, depth=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return faults.write_folder(_graph(), tmp_path_factory.mktemp("reliability-data") / "tiny",
                             RENAME)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / "jax-cache"


def _launch(data_dir, workdir, *extra) -> tuple:
  return ("launch", f"--data_dir={data_dir}", f"--workdir={workdir}", *COMMON, *extra)


def _cli_many(calls: list[tuple], env: dict) -> list[subprocess.CompletedProcess]:
  """Runs independent commands ``(module, *args)`` at the same time; their results in order."""
  procs = [subprocess.Popen([sys.executable, "-m", f"hale_jax.{c[0]}", *c[1:]], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for c in calls]
  out = []
  for call, proc in zip(calls, procs):
    stdout, stderr = proc.communicate(timeout=300)
    out.append(subprocess.CompletedProcess(call, proc.returncode, stdout, stderr))
  return out


def _one_line_error(proc, status: int = 2) -> str:
  assert proc.returncode == status, (proc.args, proc.stdout[-2000:], proc.stderr)
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  return lines[0]


def _ok(proc) -> subprocess.CompletedProcess:
  assert proc.returncode == 0, (proc.args, proc.stdout[-3000:], proc.stderr)
  assert "Traceback" not in proc.stderr, proc.stderr
  return proc


def _steps(folder: Path) -> list[int]:
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _listing(folder: Path) -> dict[str, bytes]:
  """Every file under ``folder`` with its bytes (the lock file aside)."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and p.name != runfiles.LOCK}


def _assert_strict_outputs(workdir: Path) -> None:
  """No NaN or Infinity anywhere: every JSON file parses strictly, arrays are finite."""
  for path in workdir.rglob("*"):
    if not path.is_file():
      continue
    if path.suffix == ".json" or path.name in ("metadata", "_CHECKPOINT_METADATA"):
      faults.strict_json(path.read_text(encoding="utf-8"))
    elif path.suffix == ".jsonl":
      for line in path.read_text(encoding="utf-8").splitlines():
        faults.strict_json(line)
    elif path.suffix == ".npz":
      with np.load(path) as f:
        for k in f.files:
          if f[k].dtype.kind == "f":
            assert np.all(np.isfinite(f[k])), (path, k)


def _garble(step_dir: Path) -> None:
  for f in (step_dir / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")


# ===================================================================== quick tests

def test_workdir_that_is_a_file_or_under_one_is_one_line(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("x")
  with pytest.raises(WorkdirError) as err:
    rundir.prepare_workdir(afile)
  assert "is a file, not a folder" in str(err.value) and "\n" not in str(err.value)
  with pytest.raises(WorkdirError) as err:
    rundir.prepare_workdir(afile / "run")
  assert "a part of this path is a file" in str(err.value) and "\n" not in str(err.value)
  assert afile.read_text() == "x"
  made = rundir.prepare_workdir(tmp_path / "new" / "run")
  assert made.is_dir() and not list(made.iterdir())  # the write probe is gone


def test_read_only_workdir_is_one_line(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    if os.access(ro, os.W_OK):
      pytest.skip("this user may write into a 0o555 folder (root ignores permissions)")
    with pytest.raises(WorkdirError, match="permission denied") as err:
      rundir.prepare_workdir(ro / "run")
    assert "\n" not in str(err.value)
  finally:
    ro.chmod(0o755)


def test_workdir_lock_refuses_a_second_holder(tmp_path):
  with WorkdirLock(tmp_path):
    with pytest.raises(WorkdirError) as err:
      WorkdirLock(tmp_path).__enter__()
    msg = str(err.value)
    assert "another process is training in this folder" in msg and "\n" not in msg
    assert str(tmp_path / ".lock") in msg
  with WorkdirLock(tmp_path):  # released: free again
    pass


def test_default_workdir_names_in_the_same_second_differ(monkeypatch, tmp_path):
  from hale_jax import pipeline  # pylint: disable=import-outside-toplevel

  class Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
      return cls(2026, 12, 1, 6, 0, 0)

  monkeypatch.setattr(pipeline, "datetime", types.SimpleNamespace(datetime=Frozen))
  monkeypatch.chdir(tmp_path)
  config = Config.make(**RUN, max_epochs=1)
  made = [pipeline.default_workdir("tiny", config) for _ in range(3)]
  base = Path("runs") / "tiny-RotL-8d-20261201-060000"
  assert made == [base, base.with_name(base.name + "-2"), base.with_name(base.name + "-3")]
  assert all((tmp_path / p).is_dir() for p in made)


def test_reciprocal_names_pick_a_free_suffix():
  assert trained.reciprocal_names(["X", "Y"]) == ["X_reverse", "Y_reverse"]
  assert trained.reciprocal_names(["X", "X_reverse"]) == ["X_inverse", "X_reverse_inverse"]
  taken = ["X", "X_reverse", "X_inverse", "X^-1", "X_reverse_inverse"]
  names = trained.reciprocal_names(taken)
  assert names == [n + "_reciprocal" for n in taken]
  assert not set(names) & set(taken) and len(set(names)) == len(names)


class _NoSignals:
  """Stands in for ``StopRequest``: the in-process launcher must not take pytest's signals."""

  def __call__(self):
    return None

  def exit_code(self):
    return 143


def _launch_in_process(monkeypatch, capsys, *args) -> tuple[int, str, str]:
  launch = helpers.launcher()
  monkeypatch.setattr(launch, "StopRequest", _NoSignals)
  capsys.readouterr()
  try:
    launch.FLAGS(["launch", *args])
    with pytest.raises(SystemExit) as exit_:
      launch.main(["launch"])
  finally:
    launch.FLAGS.unparse_flags()
  out = capsys.readouterr()
  return exit_.value.code, out.out, out.err


def _quirky_dataset(folder: Path) -> Path:
  """The tiny graph with a byte-order mark and a field with a trailing space (line 5)."""
  faults.write_folder(_graph(), folder)
  train_txt = folder / "train.txt"
  lines = train_txt.read_text(encoding="utf-8").splitlines(keepends=True)
  h, r, t = lines[4].rstrip("\n").split("\t")
  lines[4] = f"{h}\t{r}\t{t} \n"
  train_txt.write_text("\ufeff" + "".join(lines), encoding="utf-8")
  return folder


@pytest.mark.parametrize("case", ["workdir is a file", "workdir under a file",
                                  "read-only folder", "trailing space",
                                  "split not summing to 1"])
def test_launcher_refuses_bad_input_with_exit_2(case, data_dir, tmp_path, monkeypatch, capsys):
  """Item 9 and the launcher's data wiring: through ``launch.main`` itself (in-process; it
  exits before compiling anything)."""
  afile = tmp_path / "afile"
  afile.write_text("x")
  read_only = tmp_path / "ro"
  read_only.mkdir(mode=0o555)
  if case == "read-only folder" and os.access(read_only, os.W_OK):
    pytest.skip("this user may write into a 0o555 folder (root ignores permissions)")
  args = {"workdir is a file": [f"--data_dir={data_dir}", f"--workdir={afile}"],
          "read-only folder": [f"--data_dir={data_dir}", f"--workdir={read_only / 'run'}"],
          "workdir under a file": [f"--data_dir={data_dir}", f"--workdir={afile / 'run'}"],
          "trailing space": [f"--data_dir={_quirky_dataset(tmp_path / 'quirky')}",
                             f"--workdir={tmp_path / 'run'}"],
          "split not summing to 1": [f"--data_file={tmp_path / 'kg.csv'}", "--split=0.5,0.5,0.5",
                                     f"--workdir={tmp_path / 'run'}"]}[case]
  code, out, err = _launch_in_process(monkeypatch, capsys, *args, *COMMON, "--max_epochs=1")
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  expected = {"workdir is a file": "is a file, not a folder",
              "workdir under a file": "a part of this path is a file",
              "read-only folder": "permission denied",
              "trailing space": f"{tmp_path / 'quirky' / 'train.txt'}:5: the tail field",
              "split not summing to 1": "split '0.5,0.5,0.5': expected 3 non-negative"}[case]
  assert expected in lines[0], lines[0]
  if case == "trailing space":
    assert "--strip_whitespace" in lines[0]
  assert not (tmp_path / "run").exists()
  assert "epoch" not in out


@pytest.mark.slow
def test_full_disk_at_the_end_is_one_line_and_a_rerun_finishes(data_dir, tmp_path, monkeypatch,
                                                               capsys):
  """results.json cannot be written (disk full): one line saying to rerun; the rerun resumes
  from the last checkpoint and writes it."""
  workdir = tmp_path / "run"
  real = runfiles.write_json

  def full(path, obj):
    if Path(path).name == runfiles.RESULTS:
      raise runfiles.OutputError(f"{path}: cannot be written (no space left on the device; "
                                 f"free some space); nothing was replaced")
    real(path, obj)
  monkeypatch.setattr(runfiles, "write_json", full)
  args = [f"--data_dir={data_dir}", f"--workdir={workdir}", *COMMON, "--max_epochs=2"]
  code, _, err = _launch_in_process(monkeypatch, capsys, *args)
  assert code == 2 and len(err.strip().splitlines()) == 1, err
  assert "results.json: cannot be written (no space left" in err and "rerun the same" in err
  monkeypatch.setattr(runfiles, "write_json", real)
  launch = helpers.launcher()
  try:
    launch.FLAGS(["launch", *args])
    launch.main(["launch"])  # returns: no exit status but 0
  finally:
    launch.FLAGS.unparse_flags()
  assert "resumed from" in capsys.readouterr().out and (workdir / runfiles.RESULTS).is_file()


def _tiny_state(value: float) -> dict:
  return {"w": jnp.full((3, 2), value), "n": jnp.asarray(int(value))}


def test_unreadable_checkpoints_are_named_and_kept(tmp_path):
  template = _tiny_state(0.0)
  ckpt = Checkpointer(tmp_path, max_to_keep=3, log=_quiet)
  for step in (1, 2, 3):
    ckpt.save(step, _tiny_state(step), {"epoch": step})
  ckpt.close()
  for step in (1, 2, 3):
    _garble(tmp_path / "checkpoints" / str(step))
  before = _listing(tmp_path)
  lines = []
  ckpt = Checkpointer(tmp_path, max_to_keep=1, log=lines.append)
  with pytest.raises(UnreadableCheckpoints) as err:
    ckpt.restore_latest(template)
  msg = str(err.value)
  assert "\n" not in msg and "no checkpoint restores" in msg and "nothing was changed" in msg
  assert msg.index("step 3:") < msg.index("step 2:") < msg.index("step 1:")
  assert len(lines) == 3 and all("cannot be restored" in l for l in lines)
  assert _listing(tmp_path) == before  # nothing moved or deleted
  ckpt.close()


def test_unreadable_newest_step_is_set_aside_for_good(tmp_path):
  template = _tiny_state(0.0)
  ckpt = Checkpointer(tmp_path, max_to_keep=2, log=_quiet)
  for step in (1, 2):
    ckpt.save(step, _tiny_state(step), {"epoch": step})
  _garble(tmp_path / "checkpoints" / "2")
  garbled = _listing(tmp_path / "checkpoints" / "2")
  lines = []
  ckpt = Checkpointer(tmp_path, max_to_keep=1, log=lines.append)
  state, meta, step, _ = ckpt.restore_latest(template)
  assert step == 1 and meta == {"epoch": 1} and int(state["n"]) == 1
  aside = tmp_path / "checkpoints" / checkpoints.UNREADABLE / "2"
  assert any("moved the unreadable checkpoint" in l and str(aside) in l for l in lines), lines
  for step in (2, 3, 4):  # later saves and max_to_keep=1 cleanups
    ckpt.save(step, _tiny_state(step), {"epoch": step})
  assert _steps(tmp_path / "checkpoints") == [4]
  assert _listing(aside) == garbled
  ckpt.close()


def test_params_file_is_replaced_atomically(tmp_path, monkeypatch):
  path = tmp_path / runfiles.PARAMS
  runfiles.write_npz(path, {"entity": np.ones((3, 2), np.float32)})
  assert sorted(p.name for p in tmp_path.iterdir()) == [runfiles.PARAMS]

  def crash(f, **arrays):
    f.write(b"PK\x03\x04 half an archive")
    raise OSError("disk full")
  monkeypatch.setattr(np, "savez", crash)
  with pytest.raises(runfiles.OutputError, match="cannot be written .disk full"):
    runfiles.write_npz(path, {"entity": np.zeros((3, 2), np.float32)})
  with np.load(path) as f:  # the earlier file is whole
    np.testing.assert_array_equal(f["entity"], 1.0)
  assert sorted(p.name for p in tmp_path.iterdir()) == [runfiles.PARAMS]  # no temporary left


# =============================================================== end to end (slow)

@pytest.fixture(scope="module")
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
  quirky = _quirky_dataset(base / "quirky-data")
  dirs = {name: base / name for name in ("ckpt", "nan", "changing", "quirky")}
  (ckpt,) = _cli_many([_launch(data_dir, dirs["ckpt"], "--max_epochs=3", "--eval_every=1",
                               "--checkpoint_every_epochs=1", "--max_to_keep=3")], env)
  names = ["nan", "changing", "quirky"]
  procs = _cli_many([
      _launch(data_dir, dirs["nan"], "--max_epochs=3", "--eval_every=1",
              "--checkpoint_every_epochs=1", "--activation=linear2x", "--learning_rate=1e3"),
      _launch(changing, dirs["changing"], "--max_epochs=3", "--eval_every=1",
              "--checkpoint_every_epochs=1"),
      _launch(quirky, dirs["quirky"], "--max_epochs=2", "--strip_whitespace"),
  ], env)
  out = dict(zip(names, procs), ckpt=ckpt)
  return types.SimpleNamespace(base=base, env=env, dirs=dirs, procs=out, changing=changing,
                               quirky=quirky)


@pytest.mark.slow
def test_nan_run_exits_3_and_a_rerun_with_a_lower_rate_starts_over(wave, data_dir, cache):
  proc, workdir = wave.procs["nan"], wave.dirs["nan"]
  msg = _one_line_error(proc, status=3)
  assert msg.startswith("error: the training loss became nan at epoch 1; nothing after the "
                        "last checkpoint was saved"), msg
  assert "--learning_rate" in msg and "starts over: no checkpoint was saved before" in msg
  run = faults.strict_json((workdir / "run.json").read_text())
  assert run["diverged"] == {"epoch": 1, "loss": "nan"}
  assert not (workdir / "results.json").exists()
  assert not (workdir / runfiles.PARAMS).exists()
  assert _steps(workdir / "checkpoints") == []
  _assert_strict_outputs(workdir)
  # The same command with a sane rate (in this process: the exit status is not the point).
  config = Config.make(**{**RUN, "learning_rate": 0.005}, max_epochs=3, eval_every=1,
                       checkpoint_every_epochs=1, activation="linear2x")
  lines = []
  with faults.compilation_cache(cache):
    results = train(config, load_folder(data_dir), workdir, log=lines.append,
                    data_spec={"kind": "folder", "path": str(data_dir.resolve())})
  assert (f"the earlier run in {workdir} diverged at epoch 1; it left no checkpoint, so "
          f"training starts over") in lines
  assert results["metrics"]["epochs"] == 3 and results["config"]["learning_rate"] == 0.005
  assert "diverged" not in faults.strict_json((workdir / "run.json").read_text())
  _assert_strict_outputs(workdir)


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
  config = Config.make(**RUN, max_epochs=3, eval_every=1, checkpoint_every_epochs=1,
                       max_to_keep=1)
  data, spec = load_folder(data_dir), {"kind": "folder", "path": str(data_dir)}
  workdir = tmp_path / "run"
  with faults.compilation_cache(cache):
    with pytest.raises(Diverged) as err:
      train(config, data, workdir, log=_quiet, data_spec=spec)
    assert "continues from its last finite checkpoint, epoch 2" in str(err.value)
    assert "\n" not in str(err.value)
    assert saved == [(1, 0, EPOCH), (2, 0, 2 * EPOCH)]
    assert faults.strict_json((workdir / "run.json").read_text())["diverged"] == \
        {"epoch": 3, "loss": "nan"}
    _assert_strict_outputs(workdir)
    monkeypatch.setattr(Trainer, "run_segment", real_segment)
    lines = []
    results = train(config.replace(learning_rate=0.005), data, workdir, log=lines.append,
                    data_spec=spec)
  assert any(l.endswith("diverged at epoch 3; continuing from its last finite checkpoint "
                        "(epoch 2)") for l in lines), lines
  assert saved == [(1, 0, EPOCH), (2, 0, 2 * EPOCH), (3, 0, 3 * EPOCH)]
  assert results["metrics"]["epochs"] == 3 and results["timings"]["resumed"] is True
  assert _steps(workdir / "checkpoints") == [3 * EPOCH]
  assert not list(workdir.rglob("*.tmp"))
  _assert_strict_outputs(workdir)


@pytest.mark.slow
def test_stall_warning_for_a_saturated_activation(data_dir, cache, tmp_path):
  """--init_scale=1e3: every distance is far past where hanon is flat, so the loss never moves."""
  lines = []
  with faults.compilation_cache(cache):
    train(Config.make(**RUN, max_epochs=4, eval_every=1, init_scale=1e3), load_folder(data_dir),
          tmp_path / "run", log=lines.append)
  warnings = [l for l in lines if l.startswith("warning: the training loss")]
  assert len(warnings) == 1 and "has stalled" in warnings[0], lines
  assert "lower --init_scale" in warnings[0]
  assert lines.index(warnings[0]) > max(i for i, l in enumerate(lines) if l.startswith("epoch"))


@pytest.mark.slow
def test_launcher_input_quirks(wave):
  proc = _ok(wave.procs["quirky"])
  results = faults.strict_json((wave.dirs["quirky"] / "results.json").read_text())
  assert results["dataset"]["entities"] == NUM_ENTITIES  # no "\ufefft0", no "name "
  names = (wave.dirs["quirky"] / "entities.tsv").read_text(encoding="utf-8")
  assert "\ufeff" not in names and " \n" not in names
  assert rundir.read_run(wave.dirs["quirky"])["data"]["strip_whitespace"] is True
  lines = proc.stdout.splitlines()
  model = next(i for i, l in enumerate(lines) if l.startswith("model "))
  assert lines[0].startswith("dataset quirky-data")
  report = [l.strip() for l in lines[:model]]
  assert any(l.startswith("check") for l in report), report
  assert not any(" 0 " in l for l in report if l.startswith("check")), report


@pytest.mark.slow
def test_second_process_on_a_locked_workdir_is_refused(data_dir, cache, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  env = faults.launcher_env(cache)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom hale_jax.rundir import WorkdirLock\n"
       "lock = WorkdirLock(sys.argv[1]).__enter__()\nprint('locked', flush=True)\ntime.sleep(300)\n",
       str(workdir)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    (second,) = _cli_many([_launch(data_dir, workdir, "--max_epochs=2")], env)
    msg = _one_line_error(second)
    assert "another process is training in this folder" in msg and str(workdir) in msg
    assert holder.poll() is None  # the first keeps running
    assert not (workdir / "run.json").exists()
  finally:
    holder.kill()  # SIGKILL: the kernel drops its lock
    holder.wait()
  with WorkdirLock(workdir):  # a new process (this one) takes the workdir
    pass


@pytest.mark.slow
def test_unrestorable_checkpoints_refuse_then_overwrite_and_set_aside(wave, data_dir, cache,
                                                                      tmp_path):
  base = wave.dirs["ckpt"]
  _ok(wave.procs["ckpt"])
  assert _steps(base / "checkpoints") == [EPOCH, 2 * EPOCH, 3 * EPOCH]
  every, newest = tmp_path / "every", tmp_path / "newest"
  for copy in (every, newest):  # killed during the final evaluation: no results yet
    shutil.copytree(base, copy)
    (copy / "results.json").unlink()
    (copy / runfiles.PARAMS).unlink()
  for epoch in (1, 2, 3):
    _garble(every / "checkpoints" / str(epoch * EPOCH))
  third, second = newest / "checkpoints" / str(3 * EPOCH), newest / "checkpoints" / str(2 * EPOCH)
  _garble(third)
  garbled = _listing(third)
  before = _listing(every)
  refused, resumed = _cli_many([
      _launch(data_dir, every, "--max_epochs=3", "--eval_every=1", "--checkpoint_every_epochs=1",
              "--max_to_keep=3"),
      _launch(data_dir, newest, "--max_epochs=4", "--eval_every=1",
              "--checkpoint_every_epochs=1", "--max_to_keep=1")], wave.env)
  msg = _one_line_error(refused)
  assert "no checkpoint restores" in msg and "--overwrite" in msg
  assert msg.index(f"step {3 * EPOCH}:") < msg.index(f"step {2 * EPOCH}:") < \
      msg.index(f"step {EPOCH}:")
  assert _listing(every) == before  # nothing deleted, moved or rewritten
  assert not (every / "checkpoints" / checkpoints.UNREADABLE).exists()

  _ok(resumed)
  out = resumed.stdout
  assert f"checkpoint {third} cannot be restored" in out
  aside = newest / "checkpoints" / checkpoints.UNREADABLE / str(3 * EPOCH)
  assert f"moved the unreadable checkpoint {third} to {aside}" in out
  assert f"resumed from {second}: epoch 2," in out
  assert _steps(newest / "checkpoints") == [4 * EPOCH]  # later saves and cleanups (max_to_keep=1) ...
  assert _listing(aside) == garbled  # ... left the unreadable step alone
  results = faults.strict_json((newest / "results.json").read_text())
  assert results["metrics"]["epochs"] == 4
  lines = (newest / "metrics.jsonl").read_text().splitlines()
  assert [faults.strict_json(l)["epoch"] for l in lines] == [1, 2, 3, 4]  # 3 once, retrained

  lines = []
  config = Config.make(**RUN, max_epochs=3, eval_every=1, checkpoint_every_epochs=1)
  with faults.compilation_cache(cache):  # --overwrite, in this process
    results = train(config, load_folder(data_dir), every, log=lines.append, overwrite=True,
                    data_spec={"kind": "folder", "path": str(data_dir.resolve())})
  assert not [l for l in lines if "resumed" in l or "cannot be restored" in l], lines
  assert results["metrics"]["epochs"] == 3 and results["timings"]["resumed"] is False
  assert _steps(every / "checkpoints") == [EPOCH, 2 * EPOCH, 3 * EPOCH]


@pytest.mark.slow
def test_outputs_are_complete_and_no_temporary_file_is_left(wave):
  workdir = wave.dirs["ckpt"]
  _ok(wave.procs["ckpt"])
  assert not [p for p in workdir.rglob("*") if any(m in p.name for m in faults.TMP_MARKERS)]
  _assert_strict_outputs(workdir)
  with np.load(workdir / runfiles.PARAMS) as f:
    assert sorted(f.files) == ["alpha", "entity", "rotation", "scale", "translation"]


@pytest.mark.slow
def test_truncated_params_file_falls_back_to_the_best_checkpoint(wave, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(wave.dirs["ckpt"], copy)
  params = copy / runfiles.PARAMS
  params.write_bytes(params.read_bytes()[:len(params.read_bytes()) // 2])
  results = faults.strict_json((copy / "results.json").read_text())
  assert hale_jax.load(copy).evaluate() == results["metrics"]["test"]


@pytest.mark.slow
def test_relation_named_like_a_reciprocal(wave, tmp_path):
  workdir = wave.dirs["ckpt"]
  _ok(wave.procs["ckpt"])
  model = hale_jax.load(workdir)
  names = model.relation_names
  assert len(set(names)) == len(names) == 10
  assert "parent_of_reverse" in model.relations and "parent_of_inverse" in names
  exported = inference.export_run(workdir, "npz", tmp_path / "export.npz")
  with np.load(exported) as f:
    assert [str(n) for n in f["relation_names"]] == names
  heads = model.predict_heads("parent_of", "t0.1.2", k=4)[0]
  assert heads == model.predict_tails("t0.1.2", "parent_of_inverse", k=4)[0]
  assert "t0.1" not in [a.name for a in heads]  # its known parent is filtered out
  env = dict(wave.env)
  env.pop("JAX_PLATFORMS")  # item 13: no backend search noise either
  (by_reverse,) = _cli_many([
      ("predict", f"--workdir={workdir}", "--relation=parent_of_reverse", "--head=t0.1.2",
       "--k=4")], env)
  _ok(by_reverse)
  assert "Unable to initialize backend" not in by_reverse.stdout + by_reverse.stderr
  rows = [l.split()[1] for l in by_reverse.stdout.splitlines()[2:]]
  assert rows == [a.name for a in model.predict_tails("t0.1.2", "parent_of_reverse", k=4)[0]]
  assert by_reverse.stdout.startswith("(t0.1.2, parent_of_reverse, ?)  filtered")


@pytest.mark.slow
def test_changed_data_refuses_a_resume_but_not_a_trained_model(wave, tmp_path, monkeypatch,
                                                               capsys):
  """Resuming on changed files needs --allow_changed_data; evaluate, export and predict use the
  run folder's own triples and never look at the data files."""
  workdir, data = wave.dirs["changing"], wave.changing
  _ok(wave.procs["changing"])
  results = faults.strict_json((workdir / "results.json").read_text())
  test_txt = data / "test.txt"
  lines = test_txt.read_text().splitlines(keepends=True)
  test_txt.write_text("".join(lines[1:]))  # one test triple less; the names are unchanged
  before = _listing(workdir)
  extend = _launch(data, workdir, "--max_epochs=4", "--eval_every=1",
                   "--checkpoint_every_epochs=1")
  # The refusal, in this process (no compile happens before it).
  code, _, err = _launch_in_process(monkeypatch, capsys, *extend[1:])
  assert code == 2 and len(err.strip().splitlines()) == 1, err
  assert "the data files of this run changed since it started (test of" in err
  assert "--allow_changed_data" in err
  assert _listing(workdir) == before

  extended = tmp_path / "extended"
  shutil.copytree(workdir, extended)
  qfile = tmp_path / "queries.tsv"
  qfile.write_text("t0\tparent_of\t?\n?\tsibling_of\tt1.0\n")
  env = dict(wave.env)
  env.pop("JAX_PLATFORMS")  # the commands print no backend-search lines
  allowed = _cli_many([
      _launch(data, extended, "--max_epochs=4", "--eval_every=1", "--checkpoint_every_epochs=1",
              "--allow_changed_data"),
      ("evaluate", f"--workdir={workdir}", f"--output={tmp_path / 'metrics.json'}"),
      ("export", f"--workdir={workdir}", f"--output={tmp_path / 'allowed.npz'}"),
      ("predict", f"--workdir={workdir}", f"--queries={qfile}",
       "--format=json", f"--output={tmp_path / 'answers.json'}")], env)
  for proc in allowed:
    _ok(proc)
    assert "Unable to initialize backend" not in proc.stdout + proc.stderr
  extended_results = faults.strict_json((extended / "results.json").read_text())
  assert extended_results["metrics"]["epochs"] == 4
  assert extended_results["dataset"]["test"] == results["dataset"]["test"] - 1
  # The run folder keeps the triples it was trained on: the same test metrics as training's.
  doc = faults.strict_json((tmp_path / "metrics.json").read_text())
  assert doc["metrics"] == results["metrics"]["test"]
  with np.load(tmp_path / "allowed.npz") as f:
    assert f["entity"].shape == (NUM_ENTITIES, 8)
  answers = faults.strict_json((tmp_path / "answers.json").read_text())
  assert [a["query"] for a in answers] == [["t0", "parent_of", "?"], ["?", "sibling_of", "t1.0"]]
  assert all(len(a["answers"]) == 10 for a in answers)
  assert _listing(workdir) == before


@pytest.mark.slow
def test_fault_injection_kills_lose_nothing(tmp_path):
  """benchmarks/faults.py with 2 SIGKILLs (issue 33's acceptance runs it with 10)."""
  proc = subprocess.run([sys.executable, "-m", "benchmarks.faults", "--kills=2", "--seed=0",
                         f"--workdir={tmp_path}"], cwd=REPO, env=faults.launcher_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (proc.stdout, proc.stderr[-3000:])
  last = proc.stdout.strip().splitlines()[-1]
  kills, resumes = (int(w) for w in re.match(
      r"^(\d+) kills, (\d+) resumes \(\d+ inside an epoch\), metrics identical, 0 files "
      r"lost$", last).groups())
  assert kills == 2 and resumes <= kills, proc.stdout
  assert "0 temporary files left" in proc.stdout
  assert len([l for l in proc.stdout.splitlines() if l.startswith("kill ")]) == 2

"""The run folder as a whole: taking it (a file, a read-only folder, the lock), extending a
finished run, and data that changed under a run.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import os

import numpy as np
import pytest

from hale_jax import rundir, runfiles
from hale_jax.data import load_folder
from hale_jax.loop import train
from hale_jax.rundir import WorkdirError, WorkdirLock

from benchmarks import faults
from tests import helpers


@pytest.mark.slow
def test_extending_a_finished_run(portable, labelled_data_dir, tmp_path, tmp_path_factory):
  workdir, config, before, _ = portable
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  lines = []
  data = load_folder(labelled_data_dir)
  with faults.compilation_cache(helpers.compile_cache_dir(tmp_path_factory)):
    results = train(config.replace(max_epochs=5), data, copy, log=lines.append,
                    data_spec=helpers.folder_spec(labelled_data_dir))
  assert any("extending the finished run" in l for l in lines), lines
  third = before["metrics"]["steps"]  # the step of epoch 3's checkpoint: numbered by steps
  assert any(l.startswith(f"resumed from {copy / 'checkpoints' / str(third)}: epoch 3,")
             for l in lines), lines
  assert results["metrics"]["epochs"] == 5 and results["timings"]["resumed"] is True
  assert [c["epoch"] for c in results["curve"]] == [1, 2, 3, 4, 5]
  assert results["curve"][:3] == before["curve"]
  kept = faults.strict_json((copy / runfiles.PREVIOUS_RESULTS).read_text())
  assert kept["metrics"] == before["metrics"] and kept["metrics"]["epochs"] == 3
  metrics = [faults.strict_json(l) for l in (copy / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in metrics] == [1, 2, 3, 4, 5]
  # The same budget again: nothing to do.
  again = []
  assert train(config.replace(max_epochs=5), data, copy, log=again.append,
               data_spec=helpers.folder_spec(labelled_data_dir)) == faults.strict_json((copy / "results.json").read_text())
  assert len(again) == 1 and "already finished" in again[0], again


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


@pytest.mark.slow
def test_second_process_on_a_locked_workdir_is_refused(data_dir, cache, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  env = faults.launcher_env(cache)
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom hale_jax.rundir import WorkdirLock\n"
       "lock = WorkdirLock(sys.argv[1]).__enter__()\nprint('locked', flush=True)\ntime.sleep(300)\n",
       str(workdir)], cwd=helpers.REPO, env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    (second,) = helpers.cli_many([helpers.launch_args(data_dir, workdir, "--max_epochs=2")], env)
    msg = helpers.one_line_error(second)
    assert "another process is training in this folder" in msg and str(workdir) in msg
    assert holder.poll() is None  # the first keeps running
    assert not (workdir / "run.json").exists()
  finally:
    holder.kill()  # SIGKILL: the kernel drops its lock
    holder.wait()
  with WorkdirLock(workdir):  # a new process (this one) takes the workdir
    pass


@pytest.mark.slow
def test_changed_data_refuses_a_resume_but_not_a_trained_model(wave, tmp_path, monkeypatch,
                                                               capsys):
  """Resuming on changed files needs --allow_changed_data; evaluate, export and predict use the
  run folder's own triples and never look at the data files."""
  workdir, data = wave.dirs["changing"], wave.changing
  helpers.assert_ok(wave.procs["changing"])
  results = faults.strict_json((workdir / "results.json").read_text())
  test_txt = data / "test.txt"
  lines = test_txt.read_text().splitlines(keepends=True)
  test_txt.write_text("".join(lines[1:]))  # one test triple less; the names are unchanged
  before = helpers.file_listing(workdir)
  extend = helpers.launch_args(data, workdir, "--max_epochs=4", "--eval_every=1",
                   "--checkpoint_every_epochs=1")
  # The refusal, in this process (no compile happens before it).
  code, _, err = helpers.launch_in_process(monkeypatch, capsys, *extend[1:])
  assert code == 2 and len(err.strip().splitlines()) == 1, err
  assert "the data files of this run changed since it started (test of" in err
  assert "--allow_changed_data" in err
  assert helpers.file_listing(workdir) == before

  extended = tmp_path / "extended"
  shutil.copytree(workdir, extended)
  qfile = tmp_path / "queries.tsv"
  qfile.write_text("t0\tparent_of\t?\n?\tsibling_of\tt1.0\n")
  env = dict(wave.env)
  env.pop("JAX_PLATFORMS")  # the commands print no backend-search lines
  allowed = helpers.cli_many([
      helpers.launch_args(data, extended, "--max_epochs=4", "--eval_every=1", "--checkpoint_every_epochs=1",
              "--allow_changed_data"),
      ("evaluate", f"--workdir={workdir}", f"--output={tmp_path / 'metrics.json'}"),
      ("export", f"--workdir={workdir}", f"--output={tmp_path / 'allowed.npz'}"),
      ("predict", f"--workdir={workdir}", f"--queries={qfile}",
       "--format=json", f"--output={tmp_path / 'answers.json'}")], env)
  for proc in allowed:
    helpers.assert_ok(proc)
    assert "Unable to initialize backend" not in proc.stdout + proc.stderr
  extended_results = faults.strict_json((extended / "results.json").read_text())
  assert extended_results["metrics"]["epochs"] == 4
  assert extended_results["dataset"]["test"] == results["dataset"]["test"] - 1
  # The run folder keeps the triples it was trained on: the same test metrics as training's.
  doc = faults.strict_json((tmp_path / "metrics.json").read_text())
  assert doc["metrics"] == results["metrics"]["test"]
  with np.load(tmp_path / "allowed.npz") as f:
    assert f["entity"].shape == (helpers.NUM_ENTITIES, 8)
  answers = faults.strict_json((tmp_path / "answers.json").read_text())
  assert [a["query"] for a in answers] == [["t0", "parent_of", "?"], ["?", "sibling_of", "t1.0"]]
  assert all(len(a["answers"]) == 10 for a in answers)
  assert helpers.file_listing(workdir) == before

"""The launcher's command line: bad input is one line and exit status 2 (through ``launch.main``
in this process, before anything compiles), a full disk, input quirks.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

from pathlib import Path
import os

import pytest

from hale_jax import rundir, runfiles

from benchmarks import faults
from tests import helpers


@pytest.mark.parametrize("case", ["workdir is a file", "workdir under a file",
                                  "read-only folder", "trailing space",
                                  "split not summing to 1"])
def test_launcher_refuses_bad_input_with_exit_2(case, data_dir, tmp_path, monkeypatch, capsys):
  """Bad input and the launcher's data wiring: through ``launch.main`` itself (in-process; it
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
          "trailing space": [f"--data_dir={helpers.quirky_dataset(tmp_path / 'quirky')}",
                             f"--workdir={tmp_path / 'run'}"],
          "split not summing to 1": [f"--data_file={tmp_path / 'kg.csv'}", "--split=0.5,0.5,0.5",
                                     f"--workdir={tmp_path / 'run'}"]}[case]
  code, out, err = helpers.launch_in_process(monkeypatch, capsys, *args, *helpers.COMMON, "--max_epochs=1")
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
  args = [f"--data_dir={data_dir}", f"--workdir={workdir}", *helpers.COMMON, "--max_epochs=2"]
  code, _, err = helpers.launch_in_process(monkeypatch, capsys, *args)
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


@pytest.mark.slow
def test_launcher_input_quirks(wave):
  proc = helpers.assert_ok(wave.procs["quirky"])
  results = faults.strict_json((wave.dirs["quirky"] / "results.json").read_text())
  assert results["dataset"]["entities"] == helpers.NUM_ENTITIES  # no "\ufefft0", no "name "
  names = (wave.dirs["quirky"] / "entities.tsv").read_text(encoding="utf-8")
  assert "\ufeff" not in names and " \n" not in names
  assert rundir.read_run(wave.dirs["quirky"])["data"]["strip_whitespace"] is True
  lines = proc.stdout.splitlines()
  model = next(i for i, l in enumerate(lines) if l.startswith("model "))
  assert lines[0].startswith("dataset quirky-data")
  report = [l.strip() for l in lines[:model]]
  assert any(l.startswith("check") for l in report), report
  assert not any(" 0 " in l for l in report if l.startswith("check")), report

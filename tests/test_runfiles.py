"""The run folder's files: ownership, atomic writes, refused outputs, validated reads."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from hale_jax import dataspec, rundata, rundir, runfiles, synthetic
from hale_jax.config import Config
from hale_jax.data import DataError
from benchmarks import faults
from tests import helpers


def _one_line(err) -> str:
  msg = str(err.value)
  assert "\n" not in msg, msg
  return msg


# ----------------------------------------------------------------------------- ownership

def test_folder_kind(tmp_path):
  assert runfiles.folder_kind(tmp_path / "missing") == "new"
  assert runfiles.folder_kind(tmp_path) == "new"
  (tmp_path / runfiles.LOCK).write_text("")
  (tmp_path / f".{runfiles.RUN}.tmp-123").write_text("{")  # a crash's leftover
  assert runfiles.folder_kind(tmp_path) == "new"
  (tmp_path / runfiles.ENTITIES).write_text("someone's own\n")  # our name, not our file
  assert runfiles.folder_kind(tmp_path) == "foreign"
  assert runfiles.foreign_entries(tmp_path) == [runfiles.ENTITIES]
  (tmp_path / runfiles.RUN).write_text("{}")
  assert runfiles.folder_kind(tmp_path) == "run"


def test_clear_outputs_keeps_what_is_not_the_runs(tmp_path):
  for name in runfiles.OUTPUTS:
    if name in (runfiles.CHECKPOINTS, runfiles.BEST, runfiles.TRIPLES):
      (tmp_path / name).mkdir()
      (tmp_path / name / "x").write_text("x")
    else:
      (tmp_path / name).write_text("x")
  kept = {"notes.txt": "mine", runfiles.LOG: "log", "export.npz": "e"}
  for name, text in kept.items():
    (tmp_path / name).write_text(text)
  (tmp_path / f".{runfiles.PARAMS}.tmp-9").write_text("half")
  runfiles.clear_outputs(tmp_path)
  assert {p.name: p.read_text() for p in tmp_path.iterdir()} == kept


def test_run_json_is_cleared_last(tmp_path, monkeypatch):
  """A clearing interrupted half-way leaves a folder still known as a run folder."""
  (tmp_path / runfiles.RUN).write_text("{}")
  (tmp_path / runfiles.RESULTS).write_text("{}")
  removed = []
  real_unlink = type(tmp_path).unlink

  def unlink(self, missing_ok=False):
    removed.append(self.name)
    real_unlink(self, missing_ok=missing_ok)
  monkeypatch.setattr(type(tmp_path), "unlink", unlink)
  runfiles.clear_outputs(tmp_path)
  assert removed == [runfiles.RESULTS, runfiles.RUN]


# ----------------------------------------------------------------------------- writing

def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
  path = tmp_path / "out.txt"
  runfiles.write_text(path, "old")
  with pytest.raises(RuntimeError):
    with runfiles.atomic_write(path, "w") as f:
      f.write("half of the new")
      raise RuntimeError("killed")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  runfiles.write_json(path, {"mrr": 0.5})

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(runfiles.OutputError) as err:
    runfiles.write_json(path, {"mrr": 0.6})
  assert "no space left" in _one_line(err) and str(path) in str(err.value)
  assert json.loads(path.read_text()) == {"mrr": 0.5} and os.listdir(tmp_path) == [path.name]


def test_outputs_that_would_replace_a_run_file_are_refused(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / runfiles.RUN).write_text("{}")
  for bad in (run, run / runfiles.ENTITIES, run / runfiles.PARAMS, run / "checkpoints" / "1",
              run / runfiles.TRIPLES / "train.npy"):
    with pytest.raises(FileExistsError, match="run folder"):
      runfiles.refuse_run_file(bad)
  for fine in (run / "export.npz", run / "export_tsv", tmp_path / "entities.tsv",
               run / "mine" / "run.json"):
    runfiles.refuse_run_file(fine)


def test_links_are_not_followed(tmp_path):
  (tmp_path / "outside.tsv").write_text("x")
  (tmp_path / "link.tsv").symlink_to(tmp_path / "outside.tsv")
  with pytest.raises(ValueError, match="is a link"):
    runfiles.read_inside(tmp_path, "link.tsv")
  assert runfiles.read_inside(tmp_path, "outside.tsv").read_text() == "x"


# ----------------------------------------------------------------------------- reading back

@pytest.fixture
def kept(tmp_path):
  data = synthetic.generate(seed=0, num_trees=2, branching=2, depth=3)
  rundata.keep_data(tmp_path, data, dataspec.Synthetic())
  return tmp_path, data


def test_kept_data_reads_back_the_same(kept):
  workdir, data = kept
  back = rundata.read_data(workdir, data.name)
  assert back.entities == data.entities and back.relations == data.relations
  for split in ("train", "valid", "test"):
    np.testing.assert_array_equal(back.split(split), data.split(split))
    assert back.split(split).dtype == np.int32


@pytest.mark.parametrize("damage,needle", [
    (lambda p: p.write_text(p.read_text()[:-3]), "cut short"),
    (lambda p: p.write_text(p.read_text().replace("1\t", "7\t", 1)), ":2: expected '1<TAB>name'"),
    (lambda p: p.write_text("0\t\n"), ":1: expected"),
    (lambda p: p.write_bytes(b"0\t\xff\n"), "cannot be read"),
])
def test_damaged_vocabulary_is_one_line(kept, damage, needle):
  workdir, data = kept
  damage(workdir / runfiles.ENTITIES)
  with pytest.raises(DataError) as err:
    rundata.read_data(workdir, data.name)
  assert needle in _one_line(err) and runfiles.ENTITIES in str(err.value)


@pytest.mark.parametrize("damage,needle", [
    (lambda a: a + 1000, "entity ids outside"),
    (lambda a: np.stack([a[:, 0], a[:, 1] + 50, a[:, 2]], 1), "relation ids outside"),
    (lambda a: a[:, :2], "not integer [T, 3]"),
    (lambda a: a.astype(np.float32), "not integer [T, 3]"),
    (lambda a: a[:0], "is empty"),
])
def test_damaged_triples_are_one_line(kept, damage, needle):
  workdir, data = kept
  path = workdir / runfiles.TRIPLES / "test.npy"
  np.save(path, damage(np.load(path)))
  with pytest.raises(DataError) as err:
    rundata.read_data(workdir, data.name)
  assert needle in _one_line(err) and "test triples" in str(err.value)


def test_legacy_triples_file_still_loads(kept):
  workdir, data = kept
  with open(workdir / runfiles.LEGACY_TRIPLES, "wb") as f:
    np.savez_compressed(f, train=data.train, valid=data.valid, test=data.test)
  for p in (workdir / runfiles.TRIPLES).iterdir():
    p.unlink()
  (workdir / runfiles.TRIPLES).rmdir()
  np.testing.assert_array_equal(rundata.read_data(workdir, "x").test, data.test)


def test_check_params():
  expected = {"entity": (5, 4), "scale": (6,)}
  good = {"entity": np.zeros((5, 4), np.float32), "scale": np.ones(6, np.float32)}
  assert rundata.check_params(good, expected) is None
  assert "shape (4, 4)" in rundata.check_params({**good, "entity": good["entity"][:4]}, expected)
  assert "missing ['scale']" in rundata.check_params({"entity": good["entity"]}, expected)
  bad = good["entity"].copy()
  bad[2, 1] = np.inf
  assert "NaN or infinite" in rundata.check_params({**good, "entity": bad}, expected)
  assert "not floating" in rundata.check_params({**good, "scale": np.ones(6, np.int32)},
                                                expected)


def test_params_fall_back_to_best_and_say_so(tmp_path):
  from hale_jax import checkpoints  # pylint: disable=import-outside-toplevel
  expected = {"entity": (3, 2)}
  ckpt = checkpoints.Checkpointer(tmp_path, log=lambda line: None)
  ckpt.save_best(4, {"entity": np.full((3, 2), 7.0, np.float32)})
  ckpt.close()
  runfiles.write_npz(tmp_path / runfiles.PARAMS, {"entity": np.ones((2, 2), np.float32)})
  lines = []
  params = rundata.load_params(tmp_path, expected, lines.append)
  np.testing.assert_array_equal(params["entity"], 7.0)
  assert len(lines) == 1 and lines[0].startswith("warning:") and "shape (2, 2)" in lines[0]
  with pytest.raises(DataError) as err:
    rundata.load_params(tmp_path, {"entity": (4, 2)}, lines.append)
  assert "best_params.npz" in _one_line(err) and "best:" in str(err.value)


# ----------------------------------------------------------------------------- run.json

@pytest.mark.parametrize("text,needle", [("[]", "not a hale_jax run spec"),
                                         ('{"config": {"model": "RotL"', "cannot be read"),
                                         ('{"config": {"dim": 3}}', "not a hale_jax run spec")])
def test_bad_run_json_is_one_line(tmp_path, text, needle):
  (tmp_path / runfiles.RUN).write_text(text)
  with pytest.raises(rundir.RunFolderError) as err:
    rundir.read_run(tmp_path)
  assert needle in _one_line(err) and runfiles.RUN in str(err.value)


def test_foreign_workdir_is_refused_before_anything_is_written(tmp_path):
  (tmp_path / "metrics.jsonl").write_text("mine")
  with pytest.raises(rundir.WorkdirError, match="not a hale_jax run's") as err:
    rundir.prepare_workdir(tmp_path)
  assert "metrics.jsonl" in _one_line(err) and os.listdir(tmp_path) == ["metrics.jsonl"]


def test_unsearchable_parent_is_one_line(tmp_path, monkeypatch):
  def denied(self):
    raise PermissionError(errno.EACCES, "Permission denied", str(self))
  monkeypatch.setattr(type(tmp_path), "exists", denied)
  with pytest.raises(rundir.WorkdirError, match="may not look into it") as err:
    rundir.prepare_workdir(tmp_path / "run")
  _one_line(err)


def test_unreadable_results_are_set_aside(tmp_path):
  (tmp_path / runfiles.RESULTS).write_text('{"metrics": {"va')
  lines = []
  assert rundir.read_results(tmp_path, lines.append, set_aside=False) is None
  assert (tmp_path / runfiles.RESULTS).exists() and not lines
  assert rundir.read_results(tmp_path, lines.append) is None
  assert (tmp_path / runfiles.UNREADABLE_RESULTS).exists()
  assert not (tmp_path / runfiles.RESULTS).exists()
  assert lines[0].startswith("warning:") and runfiles.RESULTS in lines[0]


# ----------------------------------------------------------------------------- flags

@pytest.mark.parametrize("flat,needle", [
    ({"learning_rate": float("nan")}, "--learning_rate must be a finite number"),
    ({"lam": float("inf")}, "--lam must be a finite number"),
    ({"checkpoint_every_seconds": -1.0}, "--checkpoint_every_seconds must be >= 0"),
    ({"max_seconds": -5.0, "max_epochs": 2}, "--max_seconds must be >= 0"),
])
def test_config_refuses_non_finite_and_negative_values(flat, needle):
  with pytest.raises(ValueError, match=needle.replace("-", r"\-")):
    Config.make(**flat)


def test_memory_estimate_refuses_an_impossible_table():
  from hale_jax.layout import Layout  # pylint: disable=import-outside-toplevel
  config = Config.make(dim=100_000_000)
  with pytest.raises(ValueError) as err:
    Layout.for_run(config, 1_000)
  msg = _one_line(err)
  assert "--dim 100000000 with 1,000 entities" in msg and "TB" in msg and "lower --dim" in msg


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


@pytest.mark.slow
def test_outputs_are_complete_and_no_temporary_file_is_left(wave):
  workdir = wave.dirs["ckpt"]
  helpers.assert_ok(wave.procs["ckpt"])
  assert not [p for p in workdir.rglob("*") if any(m in p.name for m in faults.TMP_MARKERS)]
  helpers.assert_strict_outputs(workdir)
  with np.load(workdir / runfiles.PARAMS) as f:
    assert sorted(f.files) == ["alpha", "entity", "rotation", "scale", "translation"]

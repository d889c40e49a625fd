"""A run folder as a whole: taking it, its run spec (``run.json``), and where a run came from.

A run's ``--workdir`` holds the files :mod:`hale_jax.runfiles` names: ``run.json`` (the run
spec, written at start: the flat config, how to reload the data with the sha256 of its files,
and a hash of the vocabularies; a later run in the same folder must match it except in the
fields a resume may change, ``config.resumable_fields``), checkpoints, the data and parameters
a trained model needs (:mod:`hale_jax.rundata`), ``metrics.jsonl`` and ``results.json``.

A run writes only into a new or empty folder or a run folder: a folder of other files is
refused before anything is written, and ``--overwrite`` clears a run's own files and nothing
else.  ``run.json`` and ``results.json`` are read back strictly; an unreadable one is one line
naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import flax
import jax
import jaxlib
import numpy as np
import optax

from hale_jax._version import __version__
from hale_jax import activations, runfiles
from hale_jax.config import Config, resumable_fields
from hale_jax.data import KGData, one_line
from hale_jax.dataspec import DataSpec

# Fields a rerun may change after the earlier run diverged (besides the resumable ones).
AFTER_DIVERGENCE = frozenset({"learning_rate"})


class WorkdirError(OSError):
  """``--workdir`` cannot be used; ``str(err)`` is one line saying why and what to do."""


def _probe(workdir: Path) -> str:
  """What ``workdir`` is (``runfiles.folder_kind``), with the file-system errors as one line."""
  what = f"--workdir {workdir}"
  try:
    if workdir.exists() and not workdir.is_dir():
      raise WorkdirError(f"{what}: is a file, not a folder; choose a folder path (new or empty, "
                         f"or one that holds this run)")
    return runfiles.folder_kind(workdir)
  except PermissionError:
    raise WorkdirError(f"{what}: this process may not look into it or a folder above it "
                       f"(permission denied); choose a folder you can read and write") from None
  except NotADirectoryError:
    raise WorkdirError(f"{what}: a part of this path is a file, not a folder; choose a path "
                       f"under a folder") from None


def prepare_workdir(workdir: str | os.PathLike) -> Path:
  """Creates ``workdir`` if needed and checks that a run may write into it: a new or empty
  folder, or a run folder.  Nothing is written into a folder that fails these checks.

  Raises:
    WorkdirError: the path is a file, lies under a file, holds someone else's files, or is
      not writable.
  """
  workdir = Path(workdir)
  what = f"--workdir {workdir}"
  if _probe(workdir) == "foreign":
    shown = ", ".join(runfiles.foreign_entries(workdir))
    raise WorkdirError(f"{what}: holds files that are not a hale_jax run's ({shown} ...) and no "
                       f"{runfiles.RUN}; nothing was changed. Choose a new or empty folder")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
  except NotADirectoryError:
    raise WorkdirError(f"{what}: a part of this path is a file, not a folder; choose a path "
                       f"under a folder") from None
  except PermissionError:
    raise WorkdirError(f"{what}: this process may not write there (permission denied); choose "
                       f"a writable folder") from None
  except OSError as err:
    if err.errno == errno.EROFS:
      raise WorkdirError(f"{what}: is on a read-only file system; choose a writable folder"
                         ) from None
    raise WorkdirError(f"{what}: cannot be written ({err.strerror}); choose a writable folder"
                       ) from None
  return workdir


class WorkdirLock:
  """An exclusive lock on a workdir for the life of a run (``fcntl.flock`` on ``.lock``).

  The kernel releases it when the process ends in any way, ``kill -9`` included, so a stale
  lock never blocks a rerun.  A second process training in the same folder is refused.
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = Path(workdir) / runfiles.LOCK
    self._file = None

  def __enter__(self) -> "WorkdirLock":
    self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.close()
      raise WorkdirError(f"--workdir {self.path.parent}: another process is training in this "
                         f"folder (it holds {self.path}); wait for it to end or choose another "
                         f"--workdir") from None
    return self

  def __exit__(self, *exc) -> None:
    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
    self._file.close()


def read_json(path: Path, what: str) -> Any:
  """The JSON document of ``path``; one line naming the file when it cannot be read."""
  try:
    return json.loads(runfiles.read_inside(path.parent, path.name).read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, ValueError) as err:
    raise RunFolderError(f"{path}: cannot be read as {what} ({one_line(err)})") from None


class RunFolderError(ValueError):
  """A run folder's file is unreadable or not a hale_jax run's; one line naming it."""


def read_run(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The run spec of ``workdir`` (``run.json``), or None when there is none.

  Raises:
    RunFolderError: ``run.json`` cannot be read, or is not a hale_jax run spec.
  """
  path = Path(workdir) / runfiles.RUN
  if not path.exists() and not path.is_symlink():
    return None
  run = read_json(path, "JSON")
  config = run.get("config") if isinstance(run, dict) else None
  if not isinstance(config, dict) or not isinstance(config.get("model"), str) or not isinstance(
      config.get("dim"), int) or not isinstance(run.get("data", {}), dict):
    raise RunFolderError(f"{path}: is not a hale_jax run spec (no config with model and dim); "
                         f"move it away, or choose another --workdir")
  return run


def write_run(workdir: str | os.PathLike, run: dict[str, Any]) -> None:
  runfiles.write_json(Path(workdir) / runfiles.RUN, run)


def vocabulary_hash(data: KGData) -> str:
  """sha256 over the entity and relation names, in id order."""
  h = hashlib.sha256()
  for names in (data.entities, data.relations):
    names = iter(names)
    while block := list(itertools.islice(names, 1 << 16)):  # name + "\n" each, in blocks
      h.update(("\n".join(block) + "\n").encode("utf-8"))
    h.update(b"\0")
  return h.hexdigest()


def run_spec(config: Config, data: KGData, data_spec: DataSpec | None) -> dict[str, Any]:
  """What ``run.json`` holds: the flat config, the data spec with the sha256 of its files, the
  dataset name and the vocabulary hash."""
  return {"config": config.flat(),
          "data": data_spec.to_json() if data_spec is not None else {"kind": "unknown"},
          "data_sha256": data_spec.hashes() if data_spec is not None else {},
          "dataset": data.name, "vocab_sha256": vocabulary_hash(data)}


def changed_data(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """The data files whose sha256 differs between two run specs (``["test", ...]``)."""
  before, now = old.get("data_sha256", {}), new.get("data_sha256", {})
  return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def _comparable(key: str, value: Any) -> Any:
  """A config value as runs compare it: an activation by its current name (a run spec written
  with ``arctanh`` is the same run as one with ``two_arctanh``)."""
  if key == "activation" and isinstance(value, str) and value in activations.CHOICES:
    return activations.canonical_name(value)
  return value


def mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """What differs between two run specs, ignoring the fields a resume may change (and the
  learning rate, when the earlier run diverged)."""
  diffs = []
  if old.get("vocab_sha256") != new.get("vocab_sha256"):
    diffs.append(f"dataset vocabulary ({old.get('dataset')} vs {new.get('dataset')})")
  oc, nc = old.get("config", {}), new.get("config", {})
  free = resumable_fields() | (AFTER_DIVERGENCE if old.get("diverged") else frozenset())
  for key in sorted(set(oc) | set(nc)):
    if key not in free and _comparable(key, oc.get(key)) != _comparable(key, nc.get(key)):
      diffs.append(f"{key} ({oc.get(key)!r} vs {nc.get(key)!r})")
  return diffs


def read_results(workdir: Path, log=print, set_aside: bool = True) -> dict[str, Any] | None:
  """The finished run's ``results.json``, or None when it cannot be read: then, with
  ``set_aside``, it is moved aside (the run tests its best parameters again) with a line."""
  path = workdir / runfiles.RESULTS
  try:
    results = read_json(path, "JSON")
    if isinstance(results, dict) and isinstance(results.get("metrics"), dict):
      return results
    why = "it holds no metrics"
  except RunFolderError as err:
    why = str(err).split(" as JSON ", 1)[-1]
  if not set_aside:
    return None
  aside = workdir / runfiles.UNREADABLE_RESULTS
  os.replace(path, aside)
  log(f"warning: {path} cannot be read {why}; moved it to {aside.name} and testing the best "
      f"parameters again")
  return None


def start(workdir: str | os.PathLike, spec: dict[str, Any], overwrite: bool = False,
          write: bool = True, allow_changed_data: bool = False, log=print
          ) -> dict[str, Any] | None:
  """Prepares ``workdir`` (checked by :func:`prepare_workdir`) for the run ``spec``; returns
  earlier results if it already finished.

  A workdir holding a different run (model, dimension, dataset vocabulary, any setting a
  resume may not change) is refused unless ``overwrite``, which deletes the earlier run's own
  files (``runfiles.OUTPUTS``) and nothing else; so is one whose data files changed, unless
  ``allow_changed_data``.  ``write=False`` (the other processes of a multi-host run) only
  checks; process 0 writes.
  """
  workdir = Path(workdir)
  if overwrite and not write:
    return None
  if overwrite and runfiles.folder_kind(workdir) == "run":
    read_run(workdir)  # a run.json that is not a hale_jax run's is refused, not deleted
    runfiles.clear_outputs(workdir)
  old = read_run(workdir)
  results = workdir / runfiles.RESULTS
  if old is not None:
    diffs = mismatch(old, spec)
    if diffs:
      raise FileExistsError(f"{workdir}: holds a different run ({'; '.join(diffs)}); choose "
                            f"another --workdir or pass --overwrite to replace it")
    changed = changed_data(old, spec)
    if changed and not allow_changed_data:
      raise FileExistsError(f"{workdir}: the data files of this run changed since it started "
                            f"({', '.join(changed)} of {spec['data']}); restore them, pass "
                            f"--allow_changed_data to go on with the new files, or "
                            f"--overwrite to start over")
    if results.exists():
      if not budget_grew(old["config"], spec["config"]):
        finished = read_results(workdir, log, set_aside=write)
        if finished is not None:
          return finished
      elif write:  # extend the finished run: keep its results beside, train on
        os.replace(results, workdir / runfiles.PREVIOUS_RESULTS)
  if write:
    workdir.mkdir(parents=True, exist_ok=True)
    write_run(workdir, spec)
  return None


def budget_grew(old: dict[str, Any], new: dict[str, Any]) -> bool:
  """Whether ``new`` (a flat config) allows more training than ``old``: a larger
  ``max_epochs`` or ``max_seconds``, or one of them lifted (0) where it was set."""
  def more(key: str) -> bool:
    before, now = old.get(key, 0) or 0, new.get(key, 0) or 0
    return before > 0 and (now == 0 or now > before)
  return more("max_epochs") or more("max_seconds")


def record_divergence(workdir: str | os.PathLike, spec: dict[str, Any], epoch: int,
                      loss: float) -> None:
  """Marks the run in ``run.json`` as diverged at ``epoch`` (a rerun may then change the
  learning rate, :data:`AFTER_DIVERGENCE`)."""
  write_run(workdir, {**spec, "diverged": {"epoch": epoch, "loss": repr(loss)}})


def versions() -> dict[str, str]:
  """The library versions a run used."""
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "optax": optax.__version__, "flax": flax.__version__,
          "numpy": np.__version__, "hale_jax": __version__}


def device() -> dict[str, Any]:
  devs = jax.devices()
  return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs)}


def device_phrase(d: dict[str, Any]) -> str:
  """:func:`device` in words: ``1 cpu``, ``8 NVIDIA H100 80GB HBM3 (gpu)``."""
  kind, platform = str(d.get("kind", "")), str(d.get("platform", ""))
  what = platform if kind.lower() in ("", platform.lower()) else f"{kind} ({platform})"
  return f"{d.get('count', 1)} {what}"


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
  """The source checkout's commit, with ``-dirty`` if it has uncommitted changes.

  Taken once per process, at its first run: Python does not reload modules changed on disk
  later, so a long-lived process keeps training the code it loaded and each of its runs
  records that code's commit."""
  here = Path(__file__).resolve().parent
  try:
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                          text=True, cwd=here, timeout=5).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=here, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return (head + ("-dirty" if dirty else "")) if head else None

"""Run folders: what a run writes besides its checkpoints, and where it came from.

A run's ``--workdir`` holds

- ``run.json``        the run spec, written at start: the flat config, how to reload the data,
                      and a hash of the vocabularies; a later run in the same folder must match
                      it except in the fields a resume may change (``config.resumable_fields``);
- ``checkpoints/``, ``best/``   orbax checkpoints (``hale_jax.checkpoints``);
- ``entities.tsv``, ``relations.tsv``   the id -> name vocabularies;
- ``best_params.npz``, ``results.json``   at the end.

Every JSON file is written strictly (no NaN or Infinity) through a temporary file and a rename,
so it is never half-written.
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
import shutil
import subprocess
from pathlib import Path
from typing import Any

import flax
import jax
import jaxlib
import numpy as np
import optax

from hale_jax._version import __version__
from hale_jax import datasets
from hale_jax.config import Config, resumable_fields
from hale_jax.data import KGData

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
PREVIOUS_RESULTS_FILE = "results.before-extension.json"
PARAMS_FILE = "best_params.npz"
LOCK_FILE = ".lock"
_OUTPUTS = ("checkpoints", "best", RUN_FILE, RESULTS_FILE, PARAMS_FILE, "metrics.jsonl",
            "triples.npz", PREVIOUS_RESULTS_FILE)
# Fields a rerun may change after the earlier run diverged (besides the resumable ones).
AFTER_DIVERGENCE = frozenset({"learning_rate"})


class WorkdirError(OSError):
  """``--workdir`` cannot be used; ``str(err)`` is one line saying why and what to do."""


def prepare_workdir(workdir: str | os.PathLike) -> Path:
  """Creates ``workdir`` if needed and checks that this process can write into it.

  Raises:
    WorkdirError: the path is a file, lies under a file, or is not writable.
  """
  workdir = Path(workdir)
  what = f"--workdir {workdir}"
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"{what}: is a file, not a folder; choose a folder path (new or empty, "
                       f"or one that holds this run)")
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
    self.path = Path(workdir) / LOCK_FILE
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


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented strict JSON through a temporary file and a rename."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
  os.replace(tmp, path)


def read_run(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The ``run.json`` of ``workdir``, or None."""
  path = Path(workdir) / RUN_FILE
  return json.loads(path.read_text()) if path.exists() else None


def write_run(workdir: str | os.PathLike, run: dict[str, Any]) -> None:
  write_json(Path(workdir) / RUN_FILE, run)


def vocabulary_hash(data: KGData) -> str:
  """sha256 over the entity and relation names, in id order."""
  h = hashlib.sha256()
  for names in (data.entities, data.relations):
    names = iter(names)
    while block := list(itertools.islice(names, 1 << 16)):  # name + "\n" each, in blocks
      h.update(("\n".join(block) + "\n").encode("utf-8"))
    h.update(b"\0")
  return h.hexdigest()


def run_spec(config: Config, data: KGData, data_spec: dict[str, Any] | None) -> dict[str, Any]:
  """What ``run.json`` holds: the flat config, the data spec with the sha256 of its files, the
  dataset name and the vocabulary hash."""
  data_spec = data_spec or {"kind": "unknown"}
  return {"config": config.flat(), "data": data_spec, "data_sha256": datasets.spec_hashes(data_spec),
          "dataset": data.name, "vocab_sha256": vocabulary_hash(data)}


def changed_data(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """The data files whose sha256 differs between two run specs (``["test", ...]``)."""
  before, now = old.get("data_sha256", {}), new.get("data_sha256", {})
  return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """What differs between two run specs, ignoring the fields a resume may change (and the
  learning rate, when the earlier run diverged)."""
  diffs = []
  if old.get("vocab_sha256") != new.get("vocab_sha256"):
    diffs.append(f"dataset vocabulary ({old.get('dataset')} vs {new.get('dataset')})")
  oc, nc = old.get("config", {}), new.get("config", {})
  free = resumable_fields() | (AFTER_DIVERGENCE if old.get("diverged") else frozenset())
  for key in sorted(set(oc) | set(nc)):
    if key not in free and oc.get(key) != nc.get(key):
      diffs.append(f"{key} ({oc.get(key)!r} vs {nc.get(key)!r})")
  return diffs


def clear_outputs(workdir: str | os.PathLike) -> None:
  """Deletes an earlier run's outputs (for ``--overwrite``)."""
  for name in _OUTPUTS:
    p = Path(workdir) / name
    if p.is_dir():
      shutil.rmtree(p)
    elif p.exists():
      p.unlink()


def start(workdir: str | os.PathLike, spec: dict[str, Any], overwrite: bool = False,
          write: bool = True, allow_changed_data: bool = False) -> dict[str, Any] | None:
  """Prepares ``workdir`` for the run ``spec``; returns earlier results if it already finished.

  A workdir holding a different run (model, dimension, dataset vocabulary, any setting a
  resume may not change) is refused unless ``overwrite``, which deletes the earlier outputs;
  so is one whose data files changed, unless ``allow_changed_data``.  ``write=False`` (the
  other processes of a multi-host run) only checks; process 0 writes.
  """
  workdir = Path(workdir)
  if overwrite and not write:
    return None
  if overwrite:
    clear_outputs(workdir)
  old = read_run(workdir)
  results = workdir / RESULTS_FILE
  if old is None and results.exists():
    raise FileExistsError(f"{workdir}: holds results.json of an earlier run; choose another "
                          f"--workdir or pass --overwrite to replace it")
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
        return json.loads(results.read_text())
      if write:  # extend the finished run: keep its results beside, train on
        os.replace(results, workdir / PREVIOUS_RESULTS_FILE)
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


def save_params(path: str | os.PathLike, params: dict[str, np.ndarray]) -> None:
  """Writes host parameters as an npz file, through a temporary file and a rename."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:  # a file object: numpy appends no ".npz" to the name
    np.savez(f, **params)
  os.replace(tmp, path)


def versions() -> dict[str, str]:
  """The library versions a run used."""
  return {"python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "optax": optax.__version__, "flax": flax.__version__,
          "numpy": np.__version__, "hale_jax": __version__}


def device() -> dict[str, Any]:
  devs = jax.devices()
  return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs)}


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

"""The files of a run folder: each name defined once, what a run owns, and atomic writes.

A run's ``--workdir`` is written by hale_jax alone.  This module says which entries are a
run's (:data:`OUTPUTS`, cleared by ``--overwrite``; :data:`KEPT`, written into the folder by
other commands and left alone), tells a run folder from a folder of someone else's files
(:func:`folder_kind`), and writes every file through a temporary file in the same folder,
``fsync`` and a rename (:func:`atomic_write`), so that a crash or a full disk leaves either the
old file or the new one, never half of one.  An output path that would replace a run's own
file is refused (:func:`refuse_run_file`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

RUN = "run.json"
RESULTS = "results.json"
PREVIOUS_RESULTS = "results.before-extension.json"
UNREADABLE_RESULTS = "results.unreadable.json"
PARAMS = "best_params.npz"
METRICS = "metrics.jsonl"
ENTITIES = "entities.tsv"
RELATIONS = "relations.tsv"
LABELS = {"entity": "entity_labels.tsv", "relation": "relation_labels.tsv"}
TRIPLES = "triples"                  # folder of train.npy, valid.npy, test.npy (int32 [T, 3])
NEGATIVES = "negatives"              # folder of valid.npy, test.npy (int32 [n, 2, K]), if given
LEGACY_TRIPLES = "triples.npz"       # the same, compressed, in folders written before
CHECKPOINTS = "checkpoints"
BEST = "best"
LOCK = ".lock"
LOG = "log.txt"                      # a sweep trial's log
EXPORTS = ("export.npz", "export_tsv")

# What a run writes and ``--overwrite`` clears; run.json goes last, so that a folder whose
# clearing was interrupted is still known as a run folder.
OUTPUTS = (CHECKPOINTS, BEST, RESULTS, PREVIOUS_RESULTS, UNREADABLE_RESULTS, PARAMS, METRICS, ENTITIES, RELATIONS,
           *LABELS.values(), TRIPLES, NEGATIVES, LEGACY_TRIPLES, RUN)
# Written into a run folder by hale_jax but not by the run itself: kept by ``--overwrite``.
KEPT = (LOCK, LOG, *EXPORTS)
_TMP_MARK = ".tmp-"


class OutputError(OSError):
  """A file cannot be written; ``str(err)`` is one line saying which and what to do."""


def _is_temporary(name: str) -> bool:
  """A temporary file of :func:`atomic_write` (or a write probe) that a crash left behind."""
  return (name.startswith(".") and _TMP_MARK in name) or name.startswith(".write-test-")


def folder_kind(folder: str | os.PathLike) -> str:
  """``"new"`` (missing, or holding nothing but a lock or leftover temporary files), ``"run"``
  (holds ``run.json``) or ``"foreign"`` (holds other files and no ``run.json``: someone
  else's folder, which a run must not write into)."""
  folder = Path(folder)
  if not folder.exists():
    return "new"
  names = [p.name for p in folder.iterdir()]
  if RUN in names:
    return "run"
  if all(n in (LOCK, LOG) or _is_temporary(n) for n in names):
    return "new"
  return "foreign"


def foreign_entries(folder: str | os.PathLike, limit: int = 3) -> list[str]:
  """A few entries of ``folder`` that no run writes (for messages)."""
  names = sorted(p.name for p in Path(folder).iterdir())
  return [n for n in names if n not in (LOCK, LOG) and not _is_temporary(n)][:limit]


def clear_outputs(folder: str | os.PathLike) -> None:
  """Deletes a run's :data:`OUTPUTS` (and leftover temporary files), nothing else."""
  folder = Path(folder)
  for p in folder.iterdir():
    if _is_temporary(p.name):
      p.unlink(missing_ok=True)
  for name in OUTPUTS:
    p = folder / name
    if p.is_dir() and not p.is_symlink():
      shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
      p.unlink()


def why(err: OSError) -> str:
  """What an ``OSError`` of a write means for the user, and what to do."""
  if err.errno == errno.ENOSPC:
    return "no space left on the device; free some space"
  if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return "not writable there; choose a writable place"
  return f"{err.strerror or str(err) or type(err).__name__}; check the path and free space"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
  """A file object whose contents replace ``path`` only once fully written and synced.

  Writes ``.<name>.tmp-<pid>`` in the same folder, ``fsync``s it and renames it over
  ``path``.  On any error the temporary file is removed and ``path`` is left as it was;
  ``OSError`` becomes a one-line :class:`OutputError`.
  """
  path = Path(path)
  tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
  try:
    with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as err:
    tmp.unlink(missing_ok=True)
    raise OutputError(f"{path}: cannot be written ({why(err)}); nothing was replaced") from None
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_write(path, "w") as f:
    f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as indented strict JSON (no NaN or Infinity), atomically."""
  text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
  write_text(path, text)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
  """Writes arrays as an uncompressed npz file, atomically."""
  with atomic_write(path) as f:  # a file object: numpy appends no ".npz" to the name
    np.savez(f, **arrays)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  with atomic_write(path) as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def write_lines(path: str | os.PathLike, lines: Callable[[], Iterator[str]]) -> None:
  """Writes the lines ``lines()`` yields (each ending in a newline), atomically."""
  with atomic_write(path, "w") as f:
    f.writelines(lines())


def read_inside(folder: str | os.PathLike, name: str) -> Path:
  """``folder/name``, refused when it is a link (a run folder's files are its own: a link could
  make loading read anything on the machine, or hang on a device file)."""
  path = Path(folder) / name
  if path.is_symlink():
    raise ValueError(f"{path}: is a link; a run folder's files must be regular files inside "
                     f"it (copy the file in place of the link)")
  return path


def refuse_run_file(output: str | os.PathLike) -> None:
  """Refuses an output path that would replace a run's own file: a run folder itself, or one
  of its :data:`OUTPUTS` (or anything inside its checkpoints, best parameters or triples).
  Any folder on the path that holds a ``run.json`` counts as a run folder."""
  out = Path(output).resolve()
  for folder in (out, *out.parents):
    if not (folder / RUN).is_file():
      continue
    parts = out.relative_to(folder).parts
    if not parts or parts[0] in OUTPUTS:
      what = "is the run folder" if not parts else f"is {parts[0]} of the run"
      raise FileExistsError(f"{output}: {what} in {folder}; writing there would break that "
                            f"run folder. Choose an --output outside it, or a new name inside it")

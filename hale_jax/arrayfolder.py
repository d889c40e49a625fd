"""A dataset folder of arrays: triples and given negatives as ``.npy``, names as text.

The installed form of a benchmark released as arrays rather than text (OGB's ``.pt`` splits,
converted once on download by :mod:`hale_jax.ogb_data`).  It loads without parsing anything:
the arrays are memory-mapped, so even the 4 GB of ogbl-wikikg2's negatives cost nothing until
they are ranked against.

===========================================  ==================================================
``entities.txt``, ``relations.txt``          one name per line; line ``i`` (from 0) names id ``i``
``train.npy``, ``valid.npy``, ``test.npy``   int32 ``[T, 3]``: head, relation, tail ids
``valid_negatives.npy``,                     (optional) int32 ``[n, 2, K]``: the candidates the
``test_negatives.npy``                       split's ``i``-th triple is ranked against (OGB's
                                             protocol): ``[i, 0]`` its ``K`` head negatives,
                                             ``[i, 1]`` its ``K`` tail negatives
``archive.sha256``                           (optional) ``sha256  name`` of the archive it came
                                             from, as ``sha256sum`` prints it
===========================================  ==================================================

Everything is checked on loading (shapes, integer types, ids within the vocabularies, names
unique and free of tabs); a failure is one :class:`~hale_jax.data.DataError` line naming the
file.  :func:`check_negatives` is the check a run folder's copy of the negatives gets too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hale_jax.data import SPLITS, DataError, KGData, file_sha256, one_line

ENTITIES = "entities.txt"
RELATIONS = "relations.txt"
ARCHIVE_SHA256 = "archive.sha256"
HELD_OUT = ("valid", "test")
_REFETCH = "delete the folder so that the dataset is downloaded and converted again"


def split_file(split: str) -> str:
  return f"{split}.npy"


def negatives_file(split: str) -> str:
  return f"{split}_negatives.npy"


def check_negatives(neg: np.ndarray, count: int, num_entities: int) -> str | None:
  """What is wrong with a split's negatives (``count`` triples, ids below ``num_entities``),
  or None: they must be integer ``[count, 2, K]`` with ``K >= 1``."""
  if neg.ndim != 3 or neg.shape[0] != count or neg.shape[1] != 2 or neg.shape[2] < 1:
    return f"have shape {neg.shape}, expected [{count}, 2, K] (head and tail candidates)"
  if neg.dtype.kind not in "iu":
    return f"are {neg.dtype}, not integer ids"
  if count and (neg.min() < 0 or neg.max() >= num_entities):
    return f"hold entity ids outside [0, {num_entities})"
  return None


def check_triples(a: np.ndarray, num_entities: int, num_relations: int) -> str | None:
  """What is wrong with a split's ``[T, 3]`` id triples, or None."""
  if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind not in "iu":
    return f"is {a.dtype} of shape {a.shape}, not integer [T, 3]"
  if len(a) and (a[:, [0, 2]].min() < 0 or a[:, [0, 2]].max() >= num_entities):
    return f"holds entity ids outside [0, {num_entities})"
  if len(a) and (a[:, 1].min() < 0 or a[:, 1].max() >= num_relations):
    return f"holds relation ids outside [0, {num_relations})"
  return None


def write_names(path: Path, names: Sequence[str]) -> None:
  """One name per line (refusing names that a line cannot hold)."""
  for i, name in enumerate(names):
    if not name or "\n" in name or "\t" in name or "\r" in name:
      raise DataError(f"{path}: name {i} ({name!r}) is empty or holds a tab or line break")
  if len(set(names)) != len(names):
    raise DataError(f"{path}: the names are not unique; each id needs a name of its own")
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.writelines(f"{name}\n" for name in names)


def read_names(path: Path) -> tuple[str, ...]:
  """The names of a one-name-per-line file, checked: non-empty, no tab, unique."""
  try:
    text = path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as err:
    raise DataError(f"{path}: cannot be read ({one_line(err)}); {_REFETCH}") from None
  names = text.split("\n")
  if not text.endswith("\n") or len(names) < 2:
    raise DataError(f"{path}: empty or cut short (no final line break); {_REFETCH}")
  names.pop()
  for number, name in enumerate(names, start=1):
    if not name or "\t" in name or "\r" in name:
      raise DataError(f"{path}:{number}: an empty name or one with a tab; {_REFETCH}")
  if len(set(names)) != len(names):
    raise DataError(f"{path}: holds a name twice; {_REFETCH}")
  return tuple(names)


def _load_array(folder: Path, fname: str) -> np.ndarray:
  try:
    return np.load(folder / fname, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError, EOFError) as err:
    raise DataError(f"{folder / fname}: cannot be read ({one_line(err)[:160]}); "
                    f"{_REFETCH}") from None


def _negatives(folder: Path, splits: dict[str, np.ndarray], num_entities: int
               ) -> dict[str, np.ndarray] | None:
  present = [s for s in HELD_OUT if (folder / negatives_file(s)).exists()]
  if not present:
    return None
  if len(present) != len(HELD_OUT):
    missing = [negatives_file(s) for s in HELD_OUT if s not in present]
    raise DataError(f"{folder}: lacks {', '.join(missing)} beside the other negatives; "
                    f"{_REFETCH}")
  out = {}
  for s in HELD_OUT:
    neg = _load_array(folder, negatives_file(s))
    problem = check_negatives(neg, len(splits[s]), num_entities)
    if problem:
      raise DataError(f"{folder / negatives_file(s)}: the {s} negatives {problem}; {_REFETCH}")
    out[s] = neg if neg.dtype == np.int32 else np.asarray(neg, np.int32)
  return out


class ArrayFolder:
  """How :mod:`hale_jax.datasets` finds, loads and fingerprints a folder of arrays."""
  files = (*(split_file(s) for s in SPLITS), ENTITIES, RELATIONS)
  expects = f"{', '.join(files[:-1])} and {files[-1]}"

  @staticmethod
  def complete(folder: Path) -> bool:
    return all((Path(folder) / n).is_file() for n in ArrayFolder.files)

  @staticmethod
  def load(folder: str | os.PathLike, name: str, log: Callable[[str], None] | None = None
           ) -> KGData:
    """The folder's data (memory-mapped arrays, checked); ``log`` is unused (no text to read)."""
    del log
    folder = Path(folder)
    entities = read_names(folder / ENTITIES)
    relations = read_names(folder / RELATIONS)
    splits = {}
    for s in SPLITS:
      a = _load_array(folder, split_file(s))
      problem = check_triples(a, len(entities), len(relations))
      if problem is None and not len(a):
        problem = "is empty"
      if problem:
        raise DataError(f"{folder / split_file(s)}: the {s} triples {problem}; {_REFETCH}")
      splits[s] = a if a.dtype == np.int32 else np.asarray(a, np.int32)
    negatives = _negatives(folder, splits, len(entities))
    return KGData(name, entities, relations, source=str(folder.resolve()),
                  negatives=negatives, **splits)

  @staticmethod
  def hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file of the folder, by name (what ``run.json`` keeps)."""
    folder = Path(folder)
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}

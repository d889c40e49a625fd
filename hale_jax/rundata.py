"""What a run folder keeps for its trained model, written atomically and read back validated.

At the start of a run :func:`keep_data` writes the vocabularies (``entities.tsv``,
``relations.tsv``: ``id<TAB>name``), the int32 triples (``triples/{train,valid,test}.npy``,
memory-mapped on reading, so a large graph loads without re-reading text), the given negatives
of a dataset that ships them (``negatives/{valid,test}.npy``, int32 ``[n, 2, K]``, so that the
OGB protocol ranks from the folder alone) and the dataset's label files when it has them; at
the end the loop writes ``best_params.npz``.

Reading back trusts nothing: the vocabularies must be numbered lines, the triples integer
``[T, 3]`` arrays whose ids lie within the vocabularies, the negatives ``[n, 2, K]`` ids of as
many triples, the parameters the tables the run's
config implies, of those shapes, finite.  A failure is one line naming the file; for the
parameters the ``best/`` checkpoint is the fallback (said in a line).  Every file is read from
inside the folder: a link is refused (labels: ignored with a warning).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from hale_jax import arrayfolder, checkpoints, runfiles
from hale_jax.data import SPLITS, DataError, KGData, one_line
from hale_jax.dataspec import DataSpec

Log = Callable[[str], None]
_DAMAGED = "the run folder is damaged: restore it from a copy, or train the run again"


# ----------------------------------------------------------------------------- writing

def _name_lines(names) -> Callable:
  def lines():
    for i, name in enumerate(names):
      yield f"{i}\t{name}\n"
  return lines


def keep_data(workdir: Path, data: KGData, spec: DataSpec | None) -> None:
  """Writes the vocabularies, the triples and the label files ``spec``'s folder has."""
  triples = workdir / runfiles.TRIPLES
  triples.mkdir(exist_ok=True)
  for split in SPLITS:
    runfiles.write_npy(triples / f"{split}.npy", np.asarray(data.split(split), np.int32))
  _keep_negatives(workdir, data)
  runfiles.write_lines(workdir / runfiles.ENTITIES, _name_lines(data.entities))
  runfiles.write_lines(workdir / runfiles.RELATIONS, _name_lines(data.relations))
  folder = spec.label_folder() if spec is not None else None
  for fname in runfiles.LABELS.values():
    source = folder / fname if folder is not None else None
    if source is not None and source.is_file():
      runfiles.write_text(workdir / fname, source.read_text(encoding="utf-8"))
    else:
      (workdir / fname).unlink(missing_ok=True)


def _keep_negatives(workdir: Path, data: KGData) -> None:
  """Writes ``negatives/{valid,test}.npy`` when the data has given negatives; else removes a
  run's earlier ones."""
  folder = workdir / runfiles.NEGATIVES
  if data.negatives is None:
    if folder.is_dir() and not folder.is_symlink():
      shutil.rmtree(folder)
    return
  folder.mkdir(exist_ok=True)
  for split in arrayfolder.HELD_OUT:
    runfiles.write_npy(folder / f"{split}.npy", np.asarray(data.negatives[split], np.int32))


# ----------------------------------------------------------------------------- reading data

def read_names(path: Path) -> tuple[str, ...]:
  """The names of an ``id<TAB>name`` vocabulary file whose ids are 0, 1, 2, ... in order."""
  path = runfiles.read_inside(path.parent, path.name)
  try:
    text = path.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as err:
    raise DataError(f"{path}: cannot be read ({one_line(err)}); {_DAMAGED}") from None
  if text and not text.endswith("\n"):
    raise DataError(f"{path}: ends in the middle of a line (cut short); {_DAMAGED}")
  names = []
  for number, line in enumerate(text.split("\n")[:-1] if text else [], start=1):
    index, tab, name = line.partition("\t")
    if not tab or index != str(number - 1) or not name:
      raise DataError(f"{path}:{number}: expected '{number - 1}<TAB>name', got "
                      f"{line[:60]!r}; {_DAMAGED}")
    names.append(name)
  if not names:
    raise DataError(f"{path}: holds no names; {_DAMAGED}")
  return tuple(names)


def _load_triples(workdir: Path) -> tuple[dict[str, np.ndarray], Path]:
  folder = workdir / runfiles.TRIPLES
  legacy = workdir / runfiles.LEGACY_TRIPLES
  try:
    if folder.is_dir() or not legacy.exists():
      runfiles.read_inside(workdir, runfiles.TRIPLES)
      return {s: np.load(runfiles.read_inside(folder, f"{s}.npy"), mmap_mode="r",
                         allow_pickle=False) for s in SPLITS}, folder
    with np.load(runfiles.read_inside(workdir, runfiles.LEGACY_TRIPLES),
                 allow_pickle=False) as f:
      return {s: f[s] for s in SPLITS}, legacy
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
    where = folder if folder.is_dir() or not legacy.exists() else legacy
    raise DataError(f"{where}: the triples cannot be read ({one_line(err)[:160]}); "
                    f"{_DAMAGED}") from None


def read_triples(workdir: Path, num_entities: int, num_relations: int) -> dict[str, np.ndarray]:
  """The run's train, valid and test triples, checked against the vocabulary sizes."""
  splits, where = _load_triples(workdir)
  for split, a in splits.items():
    what = None
    if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind not in "iu":
      what = f"is {a.dtype} of shape {a.shape}, not integer [T, 3]"
    elif len(a) == 0 and split != "train":
      what = "is empty"
    elif len(a) and (a[:, [0, 2]].min() < 0 or a[:, [0, 2]].max() >= num_entities):
      what = f"holds entity ids outside [0, {num_entities})"
    elif len(a) and (a[:, 1].min() < 0 or a[:, 1].max() >= num_relations):
      what = f"holds relation ids outside [0, {num_relations})"
    if what:
      raise DataError(f"{where}: the {split} triples {what}; {_DAMAGED}")
  return {s: np.asarray(a, np.int32) for s, a in splits.items()}


def read_negatives(workdir: Path, splits: Mapping[str, np.ndarray], num_entities: int
                   ) -> dict[str, np.ndarray] | None:
  """The run's given negatives (None when it has none), memory-mapped and checked against the
  triples and the vocabulary."""
  folder = workdir / runfiles.NEGATIVES
  if not folder.exists() and not folder.is_symlink():
    return None
  runfiles.read_inside(workdir, runfiles.NEGATIVES)
  out = {}
  for split in arrayfolder.HELD_OUT:
    try:
      neg = np.load(runfiles.read_inside(folder, f"{split}.npy"), mmap_mode="r",
                    allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
      raise DataError(f"{folder}: the {split} negatives cannot be read "
                      f"({one_line(err)[:160]}); {_DAMAGED}") from None
    problem = arrayfolder.check_negatives(neg, len(splits[split]), num_entities)
    if problem:
      raise DataError(f"{folder / (split + '.npy')}: the {split} negatives {problem}; "
                      f"{_DAMAGED}")
    out[split] = neg if neg.dtype == np.int32 else np.asarray(neg, np.int32)
  return out


def read_data(workdir: Path, name: str) -> KGData:
  """The run's :class:`KGData` from the folder alone."""
  entities = read_names(workdir / runfiles.ENTITIES)
  relations = read_names(workdir / runfiles.RELATIONS)
  splits = read_triples(workdir, len(entities), len(relations))
  negatives = read_negatives(workdir, splits, len(entities))
  return KGData(name, entities, relations, source=str(workdir), negatives=negatives, **splits)


def read_labels(workdir: Path, log: Log = print) -> dict[str, dict[str, str]]:
  """``{"entity": {name: label}, "relation": {...}}`` of the label files (optional: a missing,
  linked or unreadable one is empty, with a warning for the last two)."""
  out: dict[str, dict[str, str]] = {}
  for kind, fname in runfiles.LABELS.items():
    path = workdir / fname
    out[kind] = {}
    if not path.exists() and not path.is_symlink():
      continue
    try:
      text = runfiles.read_inside(workdir, fname).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as err:
      log(f"warning: {path} ignored ({one_line(err)[:160]})")
      continue
    pairs = (line.split("\t", 1) for line in text.splitlines())
    out[kind] = {p[0]: p[1] for p in pairs if len(p) == 2}
  return out


# ----------------------------------------------------------------------------- parameters

def check_params(params: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]
                 ) -> str | None:
  """What is wrong with ``params`` given the ``expected`` table shapes, or None."""
  if set(params) != set(expected):
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    return (f"holds the tables {sorted(params)}, expected {sorted(expected)}"
            + (f" (missing {missing})" if missing else "") + (f" (extra {extra})" if extra else ""))
  for name, shape in expected.items():
    a = params[name]
    if tuple(a.shape) != tuple(shape):
      return f"the table {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)}"
    if a.dtype.kind != "f":
      return f"the table {name!r} is {a.dtype}, not floating point"
    if not np.isfinite(a).all():
      return f"the table {name!r} holds NaN or infinite values"
  return None


def _params_file(workdir: Path) -> dict[str, np.ndarray]:
  path = runfiles.read_inside(workdir, runfiles.PARAMS)
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
    raise DataError(f"cannot be read ({type(err).__name__}: {one_line(err)[:120]})") from None


def load_params(workdir: Path, expected: Mapping[str, tuple[int, ...]],
                log: Log = print) -> dict[str, np.ndarray]:
  """The best-valid parameters: ``best_params.npz`` if the run ended and it is sound, else
  the ``best/`` checkpoint (said in a line); each checked by :func:`check_params`.

  Raises:
    FileNotFoundError: neither exists.
    DataError: neither is sound (one line naming both).
  """
  npz, best = workdir / runfiles.PARAMS, workdir / runfiles.BEST
  problems = []
  if npz.exists() or npz.is_symlink():
    try:
      params = _params_file(workdir)
      problem = check_params(params, expected)
    except (DataError, ValueError) as err:
      problem = str(err)
    if problem is None:
      return params
    problems.append(f"{npz}: {problem}")
    log(f"warning: {npz}: {problem}; using the best/ checkpoint instead")
  if best.is_dir():
    try:
      params = checkpoints.restore_best(best)
      problem = None if params is not None else "holds no checkpoint"
      problem = problem or check_params(params, expected)
    except checkpoints.UnreadableCheckpoints as err:
      problem = str(err)
    if problem is None:
      return params
    problems.append(f"{best}: {problem}")
  if not problems:
    raise FileNotFoundError(f"{workdir}: no {runfiles.PARAMS} and no {runfiles.BEST}/ "
                            f"checkpoint; is this the --workdir of a hale_jax run?")
  raise DataError(f"no sound parameters in {workdir} ({'; '.join(problems)}); {_DAMAGED}")

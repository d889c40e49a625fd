"""Reading knowledge graphs, vocabularies, reciprocal relations and the filter index.

A dataset folder holds ``train.txt``, ``valid.txt`` and ``test.txt`` with one
``head<TAB>relation<TAB>tail`` per line (UTF-8; a byte-order mark, CRLF and a final newline
are accepted).  A field with leading or trailing whitespace is refused unless
``strip_whitespace=True`` (``"paris "`` and ``"paris"`` would otherwise be two entities), and
so is a name holding a character a run folder cannot store (:mod:`hale_jax.textfile`).
Entity and relation ids come from the sorted names over all three splits, so the same files
always give the same ids.  Bad input raises :class:`DataError` whose message is one line
naming the file, the line and the fix; nothing is returned half-loaded.  The files are read
by :mod:`hale_jax.columnar` (pyarrow) and, when it declines, line by line.

:func:`data_report` lists duplicates, train/valid/test overlap and valid/test names unseen in
train; :func:`split_hashes` fingerprints a folder's raw files.  For your own files in other
layouts see :mod:`hale_jax.data_file`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hale_jax import columnar
# The line-by-line rules live in textfile; they are part of this module's interface too.
from hale_jax.textfile import DataError, check_fields, one_line, read_text, text_lines

SPLITS = ("train", "valid", "test")
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class KGData:
  """A knowledge graph with integer triples.

  Attributes:
    name: dataset name, for messages and results.
    entities: ``N`` entity names; the index is the entity id.
    relations: ``|R|`` relation names (without reciprocals); the index is the relation id.
    train, valid, test: ``[T, 3]`` int32 triples ``(head, relation, tail)``, relation ids in
      ``[0, |R|)``.
    source: where the data came from (a folder, or a generator description).
    negatives: for a benchmark that ships them (ogbl-wikikg2), ``{"valid": a, "test": a}``
      with ``a`` int32 ``[n, 2, K]``: the given candidates each held-out triple is ranked
      against (``a[i, 0]`` head, ``a[i, 1]`` tail; ``hale_jax.ogb_eval``); else None.
  """
  name: str
  entities: tuple[str, ...]
  relations: tuple[str, ...]
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  source: str = ""
  negatives: dict[str, np.ndarray] | None = None

  @property
  def num_entities(self) -> int:
    return len(self.entities)

  @property
  def num_relations(self) -> int:
    """``|R|``; the models use ``2 |R|`` ids (reciprocals included)."""
    return len(self.relations)

  def split(self, name: str) -> np.ndarray:
    return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def _read_split(path: Path, strip_whitespace: bool = False) -> list[tuple[str, str, str]]:
  if not path.is_file():
    raise DataError(f"{path}: file is missing; a dataset folder needs train.txt, valid.txt and "
                    f"test.txt with one head<TAB>relation<TAB>tail per line")
  lines = text_lines(read_text(path))
  if not lines:
    raise DataError(f"{path}: file holds no triples; it needs one head<TAB>relation<TAB>tail "
                    f"per line")
  triples = []
  for number, line in lines:
    fields = line.split("\t")
    if len(fields) != 3:
      what = "an empty line" if line.strip() == "" else f"{len(fields)} tab-separated field(s)"
      raise DataError(f"{path}:{number}: {what} where 3 are expected (head<TAB>relation<TAB>"
                      f"tail); fix or remove this line")
    triples.append(check_fields(path, number, fields, strip_whitespace))
  return triples


def from_named_triples(name: str, splits: dict[str, Sequence[tuple[str, str, str]]],
                       source: str = "") -> KGData:
  """Builds :class:`KGData` from ``{"train": [...], "valid": [...], "test": [...]}`` of names."""
  entity_names = sorted({x for s in SPLITS for (h, _, t) in splits[s] for x in (h, t)})
  relation_names = sorted({r for s in SPLITS for (_, r, _) in splits[s]})
  eid = {n: i for i, n in enumerate(entity_names)}
  rid = {n: i for i, n in enumerate(relation_names)}
  arrays = {}
  for s in SPLITS:
    arr = np.array([(eid[h], rid[r], eid[t]) for h, r, t in splits[s]], dtype=np.int32)
    arrays[s] = arr.reshape(-1, 3)
  return KGData(name=name, entities=tuple(entity_names), relations=tuple(relation_names),
                source=source, **arrays)


def load_folder(folder: str | os.PathLike, name: str | None = None, *,
                strip_whitespace: bool = False, log: Log | None = None) -> KGData:
  """Reads ``folder/{train,valid,test}.txt``; raises :class:`DataError` on bad input.

  ``strip_whitespace`` strips each field instead of refusing leading or trailing whitespace.
  ``log`` gets a progress line per big file.  The files are read by the fast columnar reader
  (:mod:`hale_jax.columnar`); when it declines (a problem, or a layout it leaves to the exact
  pass), they are read again line by line, which raises any error naming the file and line.
  """
  folder = Path(folder)
  if not folder.is_dir():
    raise DataError(f"{folder}: no such folder; point --data_dir at a folder holding "
                    f"train.txt, valid.txt and test.txt")
  paths = [folder / f"{s}.txt" for s in SPLITS]
  name, source = name or folder.name, str(folder.resolve())
  fast = columnar.read_triples(paths, [columnar.Format()] * 3, strip_whitespace=strip_whitespace,
                               log=log)
  if fast is not None:
    return from_encoded(name, fast, source)
  splits = {s: _read_split(p, strip_whitespace) for s, p in zip(SPLITS, paths)}
  return from_named_triples(name, splits, source=source)


def from_encoded(name: str, encoded: columnar.Encoded, source: str = "") -> KGData:
  """:class:`KGData` from the columnar reader's output for the train, valid and test files."""
  train, valid, test = encoded.triples
  return KGData(name=name, entities=encoded.entities, relations=encoded.relations, train=train,
                valid=valid, test=test, source=source)


def with_reciprocals(triples: np.ndarray, num_relations: int) -> np.ndarray:
  """``[T, 3] -> [2T, 3]``: each ``(h, r, t)`` plus ``(t, r + |R|, h)``."""
  triples = np.asarray(triples, dtype=np.int32).reshape(-1, 3)
  inverse = np.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], axis=1)
  return np.concatenate([triples, inverse], axis=0)


class FilterIndex:
  """All known answers of each query ``(entity, relation)`` over train, valid and test.

  Queries use relation ids in ``[0, 2 |R|)``; ``(t, r + |R|)`` answers ``h``.
  """

  def __init__(self, data: KGData):
    everything = with_reciprocals(np.concatenate([data.train, data.valid, data.test]),
                                  data.num_relations)
    self._num_relation_ids = 2 * data.num_relations
    keys = self._keys(everything[:, 0], everything[:, 1])
    order = np.argsort(keys, kind="stable")  # one int64 key: one sort, not a lexsort
    self._keys_sorted = keys[order]
    self._answers = everything[order, 2]

  def _keys(self, entities: np.ndarray, relations: np.ndarray) -> np.ndarray:
    return entities.astype(np.int64) * self._num_relation_ids + relations.astype(np.int64)

  def _ranges(self, entities: np.ndarray, relations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = self._keys(np.asarray(entities), np.asarray(relations))
    start = np.searchsorted(self._keys_sorted, keys, side="left")
    return start, np.searchsorted(self._keys_sorted, keys, side="right") - start

  def counts(self, entities: np.ndarray, relations: np.ndarray) -> np.ndarray:
    """How many known answers each query ``(entities[i], relations[i])`` has, ``[Q]``."""
    return self._ranges(entities, relations)[1]

  def answers(self, entities: np.ndarray, relations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Known answers of queries ``(entities[i], relations[i])``, ``i < Q``.

    Returns:
      ``(rows, answers)``, two int32 arrays of equal length: ``answers[j]`` answers query
      ``rows[j]``.  Duplicated triples appear once per copy.
    """
    start, counts = self._ranges(entities, relations)
    rows = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    offsets = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    positions = offsets + np.arange(counts.sum())
    return rows, self._answers[positions].astype(np.int32)


def unseen_in_train(data: KGData, split: str) -> tuple[int, int]:
  """``(entities, triples)`` of ``split`` whose entities never occur in train."""
  seen = np.zeros(data.num_entities, bool)
  seen[data.train[:, 0]] = True
  seen[data.train[:, 2]] = True
  triples = data.split(split)
  ents = np.unique(triples[:, [0, 2]])
  unseen = ents[~seen[ents]]
  affected = (~seen[triples[:, 0]]) | (~seen[triples[:, 2]])
  return len(unseen), int(affected.sum())


def summary(data: KGData) -> str:
  """A few lines describing the dataset, for the start of a run."""
  lines = [
      f"dataset {data.name}  ({data.source})" if data.source else f"dataset {data.name}",
      f"  entities {data.num_entities:,}   relations {data.num_relations:,} "
      f"({2 * data.num_relations:,} with reciprocals)",
      f"  triples  train {len(data.train):,}   valid {len(data.valid):,}   "
      f"test {len(data.test):,}",
  ]
  for s in ("valid", "test"):
    n_ent, n_tri = unseen_in_train(data, s)
    if n_ent:
      lines.append(f"  {s}: {n_ent:,} entities unseen in train, in {n_tri:,} triples "
                   f"(ranked with their untrained initial embeddings)")
  if data.negatives is not None:
    lines.append(f"  given negatives: {data.negatives['test'].shape[2]:,} head and as many tail "
                 f"candidates per valid and test triple (--eval_protocol=ogb ranks against them)")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- data report

@dataclasses.dataclass(frozen=True)
class Finding:
  """A count and the first few examples, as names (``"(paris, capital_of, france)"``);
  ``truncated`` says that there are more examples than shown."""
  count: int
  examples: tuple[str, ...] = ()
  truncated: bool = False

  def text(self, what: str) -> str:
    """``"2 duplicate triples [(a, r, b), (c, r, d)]"``; ``what`` is the plural noun phrase."""
    if self.count == 1:
      what = what.replace("triples", "triple").replace("entities", "entity").replace(
          "relations", "relation")
    more = ", ..." if self.truncated else ""
    shown = f" [{', '.join(self.examples)}{more}]" if self.examples else ""
    return f"{self.count:,} {what}{shown}"


@dataclasses.dataclass(frozen=True)
class DataReport:
  """Quirks of a dataset worth knowing before training on it (:func:`check_data`).

  Attributes:
    duplicates: per split, triples that repeat an earlier triple of the same split.
    in_train: for valid and test, triples that also occur in train (leakage: the model has
      seen the answer; filtered ranking then removes nothing but the metric is inflated).
    test_in_valid: test triples that also occur in valid.
    unseen_entities, unseen_relations: for valid and test, the entities / relations that never
      occur in train (their embeddings keep their untrained initial values).
  """
  duplicates: dict[str, Finding]
  in_train: dict[str, Finding]
  test_in_valid: Finding
  unseen_entities: dict[str, Finding]
  unseen_relations: dict[str, Finding]

  def lines(self) -> list[str]:
    """For the start of a run: a line per split with what was found there (nonzero counts
    only), or one line saying that nothing was."""
    out = []
    for s in SPLITS:
      found = [(self.duplicates[s], "duplicate triples")]
      if s != "train":
        found.append((self.in_train[s], "triples also in train"))
        if s == "test":
          found.append((self.test_in_valid, "triples also in valid"))
        found += [(self.unseen_entities[s], "entities unseen in train"),
                  (self.unseen_relations[s], "relations unseen in train")]
      parts = [finding.text(what) for finding, what in found if finding.count]
      if parts:
        out.append(f"  check {s}: {'; '.join(parts)}")
    return out or ["  check: no duplicate triples, no valid or test triple in train, every "
                   "valid and test entity and relation seen in train"]

  def clean(self) -> bool:
    """No duplicates, no leakage, nothing unseen."""
    findings = [*self.duplicates.values(), *self.in_train.values(), self.test_in_valid,
                *self.unseen_entities.values(), *self.unseen_relations.values()]
    return all(f.count == 0 for f in findings)


_KEY_LIMIT = 2 ** 62


def triple_keys(triples: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
  """One int64 per row of ``[T, 3]`` ``triples``, equal iff the triples are equal."""
  triples = np.asarray(triples).reshape(-1, 3)
  n, r = max(num_entities, 1), max(num_relations, 1)
  if n * n * r < _KEY_LIMIT:
    wide = triples.astype(np.int64)
    return (wide[:, 0] * r + wide[:, 1]) * n + wide[:, 2]
  # vast vocabularies: exact, slower
  _, inverse = np.unique(triples, axis=0, return_inverse=True)
  return inverse.reshape(-1).astype(np.int64)


def first_copies(keys: np.ndarray) -> np.ndarray | None:
  """A mask of the first row of each distinct key (so ``keys[mask]`` keeps the input order),
  or ``None`` when all keys are distinct (the common case, told by one sort)."""
  ordered = np.sort(keys)
  repeated = ordered[1:][ordered[1:] == ordered[:-1]]
  if len(repeated) == 0:
    return None
  rows = np.flatnonzero(member(keys, repeated))  # every copy of a repeated key, in order
  _, first = np.unique(keys[rows], return_index=True)
  mask = np.ones(len(keys), bool)
  mask[rows] = False
  mask[rows[first]] = True
  return mask


def member(values: np.ndarray, of: np.ndarray) -> np.ndarray:
  """``np.isin(values, of)`` by hashing ``of``: fast when ``of`` is much smaller."""
  if len(values) == 0 or len(of) == 0:
    return np.zeros(len(values), bool)
  return pc.is_in(pa.array(values), value_set=pa.array(of)).to_numpy(zero_copy_only=False)


def _split_keys(data: KGData) -> dict[str, np.ndarray]:
  """Per split, one int64 per triple, equal iff the triples are equal (across splits too)."""
  everything = np.concatenate([data.split(s) for s in SPLITS])
  keys = triple_keys(everything, data.num_entities, data.num_relations)
  bounds = np.cumsum([0] + [len(data.split(s)) for s in SPLITS])
  return {s: keys[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}


def _name_triple(data: KGData, triple: np.ndarray) -> str:
  h, r, t = (int(x) for x in triple)
  return f"({data.entities[h]}, {data.relations[r]}, {data.entities[t]})"


def _finding(data: KGData, triples: np.ndarray, mask: np.ndarray, examples: int) -> Finding:
  rows = np.flatnonzero(mask)
  return Finding(len(rows), tuple(_name_triple(data, triples[i]) for i in rows[:examples]),
                 len(rows) > examples)


def _duplicates(data: KGData, triples: np.ndarray, keys: np.ndarray, examples: int) -> Finding:
  """Rows that repeat an earlier row; the examples are the repeated triples, each once."""
  first = first_copies(keys)
  if first is None:
    return Finding(0)
  # the first copy of each repeated triple, in order
  repeated = np.flatnonzero(first & member(keys, keys[~first]))
  shown = tuple(_name_triple(data, triples[i]) for i in repeated[:examples])
  return Finding(int((~first).sum()), shown, len(repeated) > examples)


def _unseen(names, ids: np.ndarray, seen: np.ndarray, examples: int) -> Finding:
  """Ids in ``ids`` (in order of first occurrence) whose ``seen`` flag is off."""
  _, first = np.unique(ids, return_index=True)
  ordered = ids[np.sort(first)]
  unseen = ordered[~seen[ordered]]
  return Finding(len(unseen), tuple(str(names[int(i)]) for i in unseen[:examples]),
                 len(unseen) > examples)


def check_data(data: KGData, examples: int = 3) -> DataReport:
  """Counts duplicates, train/valid/test overlap and valid/test names unseen in train."""
  keys = _split_keys(data)
  seen_entities = np.zeros(data.num_entities, bool)
  seen_entities[data.train[:, 0]] = True
  seen_entities[data.train[:, 2]] = True
  seen_relations = np.zeros(data.num_relations, bool)
  seen_relations[data.train[:, 1]] = True
  held = ("valid", "test")
  # held-out keys that train holds: one pass over train against the (smaller) held-out sets
  in_train = keys["train"][member(keys["train"], np.concatenate([keys[s] for s in held]))]
  report = DataReport(
      duplicates={s: _duplicates(data, data.split(s), keys[s], examples) for s in SPLITS},
      in_train={s: _finding(data, data.split(s), member(keys[s], in_train), examples)
                for s in held},
      test_in_valid=_finding(data, data.test, member(keys["test"], keys["valid"]), examples),
      unseen_entities={s: _unseen(data.entities, data.split(s)[:, [0, 2]].reshape(-1),
                                  seen_entities, examples) for s in held},
      unseen_relations={s: _unseen(data.relations, data.split(s)[:, 1], seen_relations,
                                   examples) for s in held})
  columnar.release_arrow_memory()  # member's hash tables
  return report


def data_report(data: KGData, examples: int = 3) -> list[str]:
  """:func:`check_data` as lines to print at the start of a run (see :meth:`DataReport.lines`)."""
  return check_data(data, examples).lines()


def file_sha256(path: str | os.PathLike) -> str:
  """The sha256 of a file's bytes, read in chunks."""
  try:
    with open(path, "rb") as f:
      return hashlib.file_digest(f, "sha256").hexdigest()
  except OSError as err:
    raise DataError(f"{path}: cannot be read ({one_line(err)}); check that the file exists "
                    f"and is readable") from None


def split_hashes(folder: str | os.PathLike) -> dict[str, str]:
  """``{"train": sha256, "valid": ..., "test": ...}`` of the raw files in ``folder``, to tell
  on resume whether the data changed since a run started."""
  return {s: file_sha256(Path(folder) / f"{s}.txt") for s in SPLITS}

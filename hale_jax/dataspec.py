"""Where a run's data comes from, as a typed spec: load it, fingerprint its files, find its labels.

One frozen dataclass per source: :class:`Synthetic` and :class:`PowerLaw` (generated graphs),
:class:`Dataset` (a benchmark by name), :class:`Folder` (``train.txt``, ``valid.txt``,
``test.txt``), :class:`OneFile` (one file split by a seed) and :class:`SplitFiles` (three files
of any names).  Each can :meth:`~DataSpec.load` its :class:`~hale_jax.data.KGData`, give the
sha256 of its raw files (:meth:`~DataSpec.hashes`, stored in ``run.json`` so that a resume can
tell that the files changed), and say which folder may hold ``entity_labels.tsv`` /
``relation_labels.tsv`` (:meth:`~DataSpec.label_folder`).  :meth:`~DataSpec.to_json` and
:func:`from_json` are the ``run.json`` form (``{"kind": ..., ...}``).

Only training uses a spec: a trained run loads from its run folder alone and never resolves a
dataset name (``hale_jax.trained_model``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from hale_jax import data_file, datasets, synthetic
from hale_jax.data import SPLITS, DataError, KGData, file_sha256, load_folder, split_hashes

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Reading:
  """How the lines of one's own files are read (``hale_jax.data_file``)."""
  columns: str = data_file.DEFAULT_COLUMNS
  delimiter: str | None = None
  header: bool = False
  strip_whitespace: bool = False

  def kwargs(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class DataSpec:
  """The interface of every spec (see the module docstring)."""
  kind: ClassVar[str] = ""

  def load(self, log: Log | None = None) -> KGData:
    """The data; ``log`` gets progress lines while big files are read."""
    raise NotImplementedError

  def hashes(self) -> dict[str, str]:
    """sha256 of the raw files (``{}`` for generated graphs: the spec says it all)."""
    return {}

  def label_folder(self) -> Path | None:
    return None

  def to_json(self) -> dict[str, Any]:
    fields = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, Reading):
        fields.update(value.kwargs())
      elif isinstance(value, tuple):
        fields[f.name] = list(value)
      elif value is not None:
        fields[f.name] = value
    return {"kind": self.kind, **fields}


@dataclasses.dataclass(frozen=True)
class Synthetic(DataSpec):
  kind: ClassVar[str] = "synthetic"

  def load(self, log: Log | None = None) -> KGData:
    return synthetic.generate()


@dataclasses.dataclass(frozen=True)
class PowerLaw(DataSpec):
  entities: int
  kind: ClassVar[str] = "powerlaw"

  def load(self, log: Log | None = None) -> KGData:
    return synthetic.power_law(self.entities)


@dataclasses.dataclass(frozen=True)
class Dataset(DataSpec):
  """A benchmark by name, looked up or downloaded by :func:`hale_jax.datasets.resolve`."""
  name: str
  kind: ClassVar[str] = "dataset"

  def load(self, log: Log | None = None) -> KGData:
    return datasets.load(self.name, log=log)

  def hashes(self) -> dict[str, str]:
    return datasets.hashes(self.name)

  def label_folder(self) -> Path | None:
    return datasets.resolve(self.name)


@dataclasses.dataclass(frozen=True)
class Folder(DataSpec):
  path: str
  strip_whitespace: bool = False
  kind: ClassVar[str] = "folder"

  def load(self, log: Log | None = None) -> KGData:
    return load_folder(self.path, strip_whitespace=self.strip_whitespace, log=log)

  def hashes(self) -> dict[str, str]:
    return split_hashes(self.path)

  def label_folder(self) -> Path | None:
    return Path(self.path)


@dataclasses.dataclass(frozen=True)
class OneFile(DataSpec):
  """One file of triples split into train, valid and test by ``fractions`` and ``seed``."""
  path: str
  fractions: tuple[float, float, float] = data_file.DEFAULT_FRACTIONS
  seed: int = 0
  reading: Reading = Reading()
  name: str | None = None
  kind: ClassVar[str] = "file"

  def load(self, log: Log | None = None) -> KGData:
    """The split data; ``log`` also gets what the split did (:meth:`data_file.SplitInfo.lines`:
    triples read, duplicates dropped, the split's sizes and the triples moved to train)."""
    data, info = data_file.load_triples_file(self.path, fractions=self.fractions, seed=self.seed,
                                            name=self.name, log=log, **self.reading.kwargs())
    for line in info.lines() if log else ():
      log(line)
    return data

  def hashes(self) -> dict[str, str]:
    return {"file": file_sha256(self.path)}

  def label_folder(self) -> Path | None:
    return Path(self.path).parent


@dataclasses.dataclass(frozen=True)
class SplitFiles(DataSpec):
  train: str
  valid: str
  test: str
  reading: Reading = Reading()
  name: str | None = None
  kind: ClassVar[str] = "files"

  def load(self, log: Log | None = None) -> KGData:
    return data_file.load_split_files(self.train, self.valid, self.test, name=self.name,
                                     log=log, **self.reading.kwargs())

  def hashes(self) -> dict[str, str]:
    return {s: file_sha256(getattr(self, s)) for s in SPLITS}

  def label_folder(self) -> Path | None:
    return Path(self.train).parent


KINDS: dict[str, type[DataSpec]] = {cls.kind: cls for cls in (
    Synthetic, PowerLaw, Dataset, Folder, OneFile, SplitFiles)}


def from_json(doc: Mapping[str, Any] | DataSpec) -> DataSpec:
  """The spec of a ``run.json`` data entry (a spec passes through); other keys are ignored."""
  if isinstance(doc, DataSpec):
    return doc
  cls = KINDS.get(doc.get("kind")) if isinstance(doc, Mapping) else None
  if cls is None:
    raise DataError(f"unknown data spec {doc!r}; expected kind {', '.join(KINDS)}")
  names = {f.name for f in dataclasses.fields(cls)}
  args = {k: v for k, v in doc.items() if k in names}
  if "reading" in names:
    args["reading"] = Reading(**{f.name: doc[f.name] for f in dataclasses.fields(Reading)
                                 if doc.get(f.name) is not None})
  if "fractions" in args:
    args["fractions"] = tuple(float(x) for x in args["fractions"])
  try:
    return cls(**args)
  except TypeError as err:
    raise DataError(f"incomplete data spec {dict(doc)!r} ({err})") from None

"""Training on your own triples: one file split here, or three split files.

:func:`read_triples_file` reads one triple per line from a ``.tsv``, ``.txt``, ``.tab`` or
``.csv`` file (any of them may be gzipped, ``.tsv.gz``).  Two settings describe the file:

* ``delimiter``: by default a tab for ``.tsv``/``.txt``/``.tab`` and a comma for ``.csv``.  It
  may be one character or one of the words ``tab``, ``comma``, ``semicolon``, ``space``,
  ``pipe`` and ``whitespace`` (any run of spaces and tabs).  Comma and semicolon files are read
  as CSV: a field in double quotes may hold the delimiter (``"Paris, France"``).  Other
  delimiters split each line as it is, with no quoting, so names may hold quote characters.
* ``columns``: the role of each column, left to right, as a comma-separated list (or a
  sequence of names).  ``head``, ``relation`` and ``tail`` must each appear exactly once; any
  other name marks a column that is read and ignored.  Every line must have exactly as many
  fields as ``columns`` names.  Examples: ``head,relation,tail`` (the default),
  ``relation,head,tail``, ``head,tail,relation``, ``id,head,relation,tail,weight``.  Names are
  matched without regard to case and surrounding spaces; an empty name is refused.

``header=True`` skips the first line (it must have as many fields as the others); without it,
the first line is a triple.  Fields are checked as in :func:`hale_jax.data.load_folder`
(:mod:`hale_jax.textfile`): no empty field, no leading or trailing whitespace unless
``strip_whitespace=True``, no character a run folder cannot store; a UTF-8 byte-order mark at
the start is dropped.  Bad input raises :class:`~hale_jax.data.DataError` with a one-line
message naming the file and line.

:func:`load_triples_file` and :func:`load_split_files` read with the columnar reader
(:mod:`hale_jax.columnar`) and, when it declines, line by line (:func:`read_triples_file`,
which returns the names and raises the errors).  :func:`load_triples_file` drops duplicate
triples (so that no test triple is also in train) and splits the rest with a seeded shuffle,
moving to train every valid or test triple whose head, tail or relation would not otherwise
occur in train (such names would keep their untrained embeddings; :mod:`hale_jax.splitting`,
whose :func:`split_triples` does the same for a list of names); :func:`write_splits` writes
splits as a dataset folder that :func:`~hale_jax.data.load_folder` reads back to the same ids.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Sequence, Union

from hale_jax import columnar
from hale_jax.data import (SPLITS, DataError, KGData, Log, check_fields, file_sha256,
                           first_copies, from_encoded, from_named_triples, read_text,
                           text_lines, triple_keys)
# The split lives in splitting; it is part of this module's interface too.
from hale_jax.splitting import DEFAULT_FRACTIONS, parse_fractions, split_triples, split_where

ROLES = ("head", "relation", "tail")
DEFAULT_COLUMNS = "head,relation,tail"
WHITESPACE = columnar.WHITESPACE
_NAMED_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ",
                     "pipe": "|", WHITESPACE: WHITESPACE}
_SUFFIX_DELIMITERS = {".tsv": "\t", ".txt": "\t", ".tab": "\t", ".csv": ","}
_CSV_DELIMITERS = columnar.CSV_DELIMITERS

Columns = Union[str, Sequence[str]]
Triple = tuple[str, str, str]


# ----------------------------------------------------------------------------- settings

def parse_columns(columns: Columns = DEFAULT_COLUMNS) -> tuple[tuple[int, int, int], int]:
  """``(positions of head, relation and tail, number of columns)`` from a columns spec."""
  names = columns.split(",") if isinstance(columns, str) else list(columns)
  names = [str(n).strip().lower() for n in names]
  shown = ",".join(names)
  advice = ("name each of head, relation and tail once, other columns anything else, e.g. "
            "head,relation,tail or relation,head,tail or id,head,relation,tail,weight")
  if any(n == "" for n in names):
    raise DataError(f"columns {shown!r}: a column has no name; {advice}")
  for role in ROLES:
    count = names.count(role)
    if count != 1:
      what = "is missing" if count == 0 else f"appears {count} times"
      raise DataError(f"columns {shown!r}: {role} {what}; {advice}")
  positions = tuple(names.index(role) for role in ROLES)
  return (positions[0], positions[1], positions[2]), len(names)


def _base_suffix(path: Path) -> str:
  """``.tsv`` for ``x.tsv`` and ``x.tsv.gz``."""
  suffixes = [s.lower() for s in path.suffixes]
  if suffixes and suffixes[-1] == ".gz":
    suffixes.pop()
  return suffixes[-1] if suffixes else ""


def parse_delimiter(delimiter: str | None, path: str | os.PathLike) -> str:
  """The delimiter character, or :data:`WHITESPACE`; ``None`` picks it from the suffix."""
  path = Path(path)
  if delimiter is None or delimiter == "":
    suffix = _base_suffix(path)
    if suffix not in _SUFFIX_DELIMITERS:
      raise DataError(f"{path}: cannot tell the delimiter from the suffix {suffix or '(none)'!r}; "
                      f"pass a delimiter (--delimiter tab, comma, semicolon, space, whitespace "
                      f"or one character), or name the file .tsv or .csv")
    return _SUFFIX_DELIMITERS[suffix]
  if delimiter.lower() in _NAMED_DELIMITERS:
    return _NAMED_DELIMITERS[delimiter.lower()]
  if len(delimiter) != 1 or delimiter in "\r\n\"" or delimiter.isalnum():
    raise DataError(f"delimiter {delimiter!r} is not usable; pass tab, comma, semicolon, space, "
                    f"pipe, whitespace or one punctuation character")
  return delimiter


def _delimiter_name(delimiter: str) -> str:
  for name, char in _NAMED_DELIMITERS.items():
    if char == delimiter and name != "\\t":
      return name
  return repr(delimiter)


# ----------------------------------------------------------------------------- reading

def _csv_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str] | None]]:
  """``(line number where the row starts, fields)`` of a CSV text; ``None`` for a blank
  line."""
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
  rows: list[tuple[int, list[str] | None]] = []
  start = 1  # the line where a row starts (a quoted field may hold line breaks)
  try:
    for fields in reader:
      rows.append((start, fields or None))
      start = reader.line_num + 1
  except csv.Error as err:
    raise DataError(f"{path}:{start}: not valid CSV ({err}); fix the quoting of this "
                    f"line") from None
  while rows and rows[-1][1] is None:
    rows.pop()
  return rows


def _plain_rows(text: str, delimiter: str) -> list[tuple[int, list[str] | None]]:
  """``(line number, fields)`` split at ``delimiter`` as is; ``None`` for a blank line."""
  rows: list[tuple[int, list[str] | None]] = []
  for number, line in text_lines(text):
    if line.strip() == "":
      rows.append((number, None))
    elif delimiter == WHITESPACE:
      rows.append((number, line.split()))
    else:
      rows.append((number, line.split(delimiter)))
  return rows


def read_triples_file(path: str | os.PathLike, columns: Columns = DEFAULT_COLUMNS,
                      delimiter: str | None = None, *, header: bool = False,
                      strip_whitespace: bool = False) -> list[Triple]:
  """``[(head, relation, tail), ...]`` of names, in file order (module docs for the format)."""
  return [t for _, t in read_numbered_triples(path, columns, delimiter, header=header,
                                              strip_whitespace=strip_whitespace)]


def read_numbered_triples(path: str | os.PathLike, columns: Columns = DEFAULT_COLUMNS,
                          delimiter: str | None = None, *, header: bool = False,
                          strip_whitespace: bool = False) -> list[tuple[int, Triple]]:
  """``[(line number, (head, relation, tail)), ...]``: :func:`read_triples_file` with each
  triple's line, for messages about the names (an unknown entity at ``file:line``)."""
  path = Path(path)
  positions, width = parse_columns(columns)
  delimiter = parse_delimiter(delimiter, path)
  if not path.is_file():
    raise DataError(f"{path}: no such file; pass a .tsv, .txt or .csv file with one triple "
                    f"per line")
  text = read_text(path)
  if delimiter in _CSV_DELIMITERS:
    rows = _csv_rows(path, text, delimiter)
  else:
    rows = _plain_rows(text, delimiter)
  spec = ",".join(str(c).strip() for c in (columns.split(",") if isinstance(columns, str)
                                           else columns))
  triples = []
  for index, (number, fields) in enumerate(rows):
    if fields is None:
      raise DataError(f"{path}:{number}: an empty line where {width} fields are expected "
                      f"(columns {spec}); remove this line")
    if len(fields) != width:
      what = "the header has" if header and index == 0 else "the line has"
      raise DataError(f"{path}:{number}: {what} {len(fields)} {_delimiter_name(delimiter)}-"
                      f"separated field(s) where {width} are expected (columns {spec}); fix "
                      f"the line, or pass the right delimiter and columns")
    if header and index == 0:
      continue
    chosen = [fields[p] for p in positions]
    triples.append((number, check_fields(path, number, chosen, strip_whitespace)))
  if not triples:
    raise DataError(f"{path}: file holds no triples; it needs one triple per line (columns "
                    f"{spec})")
  return triples


def _unwritable(name: str) -> bool:
  return name != name.strip() or any(c in name for c in "\t\n\r")


def write_splits(splits: dict[str, Sequence[Triple]], folder: str | os.PathLike) -> Path:
  """Writes ``folder/{train,valid,test}.txt`` (``head<TAB>relation<TAB>tail`` lines, LF) so
  that :func:`~hale_jax.data.load_folder` reads the same triples back; returns the folder."""
  folder = Path(folder)
  for s in SPLITS:
    for triple in splits[s]:
      bad = [n for n in triple if _unwritable(n)]
      if bad:
        raise DataError(f"cannot write {triple!r} of {s} into {folder}: the name {bad[0]!r} holds "
                        f"a tab, a line break or leading/trailing whitespace, which a "
                        f"tab-separated file cannot keep; rename it in the input")
  try:
    folder.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
      tmp = folder / f".{s}.txt.tmp"
      with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{h}\t{r}\t{t}\n" for h, r, t in splits[s])
      os.replace(tmp, folder / f"{s}.txt")
  except OSError as err:
    raise DataError(f"cannot write the splits into {folder} ({err}); choose a writable "
                    f"folder") from None
  return folder


# ----------------------------------------------------------------------------- loading

@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """What :func:`load_triples_file` did, for the run log and ``run.json``."""
  path: str
  sha256: str
  read: int
  duplicates: int
  moved: int
  fractions: tuple[float, float, float]
  seed: int
  sizes: dict[str, int]

  def lines(self) -> list[str]:
    """Two lines for the start of a run."""
    f = ",".join(f"{x:g}" for x in self.fractions)
    sizes = "   ".join(f"{s} {self.sizes[s]:,}" for s in SPLITS)
    dropped = f"{self.duplicates:,} duplicate{'' if self.duplicates == 1 else 's'} dropped"
    return [f"  {self.path}: {self.read:,} triples read, {dropped}; split {f} with seed "
            f"{self.seed}",
            f"  split: {sizes}   ({self.moved:,} moved to train so that every valid and test "
            f"entity and relation also occurs in train)"]

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def _fast(paths: Sequence[Path], columns: Columns, delimiter: str | None, header: bool,
          strip_whitespace: bool, log: Log | None) -> columnar.Encoded | None:
  """The files read by the columnar reader, or ``None``: read them line by line (which
  raises the error, in the order of the files, for a bad setting or line)."""
  try:
    positions, width = parse_columns(columns)
    formats = [columnar.Format(parse_delimiter(delimiter, p), width, positions, header)
               for p in paths]
  except DataError:
    return None
  return columnar.read_triples(paths, formats, strip_whitespace=strip_whitespace, log=log)


def load_triples_file(path: str | os.PathLike, columns: Columns = DEFAULT_COLUMNS,
                      delimiter: str | None = None,
                      fractions: str | Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                      name: str | None = None, *, header: bool = False,
                      strip_whitespace: bool = False,
                      log: Log | None = None) -> tuple[KGData, SplitInfo]:
  """Reads one file of triples, drops duplicates (keeping the first copy), splits it
  (:func:`~hale_jax.splitting.split_where`).

  The same file and arguments always give the same data and ids.  Raises
  :class:`~hale_jax.data.DataError` when valid or test would end up empty.  ``log`` gets
  progress lines for a big file.
  """
  path = Path(path)
  fractions = parse_fractions(fractions)
  fast = _fast([path], columns, delimiter, header, strip_whitespace, log)
  if fast is not None:
    entities, relations, triples = fast.entities, fast.relations, fast.triples[0]
  else:
    named = from_named_triples("", {"train": read_triples_file(
        path, columns, delimiter, header=header, strip_whitespace=strip_whitespace),
        "valid": [], "test": []})
    entities, relations, triples = named.entities, named.relations, named.train
  first = first_copies(triple_keys(triples, len(entities), len(relations)))
  distinct = triples if first is None else triples[first]
  where, moved = split_where(distinct, fractions, seed)
  sizes = {s: int((where == k).sum()) for k, s in enumerate(SPLITS)}
  for s in ("valid", "test"):
    if sizes[s] == 0:
      raise DataError(f"{path}: the split {','.join(f'{x:g}' for x in fractions)} leaves {s} "
                      f"empty ({len(distinct):,} distinct triples, {moved:,} moved to train so "
                      f"that valid and test use only names seen in train); give more triples "
                      f"or a larger {s} fraction")
  info = SplitInfo(path=str(path.resolve()), sha256=file_sha256(path), read=len(triples),
                   duplicates=len(triples) - len(distinct), moved=moved, fractions=fractions,
                   seed=int(seed), sizes=sizes)
  source = f"{info.path} split {','.join(f'{x:g}' for x in fractions)} seed {seed}"
  splits = {s: distinct[where == k] for k, s in enumerate(SPLITS)}
  data = KGData(name=name or _stem(path), entities=entities, relations=relations,
                source=source, **splits)
  return data, info


def _stem(path: Path) -> str:
  """``kg`` for ``kg.tsv`` and ``kg.tsv.gz``."""
  name = path.name
  if name.lower().endswith(".gz"):
    name = name[:-3]
  return Path(name).stem or name


def load_split_files(train_file: str | os.PathLike, valid_file: str | os.PathLike,
                     test_file: str | os.PathLike, *, columns: Columns = DEFAULT_COLUMNS,
                     delimiter: str | None = None, header: bool = False,
                     strip_whitespace: bool = False, name: str | None = None,
                     log: Log | None = None) -> KGData:
  """Reads three files (any names, formats as :func:`read_triples_file`) as train, valid and
  test; ids as in :func:`~hale_jax.data.load_folder`.  ``name`` defaults to the train file's
  folder name; ``log`` gets progress lines for big files."""
  paths = {"train": Path(train_file), "valid": Path(valid_file), "test": Path(test_file)}
  source = "; ".join(f"{s}={paths[s].resolve()}" for s in SPLITS)
  name = name or paths["train"].resolve().parent.name or _stem(paths["train"])
  fast = _fast(list(paths.values()), columns, delimiter, header, strip_whitespace, log)
  if fast is not None:
    return from_encoded(name, fast, source)
  splits = {s: read_triples_file(p, columns, delimiter, header=header,
                                 strip_whitespace=strip_whitespace) for s, p in paths.items()}
  return from_named_triples(name, splits, source=source)


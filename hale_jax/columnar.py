"""Reading large triple files fast: pyarrow's CSV reader, dictionary-encoded columns and
vectorised checks, giving exactly what :mod:`hale_jax.textfile`'s line-by-line rules give.

pyarrow reads each file's head, relation and tail columns as strings; one hash pass over the
entity columns of all files (and one over the relation columns) encodes them as dictionaries,
in which every distinct name is stored once and each field is an int32 index.  The dictionary
is sorted (UTF-8 byte order, which is Python's code-point order for ``sorted``) and the indices
remapped, so the ids are those of the line-by-line readers: the index of the name in the sorted
names of all files.  pyarrow because its C++ CSV parser is multi-threaded, reads
memory-mapped files and comes with the hashing, sorting and regex kernels used here, in one
widely used, actively maintained package (pandas and polars would add more on top of the same
kind of parser).

The checks run on the raw bytes (UTF-8, line endings, quoting) and on the distinct names only
(empty, surrounding whitespace, unwritable characters: :func:`hale_jax.textfile.unwritable`).
:func:`read_triples` returns ``None`` whenever a check fails or the file has a layout this
reader does not take as it is (a carriage return alone, a quote inside an unquoted CSV field, a
line longer than the csv module's field limit, a delimiter outside ASCII, an unreadable gzip
file ...): the caller then reads the files line by line, which gives the same result or raises
the one-line error naming the file and line.  This module never raises for bad input.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from hale_jax.textfile import unwritable

WHITESPACE = "whitespace"
CSV_DELIMITERS = (",", ";")
PROGRESS_BYTES = 32 << 20  # files at least this big get a progress line
_CHUNK = 1 << 26           # bytes scanned at a time, to bound temporary memory
_BLOCK = 4 << 20           # pyarrow's parse block
_LONGEST_CSV_LINE = 100_000  # below the csv module's field limit (131,072 characters)
_PLAIN_NAME = r"^[!-~](?:[ -~]*[!-~])?$"  # printable ASCII, no space at either end
_LF, _CR, _QUOTE, _SPACE, _TAB = 10, 13, 34, 32, 9
_BOM = b"\xef\xbb\xbf"
# Every character but " \t\n\r" for which str.isspace() holds, as UTF-8.
_OTHER_SPACES = tuple(c.encode("utf-8") for c in "\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680"
                      "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                      "\u2028\u2029\u202f\u205f\u3000")


@dataclasses.dataclass(frozen=True)
class Format:
  """How a file is laid out: ``delimiter`` (one character or :data:`WHITESPACE`; comma and
  semicolon files are quoted CSV), the number of fields a line has, where the head, relation
  and tail are among them, and whether the first line is a header."""
  delimiter: str = "\t"
  width: int = 3
  positions: tuple[int, int, int] = (0, 1, 2)
  header: bool = False


@dataclasses.dataclass(frozen=True)
class Encoded:
  """Sorted entity and relation names, and per file its ``[T, 3]`` int32 triples in file
  order (head, relation, tail ids)."""
  entities: tuple[str, ...]
  relations: tuple[str, ...]
  triples: list[np.ndarray]


class _Fallback(Exception):
  """The fast pass cannot vouch for this input; read it line by line."""


def read_triples(paths: Sequence[Path], formats: Sequence[Format], *,
                 strip_whitespace: bool = False,
                 log: Callable[[str], None] | None = None) -> Encoded | None:
  """The triples of ``paths`` (each read with its format) over one vocabulary, or ``None``
  when the files must be read line by line (module docs)."""
  big = [p for p in paths if _size(p) >= PROGRESS_BYTES]
  say = log if (log is not None and big) else (lambda line: None)
  try:
    files = [_read_file(Path(p), f, say) for p, f in zip(paths, formats)]
    start = time.perf_counter()
    out = _encode(files, strip_whitespace)
  except _Fallback as why:
    say(f"  {why}; reading the files line by line instead")
    return None
  finally:
    files = None
    release_arrow_memory()
  say(f"  ids of {len(out.entities):,} entities and {len(out.relations):,} relations in "
      f"{time.perf_counter() - start:.1f} s")
  return out


def release_arrow_memory() -> None:
  """Hands the memory pyarrow's pool keeps for reuse back to the system: the string columns
  of a large file are gone once encoded, and the rest of a run allocates through NumPy and
  XLA, which would otherwise add to it."""
  pa.default_memory_pool().release_unused()


def _size(path) -> int:
  try:
    return Path(path).stat().st_size
  except OSError:
    return 0


def _read_file(path: Path, fmt: Format, say: Callable[[str], None]) -> list[pa.ChunkedArray]:
  """The head, relation and tail columns of one file, as strings."""
  size = _size(path)
  if size >= PROGRESS_BYTES:
    say(f"reading {path.name} ({size / 1e6:,.0f} MB) ...")
  start = time.perf_counter()
  if not path.is_file() or (fmt.delimiter != WHITESPACE
                            and len(fmt.delimiter.encode("utf-8")) != 1):
    raise _Fallback(f"{path.name}: a missing file or a delimiter outside ASCII")
  raw = _checked_bytes(path)
  quoted = fmt.delimiter in CSV_DELIMITERS
  if quoted:
    _check_csv(raw, fmt.delimiter, path)
  body = _after_header(raw, fmt, path) if fmt.header else raw
  if len(body) == 0:
    raise _Fallback(f"{path.name}: no triples")
  if fmt.delimiter == WHITESPACE:
    _check_spaces(body, path)
    body = _squeeze(body)
    if len(body) == 0 or body[-1] == _LF:  # pyarrow would skip a blank last line
      raise _Fallback(f"{path.name}: a blank line")
  if body[:3].tobytes() == _BOM:  # pyarrow would drop it; here it is part of a name
    raise _Fallback(f"{path.name}: a second byte-order mark")
  columns = _parse(body, fmt, quoted, path)
  if size >= PROGRESS_BYTES:
    say(f"  {path.name}: {len(columns[0]):,} triples in {time.perf_counter() - start:.1f} s")
  return columns


# ----------------------------------------------------------------------------- raw bytes

def _checked_bytes(path: Path) -> np.ndarray:
  """The file's bytes (gunzipped for ``.gz``) without a leading byte-order mark and without
  line endings at the end; valid UTF-8 whose only carriage returns precede a line feed."""
  if path.suffix == ".gz":
    try:
      raw = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8)
    except (OSError, EOFError, zlib.error):
      raise _Fallback(f"{path.name}: not a readable gzip file") from None
  else:
    try:
      raw = np.frombuffer(pa.memory_map(str(path)).read_buffer(), np.uint8)
    except OSError:
      raise _Fallback(f"{path.name}: an unreadable file") from None
  start = 3 if raw[:3].tobytes() == _BOM else 0
  end = len(raw)
  while end > start and raw[end - 1] in (_LF, _CR):
    end -= 1
  raw = raw[start:end]
  _check_utf8(raw, path)
  for lo in range(0, len(raw), _CHUNK):
    cr = np.flatnonzero(raw[lo:lo + _CHUNK] == _CR) + lo
    if len(cr) and (raw[cr + 1] != _LF).any():  # the last byte is no CR: cr + 1 exists
      raise _Fallback(f"{path.name}: a carriage return that ends no line")
  return raw


def _check_utf8(raw: np.ndarray, path: Path) -> None:
  decoder = codecs.getincrementaldecoder("utf-8")()
  try:
    for lo in range(0, len(raw), _CHUNK):
      chunk = raw[lo:lo + _CHUNK]
      if chunk.max(initial=0) >= 0x80 or decoder.getstate()[0]:
        decoder.decode(memoryview(chunk))
    decoder.decode(b"", final=True)
  except UnicodeDecodeError:
    raise _Fallback(f"{path.name}: bytes that are not UTF-8") from None


def _positions(raw: np.ndarray, *values: int) -> np.ndarray:
  """Where ``raw`` holds any of ``values``, scanned in chunks."""
  out = []
  for lo in range(0, len(raw), _CHUNK):
    chunk = raw[lo:lo + _CHUNK]
    hit = chunk == values[0]
    for v in values[1:]:
      hit |= chunk == v
    out.append(np.flatnonzero(hit) + lo)
  return np.concatenate(out) if out else np.zeros(0, np.int64)


def _check_csv(raw: np.ndarray, delimiter: str, path: Path) -> None:
  """Quoted CSV the fast reader parses as Python's csv module does: no line near the csv
  module's field limit, and quotes only around whole fields (a quoted field opens at the start
  of a field, closes before a delimiter or the end of a line, doubles its inner quotes and
  holds no line break)."""
  breaks = _positions(raw, _LF)
  edges = np.concatenate([[-1], breaks, [len(raw)]])
  if np.diff(edges).max() > _LONGEST_CSV_LINE:
    raise _Fallback(f"{path.name}: a line longer than {_LONGEST_CSV_LINE:,} bytes")
  quotes = _positions(raw, _QUOTE)
  if len(quotes) == 0:
    return
  if len(quotes) % 2:
    raise _Fallback(f"{path.name}: an odd number of quotes")
  opening, closing = quotes[0::2], quotes[1::2]
  bounds = np.array([ord(delimiter), _LF, _CR, _QUOTE], np.uint8)
  before = raw[np.maximum(opening - 1, 0)]
  after = raw[np.minimum(closing + 1, len(raw) - 1)]
  ok = ((opening == 0) | np.isin(before, bounds)) & (
      (closing == len(raw) - 1) | np.isin(after, bounds))
  same_line = np.searchsorted(breaks, opening) == np.searchsorted(breaks, closing)
  if not (ok.all() and same_line.all()):
    raise _Fallback(f"{path.name}: quotes inside a field, or a quoted line break")


def _next_line(raw: np.ndarray, start: int) -> int:
  """The index just past the first line feed at or after ``start`` (``len(raw)`` if none)."""
  for lo in range(start, len(raw), 1 << 20):
    hit = np.flatnonzero(raw[lo:lo + (1 << 20)] == _LF)
    if len(hit):
      return lo + int(hit[0]) + 1
  return len(raw)


def _after_header(raw: np.ndarray, fmt: Format, path: Path) -> np.ndarray:
  """The bytes after the header line, once the header has the expected number of fields."""
  end = _next_line(raw, 0)
  line = raw[:end].tobytes().decode("utf-8").rstrip("\n").rstrip("\r")
  if line.strip() == "":
    count = 0
  elif fmt.delimiter in CSV_DELIMITERS:
    count = len(next(csv.reader([line], delimiter=fmt.delimiter, strict=True)))
  elif fmt.delimiter == WHITESPACE:
    count = len(line.split())
  else:
    count = len(line.split(fmt.delimiter))
  if count != fmt.width:
    raise _Fallback(f"{path.name}: a header of {count} fields")
  return raw[end:]


def _check_spaces(raw: np.ndarray, path: Path) -> None:
  """No whitespace but spaces, tabs and line ends: Python's ``split()`` also splits at the
  others (a no-break space, U+2028 ...), in any column."""
  for lo in range(0, len(raw), _CHUNK):
    chunk = raw[lo:lo + _CHUNK + 2].tobytes()  # 2 more: a character cut by the chunk's end
    if any(space in chunk for space in _OTHER_SPACES):
      raise _Fallback(f"{path.name}: a whitespace character other than space and tab")


def _line_chunks(raw: np.ndarray):
  """``(start, stop)`` spans of about :data:`_CHUNK` bytes that begin and end at lines."""
  lo = 0
  while lo < len(raw):
    hi = _next_line(raw, lo + _CHUNK - 1) if lo + _CHUNK < len(raw) else len(raw)
    yield lo, hi
    lo = hi


def _squeeze(raw: np.ndarray) -> np.ndarray:
  """Whitespace-separated lines made tab-separated: each run of spaces and tabs inside a line
  becomes one tab, runs at either end of a line go (Python's ``line.split()``, once
  :func:`_check_spaces` found no other whitespace character)."""
  out = []
  for lo, hi in _line_chunks(raw):
    chunk = raw[lo:hi]
    sep = (chunk == _SPACE) | (chunk == _TAB)
    keep = ~sep
    keep[1:] |= sep[1:] & ~sep[:-1]  # the first byte of each run
    chunk, sep = chunk[keep], sep[keep]
    ends = (chunk == _LF) | (chunk == _CR)
    at_start = np.concatenate([[True], ends[:-1]])
    at_end = np.concatenate([ends[1:], [True]])
    chunk = chunk[~(sep & (at_start | at_end))]
    chunk[chunk == _SPACE] = _TAB
    out.append(chunk)
  return np.concatenate(out)


# ----------------------------------------------------------------------------- columns

def _parse(body: np.ndarray, fmt: Format, quoted: bool, path: Path) -> list[pa.ChunkedArray]:
  names = [f"f{i}" for i in range(fmt.width)]
  chosen = [names[p] for p in fmt.positions]
  delimiter = "\t" if fmt.delimiter == WHITESPACE else fmt.delimiter
  try:
    table = pcsv.read_csv(
        pa.BufferReader(pa.py_buffer(body)),
        read_options=pcsv.ReadOptions(column_names=names, block_size=_BLOCK),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter, quote_char='"' if quoted else False, double_quote=quoted,
            escape_char=False, newlines_in_values=False, ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in chosen}, include_columns=chosen,
            strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=False))
  except (pa.ArrowException, ValueError) as err:
    raise _Fallback(f"{path.name}: {' '.join(str(err).split())[:80]}") from None
  return [table.column(c) for c in chosen]


def _checked_names(raw: pa.Array, strip: bool) -> pa.Array:
  """The distinct names ``raw`` after the line-by-line rules: printable ASCII names pass as
  they are; the others are checked (and stripped) one by one in Python."""
  plain = pc.match_substring_regex(raw, _PLAIN_NAME).to_numpy(zero_copy_only=False)
  flagged = np.flatnonzero(~plain)
  if len(flagged) == 0:
    return raw
  given = raw.take(pa.array(flagged)).to_pylist()
  fixed = []
  for name in given:
    if strip:
      name = name.strip()
    if name.strip() == "" or name != name.strip() or unwritable(name) is not None:
      raise _Fallback("a field that is empty, has whitespace around it or holds a character "
                      "a name may not hold")
    fixed.append(name)
  if fixed == given:
    return raw
  mask = np.zeros(len(raw), bool)
  mask[flagged] = True
  return pc.replace_with_mask(raw, pa.array(mask), pa.array(fixed, pa.string()))


def _sorted_names(given: pa.Array, strip: bool) -> tuple[tuple[str, ...], np.ndarray]:
  """The sorted distinct names of dictionary ``given`` (after :func:`_checked_names`), and
  for each entry of ``given`` the index of its name among them."""
  final = _checked_names(given, strip)
  if final is given:  # already distinct: sort, and invert the permutation
    order = pc.sort_indices(given).to_numpy(zero_copy_only=False)
    remap = np.empty(len(order), np.int32)
    remap[order] = np.arange(len(order), dtype=np.int32)
    return tuple(given.take(order).to_pylist()), remap
  distinct = pc.unique(final)  # stripping made some names equal
  names = distinct.take(pc.sort_indices(distinct))
  remap = pc.index_in(final, value_set=names).to_numpy(zero_copy_only=False).astype(np.int32)
  return tuple(names.to_pylist()), remap


def _where(array: pa.Array) -> tuple:
  """The length and buffer addresses of ``array``: equal for arrays sharing their memory."""
  return len(array), tuple(b.address if b is not None else None for b in array.buffers())


def _fill(files: list[list], roles: tuple[int, ...], triples: list[np.ndarray],
          strip: bool) -> tuple[str, ...]:
  """Encodes columns ``roles`` (0 head, 1 relation, 2 tail) of all ``files`` over one
  vocabulary, writes the ids into ``triples`` and returns the sorted names.  The string
  columns are dropped from ``files`` once encoded."""
  spans, chunks = [], []  # (file, role, first row) of each chunk
  for f, columns in enumerate(files):
    for role in roles:
      row = 0
      for chunk in columns[role].chunks:
        spans.append((f, role, row))
        chunks.append(chunk)
        row += len(chunk)
      columns[role] = None
  # One hash table over all chunks: every chunk's dictionary is the same array.
  column = pc.dictionary_encode(pa.chunked_array(chunks, type=pa.string()))
  del chunks
  if len({_where(c.dictionary) for c in column.chunks}) > 1:
    column = pa.table({"n": column}).unify_dictionaries().column(0)
  names, remap = _sorted_names(column.chunk(0).dictionary, strip)
  for (f, role, row), chunk in zip(spans, column.chunks):
    indices = chunk.indices.to_numpy(zero_copy_only=False)
    triples[f][row:row + len(indices), role] = remap[indices]
  return names


def _encode(files: list[list[pa.ChunkedArray]], strip: bool) -> Encoded:
  triples = [np.empty((len(columns[0]), 3), np.int32) for columns in files]
  entities = _fill(files, (0, 2), triples, strip)
  relations = _fill(files, (1,), triples, strip)
  return Encoded(entities, relations, triples)

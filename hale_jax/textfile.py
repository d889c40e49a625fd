"""Reading triples as text, line by line: the exact rules every reader of hale_jax follows.

A file is UTF-8 (gunzipped first when its name ends in ``.gz``); one byte-order mark at its very
start is dropped.  Lines end in ``\\n`` (a ``\\r`` before it is dropped) and blank lines at the
end are ignored.  A name (a head, relation or tail field) must not be empty, must not start or
end with whitespace (unless the caller strips every field), and must not hold a character that
cannot be written on one line of ``entities.tsv`` or of a ``--queries`` file: a control
character (U+0000-U+001F, U+007F-U+009F: tab, line feed, carriage return, ...), a line or
paragraph separator (U+2028, U+2029) or a byte-order mark (U+FEFF, often left in the middle of a
file by concatenating files saved on Windows).

Bad input raises :class:`DataError`, a ``ValueError`` whose message is one line naming the file,
the line, what is wrong and what to do.  :mod:`hale_jax.columnar` reads the same files much
faster and must agree with these rules on every input; where it cannot tell, the reader runs
this module's line-by-line pass, which raises the error.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import Sequence

_FIELDS = ("head", "relation", "tail")
# Characters a name may not hold: control characters, line and paragraph separators, and the
# byte-order mark.  Every character that str.splitlines() breaks at is among them.
_UNWRITABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class DataError(ValueError):
  """Bad or missing input data; ``str(err)`` is one line meant for the user."""


def one_line(text) -> str:
  """``str(text)`` with every run of whitespace, newlines included, made one space."""
  return " ".join(str(text).split())


def read_text(path: Path) -> str:
  """The UTF-8 text of ``path`` (gunzipped if it ends in ``.gz``) without a leading byte-order
  mark; bad bytes raise a :class:`DataError` naming the line (editors on Windows often save a
  BOM, which would otherwise become part of the first head's name)."""
  raw = path.read_bytes()
  if path.suffix == ".gz":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
      raise DataError(f"{path}: not a readable gzip file ({one_line(err)}); decompress it by "
                      f"hand or fetch it again") from None
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as err:
    line = raw.count(b"\n", 0, err.start) + 1
    raise DataError(f"{path}:{line}: bytes that are not UTF-8 ({raw[err.start:err.end]!r}); "
                    f"re-encode the file as UTF-8") from None
  return text[1:] if text.startswith("\ufeff") else text


def text_lines(text: str) -> list[tuple[int, str]]:
  """``(line number, line)`` without ``\\r``; blank lines at the end are dropped (a final
  newline, or several, is common and harmless)."""
  lines = text.split("\n")
  while lines and lines[-1].strip("\r") == "":
    lines.pop()
  return [(number, line.rstrip("\r")) for number, line in enumerate(lines, start=1)]


def unwritable(name: str) -> str | None:
  """What makes ``name`` impossible to write on one line (``"a line break (U+2028)"``), or
  ``None`` when it has no such character (module docs)."""
  found = _UNWRITABLE.search(name)
  if found is None:
    return None
  char = found.group(0)
  code = f"U+{ord(char):04X}"
  if char == "\ufeff":
    return f"a byte-order mark ({code}) inside the name"
  if char in _BREAKS:
    return f"a line break ({code})"
  if char == "\t":
    return f"a tab ({code})"
  return f"a control character ({code})"


def _shown(field: str) -> str:
  return repr(field if len(field) <= 60 else field[:57] + "...")


def check_fields(path: Path, number: int, fields: Sequence[str],
                 strip_whitespace: bool = False) -> tuple[str, str, str]:
  """``(head, relation, tail)`` after refusing empty fields, names that cannot be written on
  one line (:func:`unwritable`) and, unless ``strip_whitespace``, fields with leading or
  trailing whitespace (``"paris "`` and ``"paris"`` would silently be two entities)."""
  out = []
  for field, role in zip(fields, _FIELDS):
    if strip_whitespace:
      field = field.strip()
    if field.strip() == "":
      raise DataError(f"{path}:{number}: the {role} field is empty; every triple needs a "
                      f"head, a relation and a tail")
    if field != field.strip():
      raise DataError(f"{path}:{number}: the {role} field {_shown(field)} has leading or "
                      f"trailing whitespace; fix the file, or pass strip_whitespace=True "
                      f"(--strip_whitespace) to strip every field")
    problem = unwritable(field)
    if problem is not None:
      raise DataError(f"{path}:{number}: the {role} field {_shown(field)} holds {problem}; "
                      f"remove it from the name in the file (a name must fit on one line of "
                      f"entities.tsv and of a --queries file)")
    out.append(field)
  return out[0], out[1], out[2]

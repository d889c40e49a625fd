"""hale_jax.columnar: the fast reader gives exactly what the line-by-line reader gives.

Every case is read twice through the public functions: as they run (the columnar reader,
falling back to the line-by-line pass on a problem) and with the columnar reader switched off.
The results (or the errors) must be identical, and for good input the columnar reader must
really have done the reading.
"""

from __future__ import annotations

import csv
import gzip
import io

import numpy as np
import pytest

from hale_jax import columnar, data_file
from hale_jax import data as kgdata
from hale_jax.data import DataError

# Name characters: ASCII punctuation (quotes included), accents, CJK, an astral emoji, a
# replacement character and a no-break space; code points chosen so that byte order and
# code-point order would differ from a naive UTF-16 order.
_CHARS = list("abcxyzQP0189_-.:/'()[]#\"!?") + ["é", "ß", "中", "文", "😀", "\ufffd", "ÿ",
                                                 "\u00a0", "Ω"]
_WS_ASCII = " \t"


@pytest.fixture(params=["default", "tiny-chunks", "unified"])
def chunks(request, monkeypatch):
  """Runs a test with the reader's scan chunks and pyarrow blocks as they are, and tiny (so
  that multi-byte characters, lines and columns straddle chunk boundaries), and tiny with
  the chunks' dictionaries unified after encoding (the path taken if pyarrow ever gives each
  chunk its own dictionary)."""
  if request.param != "default":
    monkeypatch.setattr(columnar, "_CHUNK", 7)
    monkeypatch.setattr(columnar, "_BLOCK", 256)
  if request.param == "unified":
    monkeypatch.setattr(columnar, "_where", lambda array: object())
  return request.param


def _name(rng, banned: str = "", inner_space: bool = True) -> str:
  chars = [c for c in _CHARS if c not in banned]
  text = "".join(rng.choice(chars) for _ in range(rng.integers(1, 7)))
  if inner_space and rng.random() < 0.2 and " " not in banned:
    text = text[:1] + " " + text[1:] + "z"
  if text != text.strip():
    text = f"x{text}x"
  return text


def _triples(rng, count: int, banned: str = "", inner_space: bool = True):
  entities = [_name(rng, banned, inner_space) for _ in range(25)]
  relations = [_name(rng, banned, inner_space) for _ in range(4)]
  return [(entities[rng.integers(25)], relations[rng.integers(4)], entities[rng.integers(25)])
          for _ in range(count)]


def _named(data: kgdata.KGData, split: str):
  return [(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in data.split(split)]


def _same(a: kgdata.KGData, b: kgdata.KGData) -> None:
  assert (a.name, a.source, a.entities, a.relations) == (b.name, b.source, b.entities, b.relations)
  for s in kgdata.SPLITS:
    assert a.split(s).dtype == b.split(s).dtype == np.int32
    np.testing.assert_array_equal(a.split(s), b.split(s))


def _both(monkeypatch, read):
  """``(result as it runs, result line by line, whether the columnar reader returned data)``;
  a result is ``("error", message)`` when ``read`` raises a DataError."""
  original, used = columnar.read_triples, []

  def spy(*args, **kwargs):
    out = original(*args, **kwargs)
    used.append(out is not None)
    return out

  def run():
    try:
      return read()
    except DataError as err:
      return ("error", str(err))

  monkeypatch.setattr(columnar, "read_triples", spy)
  fast = run()
  monkeypatch.setattr(columnar, "read_triples", lambda *args, **kwargs: None)
  exact = run()
  monkeypatch.setattr(columnar, "read_triples", original)
  return fast, exact, all(used) and bool(used)


def _write_plain(path, rows, delimiter, rng, *, header=None, crlf=False, bom=False,
                 trailing="\n", pad=False, gz=False):
  """``rows`` of fields joined by ``delimiter`` (or runs of spaces and tabs for whitespace)."""
  def join(fields):
    if delimiter == data_file.WHITESPACE:
      runs = ["".join(rng.choice(list(_WS_ASCII)) for _ in range(rng.integers(1, 4)))
              for _ in range(len(fields) + 1)]
      lead = runs[0] if rng.random() < 0.3 else ""
      tail = runs[-1] if rng.random() < 0.3 else ""
      return lead + "".join(f + sep for f, sep in zip(fields[:-1], runs[1:])) + fields[-1] + tail
    if pad:
      fields = [" " * int(rng.integers(0, 2)) + f + " " * int(rng.integers(0, 2)) for f in fields]
    return delimiter.join(fields)
  lines = ([join(header)] if header else []) + [join(r) for r in rows]
  newline = "\r\n" if crlf else "\n"
  text = ("\ufeff" if bom else "") + newline.join(lines) + trailing.replace("\n", newline)
  raw = text.encode("utf-8")
  path.write_bytes(gzip.compress(raw) if gz else raw)
  return path


def _write_csv(path, rows, delimiter, *, header=None, quote_all=False, crlf=False, bom=False):
  out = io.StringIO()
  writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n",
                      quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
  writer.writerows(([header] if header else []) + rows)
  path.write_bytes((("\ufeff" if bom else "") + out.getvalue()).encode("utf-8"))
  return path


def _rows(triples, columns: str, rng):
  """Lines' fields for ``columns`` (extra columns get random tokens)."""
  names = columns.split(",")
  rows = []
  for h, r, t in triples:
    by_role = {"head": h, "relation": r, "tail": t}
    rows.append([by_role.get(n, f"w{rng.integers(1000)}") for n in names])
  return rows


# ----------------------------------------------------------------------------------------------
# Good input: identical data, read by the columnar reader.


@pytest.mark.parametrize("crlf,bom,trailing,strip", [
    (False, False, "\n", False), (True, True, "\n\n", False), (False, True, "", False),
    (True, False, "\r\n\n", True), (False, False, "\n", True)])
def test_folder_matches_line_by_line(tmp_path, rng, monkeypatch, chunks, crlf, bom, trailing,
                                     strip):
  splits = {s: _triples(rng, n, banned="\t") for s, n in zip(kgdata.SPLITS, (120, 15, 15))}
  folder = tmp_path / "kg"
  folder.mkdir()
  for s in kgdata.SPLITS:
    _write_plain(folder / f"{s}.txt", [list(t) for t in splits[s]], "\t", rng, crlf=crlf,
                 bom=bom, trailing=trailing, pad=strip)
  fast, exact, used = _both(monkeypatch, lambda: kgdata.load_folder(folder,
                                                                    strip_whitespace=strip))
  assert used, "the columnar reader fell back on good input"
  _same(fast, exact)
  for s in kgdata.SPLITS:
    assert _named(fast, s) == splits[s]


@pytest.mark.parametrize("delimiter,suffix,columns,header,gz", [
    ("tab", ".tsv", "head,relation,tail", False, False),
    (None, ".tsv.gz", "relation,head,tail", True, True),
    ("space", ".txt", "head,relation,tail", False, False),
    ("pipe", ".psv", "id,head,relation,tail,weight", True, False),
    ("#", ".data", "tail,x,relation,head", False, False),
    ("whitespace", ".txt", "head,relation,tail", False, False),
    ("whitespace", ".txt.gz", "x,tail,head,relation", True, True),
    (None, ".txt", "head,tail,relation", False, False),
])
def test_split_files_match_line_by_line(tmp_path, rng, monkeypatch, chunks, delimiter, suffix,
                                        columns, header, gz):
  char = data_file.parse_delimiter(delimiter, f"x{suffix}")
  whitespace = char == data_file.WHITESPACE
  banned = ("\u00a0 \t" if whitespace else "\t" + char)
  splits = {s: _triples(rng, n, banned=banned, inner_space=not whitespace)
            for s, n in zip(kgdata.SPLITS, (100, 12, 12))}
  paths = []
  for s in kgdata.SPLITS:
    paths.append(_write_plain(tmp_path / f"{s}{suffix}", _rows(splits[s], columns, rng), char,
                              rng, header=columns.split(",") if header else None, gz=gz,
                              crlf=bool(rng.random() < 0.5), bom=bool(rng.random() < 0.5)))
  fast, exact, used = _both(monkeypatch, lambda: data_file.load_split_files(
      *paths, columns=columns, delimiter=delimiter, header=header))
  assert used, "the columnar reader fell back on good input"
  _same(fast, exact)
  for s in kgdata.SPLITS:
    assert _named(fast, s) == splits[s]


@pytest.mark.parametrize("delimiter,quote_all,header,strip", [
    (",", False, False, False), (",", True, True, False), (";", False, True, True),
    (";", True, False, True)])
def test_csv_matches_line_by_line(tmp_path, rng, monkeypatch, chunks, delimiter, quote_all,
                                  header, strip):
  columns = "relation,tail,x,head"
  splits = {s: _triples(rng, n, banned="\t") for s, n in zip(kgdata.SPLITS, (100, 12, 12))}
  # names that need quotes: the delimiter, quotes, both at the start
  splits["train"] += [("Paris, France", 'said "hi"', '"quoted"'), ("a;b", "r", '"x,"y')]
  suffix = ".csv" if delimiter == "," else ".ssv"
  paths = []
  for s in kgdata.SPLITS:
    rows = _rows(splits[s], columns, rng)
    if strip:
      rows = [[" " + f + " " for f in row] for row in rows]
    paths.append(_write_csv(tmp_path / f"{s}{suffix}", rows, delimiter,
                            header=columns.split(",") if header else None, quote_all=quote_all,
                            crlf=bool(rng.random() < 0.5), bom=bool(rng.random() < 0.5)))
  fast, exact, used = _both(monkeypatch, lambda: data_file.load_split_files(
      *paths, columns=columns, delimiter=delimiter, header=header, strip_whitespace=strip))
  assert used, "the columnar reader fell back on good input"
  _same(fast, exact)
  for s in kgdata.SPLITS:
    assert _named(fast, s) == splits[s]


@pytest.mark.parametrize("fractions,seed", [("0.8,0.1,0.1", 0), ("0.5,0.25,0.25", 3),
                                            ("0.6,0.4,0", 1)])
def test_one_file_matches_line_by_line(tmp_path, rng, monkeypatch, chunks, fractions, seed):
  triples = _triples(rng, 300, banned="\t,")
  triples += triples[:20]  # duplicates, dropped before the split
  path = _write_plain(tmp_path / "kg.tsv", [list(t) for t in triples], "\t", rng)
  fast, exact, used = _both(monkeypatch, lambda: data_file.load_triples_file(
      path, fractions=fractions, seed=seed))
  if fractions.endswith(",0"):  # an empty test split: the same error both ways
    assert fast == exact and fast[0] == "error" and "leaves test empty" in fast[1]
    return
  assert used
  _same(fast[0], exact[0])
  assert fast[1] == exact[1] and fast[1].duplicates >= 20


def test_names_sort_in_code_point_order(tmp_path, monkeypatch):
  # UTF-16 would put U+FFFD after U+1F600; code points (and UTF-8 bytes) put it before.
  names = ["\U0001F600", "\ufffd", "z", "Z", "é", "e\u0301", "中", "x\u00a0x", "a b", "a"]
  folder = tmp_path / "kg"
  folder.mkdir()
  rows = [f"{names[i]}\tr\t{names[(i + 1) % len(names)]}" for i in range(len(names))]
  for s in kgdata.SPLITS:
    (folder / f"{s}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
  fast, exact, used = _both(monkeypatch, lambda: kgdata.load_folder(folder))
  assert used and fast.entities == tuple(sorted(names)) == exact.entities


def test_the_whitespace_list_is_pythons():
  spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()} - set(" \t\n\r")
  assert {b.decode("utf-8") for b in columnar._OTHER_SPACES} == spaces


# ----------------------------------------------------------------------------------------------
# Layouts the columnar reader leaves to the line-by-line pass, which reads them well.


@pytest.mark.parametrize("name,text,delimiter,columns", [
    ("kg.csv", 'a"b,r,c\nd,r,e\n', None, "head,relation,tail"),  # a quote inside a field
    ("kg.txt", "a§r§b\nc§r§d\n", "§", "head,relation,tail"),     # a delimiter outside ASCII
    ("kg.tsv", "a\tr\tb\r\r\nc\tr\td\n", None, "head,relation,tail"),  # CRs end the line
    # a no-break space separates fields here: a, b, r, c
    ("kg.txt", "a\u00a0b r c\nd x r e\n", "whitespace", "head,x,relation,tail"),
    ("kg.txt", "a b\u3000c r d\ne f h r g\n", "whitespace", "head,x,y,relation,tail"),
    ("kg.txt", "a b\x0cc r d\ne f h r g\n", "whitespace", "head,x,y,relation,tail"),
    # near the csv module's field limit
    ("kg.csv", "a,x,r,b\n" + "x" * 120_000 + ",y,r,c\n", None, "head,x,relation,tail"),
])
def test_layouts_left_to_the_line_by_line_pass(tmp_path, monkeypatch, name, text, delimiter,
                                               columns):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  fast, exact, used = _both(monkeypatch, lambda: data_file.load_split_files(
      path, path, path, delimiter=delimiter, columns=columns))
  assert not used
  _same(fast, exact)


# ----------------------------------------------------------------------------------------------
# Bad input: the columnar reader declines, the error is today's, word for word.

GOOD = "a\tr\tb\n"


@pytest.mark.parametrize("content", [
    GOOD + "a\tr\n", GOOD + GOOD + "a\tr\tb\tc\n", "a\tr b\n", GOOD + "a\t\tb\n", " \tr\tb\n",
    GOOD + "a\tr\t\r\n", GOOD + "\n" + GOOD, GOOD + "\r\n" + GOOD, GOOD + " a\tr\tb\n",
    "a\tr \tb\n", GOOD + "a\tr\tb \r\n", "a\tr\tb\u00a0\n", "", "\n", "\r\n\r\n",
    GOOD + "a\rb\tr\tc\n", GOOD + "\ufeffa\tr\tb\n", "a\tr\u2028s\tb\n", "a\tr\tb\x85c\n",
    "a\tr\tb\x07\n", "a\tr\x7f\tb\n", "a\tr\t\x00\n",
], ids=lambda c: repr(c)[:30])
def test_bad_folder_errors_are_unchanged(tmp_path, monkeypatch, content):
  folder = tmp_path / "kg"
  folder.mkdir()
  for s in kgdata.SPLITS:
    (folder / f"{s}.txt").write_text(GOOD, encoding="utf-8")
  (folder / "valid.txt").write_bytes(content.encode("utf-8"))
  formats = [columnar.Format()] * 3
  assert columnar.read_triples([folder / f"{s}.txt" for s in kgdata.SPLITS], formats) is None
  fast, exact, _ = _both(monkeypatch, lambda: kgdata.load_folder(folder))
  assert fast == exact and fast[0] == "error" and str(folder / "valid.txt") in fast[1]


@pytest.mark.parametrize("name,content,kwargs", [
    ("kg.tsv", b"a\tr\tb\n\xffa\tr\tb\n", {}),
    ("kg.tsv", b"a\tr\tb\n\xe4\xb8", {}),
    ("kg.csv", b'a,r,b\na,r,"b"c\n', {}),
    ("kg.csv", b'a,r,b\na,r,"b\n', {}),
    ("kg.csv", b'a,r,"b\nc"\n', {}),
    ("kg.csv", b'a,r,"b\tc"\n', {}),
    ("kg.csv", b'a,r,"x",\n', {}),
    ("kg.csv", b'a,"",b\n', {}),
    ("kg.csv", b"head,relation\na,r,b\n", {"header": True}),
    ("kg.csv", b"head,relation,tail\n", {"header": True}),
    ("kg.csv", b"\n\na,r,b\n", {"header": True}),
    ("kg.txt", b"a  r\tb\n\na r b\n", {"delimiter": "whitespace"}),
    ("kg.txt", b"a r b\n \t \na r b\n", {"delimiter": "whitespace"}),
    ("kg.txt", b"a r b c\n", {"delimiter": "whitespace"}),
    ("kg.tsv.gz", b"not gzip", {}),
    ("kg.tsv", b"a\tr\tb\n", {"columns": "head,relation,tail,x"}),
], ids=lambda c: repr(c)[:30])
def test_bad_files_errors_are_unchanged(tmp_path, monkeypatch, name, content, kwargs):
  path = tmp_path / name
  path.write_bytes(content)
  good = tmp_path / "good.tsv"
  good.write_text(GOOD)
  fast, exact, used = _both(monkeypatch, lambda: data_file.load_split_files(
      path, good, good, **{"columns": "head,relation,tail", **kwargs}))
  assert not used
  assert fast == exact and fast[0] == "error" and str(path) in fast[1], fast


# ----------------------------------------------------------------------------------------------
# Names a run folder cannot hold are refused when read, with file and line.


@pytest.mark.parametrize("text,line,role,what", [
    ("a\tr\tb\n\ufeffc\tr\td\n", 2, "head", "byte-order mark (U+FEFF)"),
    ("a\tr\tb\nc\tr\u2028s\td\n", 2, "relation", "line break (U+2028)"),
    ("a\tr\tb\u2029c\n", 1, "tail", "line break (U+2029)"),
    ("a\x85b\tr\tc\n", 1, "head", "line break (U+0085)"),
    ("a\tr\tb\nc\tr\tx\x1by\n", 2, "tail", "control character (U+001B)"),
    ("a\tr\x00s\tb\n", 1, "relation", "control character (U+0000)"),
    ("a\tr\tb\nc\x9fd\tr\tb\n", 2, "head", "control character (U+009F)"),
])
def test_unwritable_names_are_refused(tmp_path, monkeypatch, text, line, role, what):
  folder = tmp_path / "kg"
  folder.mkdir()
  for s in kgdata.SPLITS:
    (folder / f"{s}.txt").write_text("a\tr\tb\n", encoding="utf-8")
  (folder / "test.txt").write_text(text, encoding="utf-8")
  fast, exact, _ = _both(monkeypatch, lambda: kgdata.load_folder(folder))
  assert fast == exact and fast[0] == "error"
  msg = fast[1]
  assert msg.startswith(f"{folder / 'test.txt'}:{line}: the {role} field "), msg
  assert what in msg and "remove it" in msg and "\n" not in msg and "\r" not in msg


@pytest.mark.parametrize("text,line,what", [
    ('h,r,t\na,r,b\nc,r,"two\nlines"\nd,r,e\n', 3, "line break (U+000A)"),
    ('a,r,b\nc,r,"two\r\nlines"\n', 2, "line break (U+000D)"),
    ('a,r,"tab\there"\n', 1, "tab (U+0009)"),
])
def test_line_breaks_in_quoted_csv_fields_are_refused(tmp_path, monkeypatch, text, line, what):
  path = tmp_path / "kg.csv"
  path.write_bytes(text.encode("utf-8"))
  header = text.startswith("h,")
  fast, exact, _ = _both(monkeypatch, lambda: data_file.load_triples_file(path, header=header))
  assert fast == exact and fast[0] == "error"
  assert fast[1].startswith(f"{path}:{line}: the tail field ") and what in fast[1], fast[1]
  assert "\n" not in fast[1]


def test_strip_whitespace_does_not_strip_a_byte_order_mark(tmp_path, monkeypatch):
  path = tmp_path / "kg.tsv"
  path.write_text("a\tr\tb\n\ufeff c\tr\td\n", encoding="utf-8")
  fast, exact, _ = _both(monkeypatch, lambda: data_file.load_split_files(
      path, path, path, strip_whitespace=True))
  assert fast == exact and "byte-order mark" in fast[1] and f"{path}:2:" in fast[1]


# ----------------------------------------------------------------------------------------------
# Progress lines for big files only.


def test_progress_lines_for_big_files(tmp_path, monkeypatch):
  folder = tmp_path / "kg"
  folder.mkdir()
  for s in kgdata.SPLITS:
    (folder / f"{s}.txt").write_text("a\tr\tb\nb\tr\tc\n", encoding="utf-8")
  lines = []
  kgdata.load_folder(folder, log=lines.append)
  assert lines == []  # small files: nothing new is printed
  monkeypatch.setattr(columnar, "PROGRESS_BYTES", 10)
  kgdata.load_folder(folder, log=lines.append)
  assert lines[0].startswith("reading train.txt (0 MB) ...")
  assert "  train.txt: 2 triples in " in lines[1] and lines[1].endswith(" s")
  assert lines[-1].startswith("  ids of 3 entities and 1 relations in ")
  lines.clear()
  (folder / "test.txt").write_text("a\tr\n", encoding="utf-8")
  with pytest.raises(DataError, match="test.txt:1"):
    kgdata.load_folder(folder, log=lines.append)
  assert lines[-1].startswith("  test.txt: ") and "\t" not in lines[-1]
  assert lines[-1].endswith("; reading the files line by line instead")


# ----------------------------------------------------------------------------------------------
# Random, often broken files: both ways give the same data or the same error.

_PIECES = ["a", "b", "é", "Q1", "中", "\t", ",", ";", '"', "\r", "\n", "\r\n", " ", "  ", "|",
           "\ufeff", "\u2028", "\xa0", "\x0b", "\x00", "\n\n"]
_MODES = {"tsv": ("\t", ".tsv", None), "csv": (",", ".csv", None),
          "ssv": (";", ".csv", "semicolon"), "space": (" ", ".txt", "space"),
          "pipe": ("|", ".txt", "pipe"), "ws": (" \t", ".txt", "whitespace")}


def _random_text(rng, mode: str, width: int) -> str:
  separator = _MODES[mode][0]
  lines = []
  for _ in range(rng.integers(1, 7)):
    fields = ["".join(rng.choice(["a", "b", "é", "Q1"], rng.integers(1, 4))) for _ in range(width)]
    if mode in ("csv", "ssv") and rng.random() < 0.4:
      q = rng.integers(width)
      fields[q] = '"' + fields[q] + str(rng.choice(["", ",", '""', ";"])) + '"'
    line = (separator[int(rng.integers(len(separator)))] if mode == "ws" else separator).join(
        fields)
    for _ in range(rng.choice([0, 0, 1, 2])):
      at = int(rng.integers(len(line) + 1))
      line = line[:at] + str(rng.choice(_PIECES)) + line[at:]
    lines.append(line)
  return (str(rng.choice(["", "\ufeff"])) + str(rng.choice(["\n", "\r\n"])).join(lines)
          + str(rng.choice(["", "\n", "\r\n", "\n\n", "\r"])))


@pytest.mark.parametrize("mode", sorted(_MODES))
def test_random_files_read_alike(tmp_path, rng, monkeypatch, chunks, mode):
  _, suffix, delimiter = _MODES[mode]
  path = tmp_path / f"kg{suffix}"
  fast_reads = 0
  for _ in range(20):
    width = int(rng.choice([3, 4]))
    columns = "head,relation,tail" if width == 3 else str(rng.choice(
        ["x,head,relation,tail", "tail,relation,y,head"]))
    path.write_bytes(_random_text(rng, mode, width).encode("utf-8"))
    settings = {"delimiter": delimiter, "columns": columns, "header": bool(rng.random() < 0.2),
                "strip_whitespace": bool(rng.random() < 0.3)}
    if rng.random() < 0.3:
      fast, exact, used = _both(monkeypatch, lambda: data_file.load_triples_file(
          path, fractions=(0.5, 0.25, 0.25), **settings))
      fast, exact = (fast if fast[0] == "error" else fast[0]), (
          exact if exact[0] == "error" else exact[0])
    else:
      fast, exact, used = _both(monkeypatch, lambda: data_file.load_split_files(
          path, path, path, **settings))
    if isinstance(exact, tuple):
      assert fast == exact
    else:
      _same(fast, exact)
    fast_reads += used
  assert fast_reads > 0

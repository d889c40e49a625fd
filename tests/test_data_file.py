"""hale_jax.data_file: one file of triples (tsv/csv, any column order) split here, or three files."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from hale_jax import data as kgdata
from hale_jax import data_file
from hale_jax.data import DataError
import hale_jax
from hale_jax import rundir, synthetic

from benchmarks import faults
from tests import helpers

TRIPLES = [("paris", "capital_of", "france"), ("berlin", "capital_of", "germany"),
           ("france", "borders", "germany"), ("rome", "capital_of", "italy")]


def _one_line(err, path=None, line=None):
  msg = str(err.value)
  assert "\n" not in msg and "\r" not in msg, msg
  if path is not None:
    assert str(path) in msg, msg
  if line is not None:
    assert f"{path}:{line}:" in msg, msg
  return msg


def _write(path, text, encoding="utf-8"):
  path.write_bytes(text.encode(encoding))
  return path


def _graph(rng, entities=40, relations=5, count=300):
  """Distinct random triples over ``e0..``, ``r0..``, in a random order."""
  triples = {(f"e{rng.integers(entities)}", f"r{rng.integers(relations)}",
              f"e{rng.integers(entities)}") for _ in range(count)}
  return sorted(triples, key=lambda t: rng.random())


# ----------------------------------------------------------------------------------------------
# The columns, delimiter and fractions settings.


@pytest.mark.parametrize("columns,positions,width", [
    ("head,relation,tail", (0, 1, 2), 3),
    ("relation,head,tail", (1, 0, 2), 3),
    (" Head , TAIL,relation ", (0, 2, 1), 3),
    ("id,head,relation,tail,weight", (1, 2, 3), 5),
    ("x,tail,x,relation,head", (4, 3, 1), 5),
    (("tail", "head", "relation"), (1, 2, 0), 3),
])
def test_parse_columns(columns, positions, width):
  assert data_file.parse_columns(columns) == (positions, width)


@pytest.mark.parametrize("columns,hint", [
    ("head,tail", "relation is missing"),
    ("head,relation,relation,tail", "relation appears 2 times"),
    ("head,relation,tail,", "no name"),
    ("head relation tail", "head is missing"),
    ("haed,relation,tail", "head is missing"),
])
def test_parse_columns_refuses(columns, hint):
  with pytest.raises(DataError) as err:
    data_file.parse_columns(columns)
  msg = _one_line(err)
  assert hint in msg and "head,relation,tail" in msg


@pytest.mark.parametrize("delimiter,name,expected", [
    (None, "kg.tsv", "\t"), (None, "kg.TXT", "\t"), (None, "kg.csv", ","),
    (None, "kg.tsv.gz", "\t"), (None, "kg.csv.gz", ","), ("tab", "kg.csv", "\t"),
    ("\\t", "kg", "\t"), ("\t", "kg", "\t"),
    ("comma", "kg", ","), ("Semicolon", "kg", ";"), ("space", "kg", " "), ("|", "kg", "|"),
    ("whitespace", "kg.tsv", data_file.WHITESPACE),
])
def test_parse_delimiter(delimiter, name, expected):
  assert data_file.parse_delimiter(delimiter, name) == expected


@pytest.mark.parametrize("delimiter,name,hint", [
    (None, "kg.json", "--delimiter"), (None, "kg", "--delimiter"), ("ab", "kg.tsv", "not usable"),
    ("x", "kg.tsv", "not usable"), ('"', "kg.csv", "not usable"),
])
def test_parse_delimiter_refuses(delimiter, name, hint):
  with pytest.raises(DataError) as err:
    data_file.parse_delimiter(delimiter, name)
  assert hint in _one_line(err)


@pytest.mark.parametrize("given,expected", [
    ("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ((0.7, 0.15, 0.15), (0.7, 0.15, 0.15)),
    ([1, 0, 0], (1.0, 0.0, 0.0)), ("0.5, 0.25, 0.2500005", (0.5, 0.25, 0.2500005)),
])
def test_parse_fractions(given, expected):
  assert data_file.parse_fractions(given) == pytest.approx(expected)


@pytest.mark.parametrize("given", [
    "0.8,0.1", "0.8,0.1,0.1,0", "0.8,0.2,0.1", "1.1,-0.05,-0.05", "80,10,10", "a,b,c", "nan,0,1",
    (0.9, 0.1), 0.8, "0.8/0.1/0.1", "0.5,0.25,0.25001",
])
def test_parse_fractions_refuses(given):
  with pytest.raises(DataError) as err:
    data_file.parse_fractions(given)
  msg = _one_line(err)
  assert "sum to 1" in msg and "0.8,0.1,0.1" in msg


# ----------------------------------------------------------------------------------------------
# Reading one file.


def test_read_tsv_default(tmp_path):
  path = _write(tmp_path / "kg.tsv", "".join("\t".join(t) + "\n" for t in TRIPLES))
  assert data_file.read_triples_file(path) == TRIPLES


def test_read_csv_with_header_quotes_and_reordered_columns(tmp_path):
  text = ('id,relation,tail,head,weight\r\n'
          '1,capital_of,"Paris, France",x,0.5\r\n'
          '2,"said ""hi""",y,x,1\r\n'
          '\r\n')
  path = _write(tmp_path / "kg.csv", text)
  got = data_file.read_triples_file(path, "id,relation,tail,head,weight", header=True)
  assert got == [("x", "capital_of", "Paris, France"), ("x", 'said "hi"', "y")]
  # without header=True the header line is a triple
  assert data_file.read_triples_file(path, "x,relation,tail,head,x")[0] == (
      "head", "relation", "tail")


def test_read_other_delimiters_and_gzip(tmp_path):
  semi = _write(tmp_path / "kg.data", "a;r;b\nc;r;\"d;e\"\n")
  assert data_file.read_triples_file(semi, delimiter="semicolon") == [("a", "r", "b"),
                                                                      ("c", "r", "d;e")]
  spaced = _write(tmp_path / "kg.txt", "a  r\tb\n c r   d \n")
  assert data_file.read_triples_file(spaced, delimiter="whitespace") == [("a", "r", "b"),
                                                                       ("c", "r", "d")]
  piped = _write(tmp_path / "kg.psv", 'a|"r"|b\n')  # no quoting for other delimiters
  assert data_file.read_triples_file(piped, delimiter="|") == [("a", '"r"', "b")]
  packed = tmp_path / "kg.tsv.gz"
  packed.write_bytes(gzip.compress("\ufeffa\tr\tb\n".encode()))
  assert data_file.read_triples_file(packed) == [("a", "r", "b")]


def test_read_drops_byte_order_mark(tmp_path):
  for name in ("kg.tsv", "kg.csv"):
    sep = "\t" if name.endswith("tsv") else ","
    path = _write(tmp_path / name, "\ufeff" + sep.join(TRIPLES[0]) + "\n", "utf-8")
    assert data_file.read_triples_file(path) == [TRIPLES[0]]
  path = _write(tmp_path / "h.csv", "\ufeffhead,relation,tail\na,r,b\n")
  assert data_file.read_triples_file(path, header=True) == [("a", "r", "b")]


@pytest.mark.parametrize("name,content,line,hints", [
    ("kg.tsv", "a\tr\tb\na\tr\n", 2, ["2 tab-separated", "3 are expected"]),
    ("kg.csv", "a,r,b,c\n", 1, ["4 comma-separated", "columns head,relation,tail"]),
    ("kg.tsv", "a\tr\tb\n\na\tr\tb\n", 2, ["empty line"]),
    ("kg.tsv", "a\tr\tb\na\t\tb\n", 2, ["relation field is empty"]),
    ("kg.csv", "a,r,b\na, r,b\n", 2, ["whitespace", "strip_whitespace"]),
    ("kg.tsv", "a\tr\tb \n", 1, ["whitespace", "strip_whitespace"]),
    ("kg.tsv", "a\tr\tb\n\xffa\tr\tb\n", 2, ["utf-8"]),
    ("kg.csv", 'a,r,b\na,r,"b"c\n', 2, ["not valid csv", "quoting"]),
    ("kg.csv", 'a,r,b\na,r,"b\n', 2, ["not valid csv"]),
], ids=["few-fields", "many-fields", "empty-line", "empty-field", "csv-space", "tsv-space",
        "bad-bytes", "bad-quote", "open-quote"])
def test_read_bad_line_raises(tmp_path, name, content, line, hints):
  path = tmp_path / name
  path.write_bytes(content.encode("latin-1") if "\xff" in content else content.encode())
  with pytest.raises(DataError) as err:
    data_file.read_triples_file(path)
  msg = _one_line(err, path, line).lower()
  for hint in hints:
    assert hint.lower() in msg, msg


def test_read_header_with_wrong_width_raises(tmp_path):
  path = _write(tmp_path / "kg.csv", "head,relation\na,r,b\n")
  with pytest.raises(DataError) as err:
    data_file.read_triples_file(path, header=True)
  assert "the header has 2" in _one_line(err, path, 1)


def test_read_strip_whitespace(tmp_path):
  path = _write(tmp_path / "kg.csv", "a , r,b\n")
  assert data_file.read_triples_file(path, strip_whitespace=True) == [("a", "r", "b")]


def test_read_missing_and_empty_files(tmp_path):
  with pytest.raises(DataError) as err:
    data_file.read_triples_file(tmp_path / "none.tsv")
  assert "no such file" in _one_line(err, tmp_path / "none.tsv")
  for text in ("", "\n\n", "head\trelation\ttail\n"):
    path = _write(tmp_path / "empty.tsv", text)
    with pytest.raises(DataError) as err:
      data_file.read_triples_file(path, header=True)
    assert "no triples" in _one_line(err, path)


# ----------------------------------------------------------------------------------------------
# Splitting.


def _check_split(triples, splits):
  assert sorted(splits["train"] + splits["valid"] + splits["test"]) == sorted(triples)
  for s in data_file.SPLITS:  # input order kept
    index = [triples.index(t) for t in splits[s]]
    assert index == sorted(index)
  entities = {x for h, _, t in splits["train"] for x in (h, t)}
  relations = {r for _, r, _ in splits["train"]}
  for s in ("valid", "test"):
    for h, r, t in splits[s]:
      assert h in entities and t in entities and r in relations


def test_split_covers_valid_and_test_names(rng):
  triples = _graph(rng, entities=150, count=200)
  splits, moved = data_file.split_triples(triples, (0.6, 0.2, 0.2), seed=3)
  _check_split(triples, splits)
  n = len(triples)
  drawn = int(0.2 * n + 0.5)
  assert len(splits["valid"]) + len(splits["test"]) + moved == 2 * drawn
  assert moved > 0  # 150 entities in 200 triples: some only occur in held-out triples
  assert len(splits["valid"]) <= drawn and len(splits["test"]) <= drawn


def test_split_sizes_when_nothing_moves():
  triples = [(f"e{i % 10}", "r", f"e{(i * 7 + 1) % 10}") for i in range(100)]
  triples = list(dict.fromkeys(triples)) + [(f"e{i}", "s", f"e{j}") for i in range(10)
                                            for j in range(10)]
  triples = list(dict.fromkeys(triples))
  splits, moved = data_file.split_triples(triples, (0.8, 0.1, 0.1), seed=0)
  _check_split(triples, splits)
  n = len(triples)
  assert moved == 0
  assert (len(splits["valid"]), len(splits["test"])) == (int(0.1 * n + 0.5), int(0.1 * n + 0.5))


def test_split_is_seeded(rng):
  triples = _graph(rng)
  a, moved_a = data_file.split_triples(triples, "0.8,0.1,0.1", seed=5)
  b, moved_b = data_file.split_triples(triples, (0.8, 0.1, 0.1), seed=5)
  c, _ = data_file.split_triples(triples, (0.8, 0.1, 0.1), seed=6)
  assert a == b and moved_a == moved_b
  assert a["test"] != c["test"]


def test_split_edge_cases():
  assert data_file.split_triples([], seed=0) == ({"train": [], "valid": [], "test": []}, 0)
  one = [("a", "r", "b")]
  assert data_file.split_triples(one, (0, 0.5, 0.5)) == ({"train": one, "valid": [], "test": []},
                                                         1)
  with pytest.raises(DataError, match="sum to 1"):
    data_file.split_triples(one, (0.5, 0.5, 0.5))


# ----------------------------------------------------------------------------------------------
# Writing, loading, split files.


def test_write_splits_round_trip(tmp_path, rng):
  triples = _graph(rng) + [("New York", "in country", "United States")]
  splits, _ = data_file.split_triples(triples, seed=1)
  folder = data_file.write_splits(splits, tmp_path / "run" / "data")
  assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
  back = kgdata.load_folder(folder)
  direct = kgdata.from_named_triples("x", splits)
  assert back.entities == direct.entities and back.relations == direct.relations
  for s in kgdata.SPLITS:
    np.testing.assert_array_equal(back.split(s), direct.split(s))


@pytest.mark.parametrize("bad", ["a\tb", "a\nb", " a", "a\r"])
def test_write_splits_refuses_names_a_tsv_cannot_hold(tmp_path, bad):
  splits = {"train": [("x", "r", "y")], "valid": [(bad, "r", "y")], "test": []}
  with pytest.raises(DataError) as err:
    data_file.write_splits(splits, tmp_path / "out")
  assert "valid" in _one_line(err, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_load_triples_file(tmp_path, rng):
  triples = _graph(rng)
  lines = [f"{r},{h},{t}" for h, r, t in triples]
  lines += lines[:7]  # duplicates, dropped before the split
  path = _write(tmp_path / "my-kg.csv", "relation,head,tail\n" + "\n".join(lines) + "\n")
  data, info = data_file.load_triples_file(path, "relation,head,tail", fractions="0.7,0.15,0.15",
                                          seed=2, header=True)
  assert data.name == "my-kg"
  assert info.read == len(triples) + 7 and info.duplicates == 7
  assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
  assert info.fractions == (0.7, 0.15, 0.15) and info.seed == 2
  assert info.sizes == {s: len(data.split(s)) for s in kgdata.SPLITS}
  assert sum(info.sizes.values()) == len(triples)
  splits, moved = data_file.split_triples(triples, (0.7, 0.15, 0.15), seed=2)
  assert moved == info.moved
  names = {s: [(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in
               data.split(s)] for s in kgdata.SPLITS}
  assert names == splits
  assert kgdata.check_data(data).clean()
  assert str(path.resolve()) in data.source and "seed 2" in data.source
  lines = info.lines()
  assert len(lines) == 2 and "7 duplicates dropped" in lines[0] and "moved to train" in lines[1]
  assert info.as_dict()["sizes"] == info.sizes
  again, _ = data_file.load_triples_file(path, "relation,head,tail", fractions="0.7,0.15,0.15",
                                        seed=2, header=True, name="other")
  assert again.name == "other" and again.entities == data.entities
  np.testing.assert_array_equal(again.test, data.test)


def test_load_triples_file_refuses_an_empty_valid_split(tmp_path):
  path = _write(tmp_path / "tiny.tsv", "a\tr\tb\nb\tr\tc\nc\tr\ta\n")
  with pytest.raises(DataError) as err:
    data_file.load_triples_file(path, fractions=(0.9, 0.05, 0.05))
  assert "leaves valid empty" in _one_line(err, path)


def test_load_split_files(tmp_path):
  _write(tmp_path / "tr.csv", "h,r,t\na,r1,b\nb,r2,c\n")
  _write(tmp_path / "va.csv", "h,r,t\na,r2,c\n")
  _write(tmp_path / "te.csv", "h,r,t\nc,r1,a\n")
  data = data_file.load_split_files(tmp_path / "tr.csv", tmp_path / "va.csv", tmp_path / "te.csv",
                                   columns="head,relation,tail", header=True, name="mine")
  assert data.name == "mine" and data.entities == ("a", "b", "c")
  assert data.relations == ("r1", "r2") and len(data.train) == 2
  # tab-separated .txt files give what load_folder gives for the same files
  folder = tmp_path / "kg"
  folder.mkdir()
  for s, text in (("train", "a\tr1\tb\nb\tr2\tc\n"), ("valid", "a\tr2\tc\n"),
                  ("test", "c\tr1\ta\n")):
    _write(folder / f"{s}.txt", text)
  files = data_file.load_split_files(*(folder / f"{s}.txt" for s in kgdata.SPLITS))
  ref = kgdata.load_folder(folder)
  assert files.name == "kg" and files.entities == ref.entities
  for s in kgdata.SPLITS:
    np.testing.assert_array_equal(files.split(s), ref.split(s))
  _write(folder / "test.txt", "c\tr1\n")
  with pytest.raises(DataError) as err:
    data_file.load_split_files(*(folder / f"{s}.txt" for s in kgdata.SPLITS))
  _one_line(err, folder / "test.txt", 1)


@pytest.mark.slow
def test_data_file_with_columns_split_and_seed(tmp_path, tmp_path_factory):
  g = synthetic.generate(seed=0, num_trees=2, branching=3, depth=3)
  everything = np.concatenate([g.train, g.valid, g.test])
  csv = tmp_path / "kg.csv"
  csv.write_text("relation,tail,head\n" + "".join(
      f"{g.relations[r]},{g.entities[t]},{g.entities[h]}\n" for h, r, t in everything))
  common = [f"--data_file={csv}", "--columns=relation,tail,head", "--header",
            "--dim=8", "--batch_size=64", "--max_epochs=2", "--max_seconds=0"]
  env = faults.launcher_env(helpers.compile_cache_dir(tmp_path_factory))
  (ok,) = helpers.cli_many([
      ("launch", *common, "--split=0.7,0.15,0.15", "--split_seed=3",
       f"--workdir={tmp_path / 'run'}")], env)
  assert ok.returncode == 0, ok.stderr
  from hale_jax import data_file  # pylint: disable=import-outside-toplevel
  want, info = data_file.load_triples_file(csv, "relation,tail,head", fractions="0.7,0.15,0.15",
                                          seed=3, header=True)
  results = faults.strict_json((tmp_path / "run" / "results.json").read_text())
  ds = results["dataset"]
  assert (ds["train"], ds["valid"], ds["test"]) == (len(want.train), len(want.valid),
                                                    len(want.test))
  assert ds["entities"] == g.num_entities and info.read == len(everything)
  assert abs(ds["valid"] - 0.15 * len(everything)) <= 5
  spec = rundir.read_run(tmp_path / "run")["data"]
  assert spec["kind"] == "file" and spec["seed"] == 3 and spec["fractions"] == [0.7, 0.15, 0.15]
  model = hale_jax.load(tmp_path / "run")
  np.testing.assert_array_equal(model.data.test, want.test)

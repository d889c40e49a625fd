"""hale_jax.data (reading, vocabularies, reciprocals, filter index) and hale_jax.synthetic."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from hale_jax import data as kgdata
from hale_jax import synthetic
from hale_jax.data import DataError

GOOD = {
    "train": [("paris", "capital_of", "france"), ("berlin", "capital_of", "germany"),
              ("france", "borders", "germany")],
    "valid": [("germany", "borders", "france")],
    "test": [("rome", "capital_of", "italy"), ("italy", "borders", "france")],
}


def _write(folder, splits=GOOD, newline="\n", trailing=True):
  folder.mkdir(parents=True, exist_ok=True)
  for name, triples in splits.items():
    text = newline.join("\t".join(t) for t in triples) + (newline if trailing else "")
    (folder / f"{name}.txt").write_bytes(text.encode("utf-8"))
  return folder


def _names(data, split):
  return [(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in data.split(split)]


@pytest.mark.parametrize("newline,trailing", [("\n", True), ("\n", False), ("\r\n", True),
                                              ("\r\n", False)])
def test_load_folder_roundtrip(tmp_path, newline, trailing):
  d = kgdata.load_folder(_write(tmp_path / "kg", newline=newline, trailing=trailing))
  for s in kgdata.SPLITS:
    assert _names(d, s) == GOOD[s]
    arr = d.split(s)
    assert arr.dtype == np.int32 and arr.shape == (len(GOOD[s]), 3)
  assert d.name == "kg"
  assert d.num_relations == 2 and d.num_entities == 6
  # no name picked up a stray carriage return
  assert not any("\r" in x for x in d.entities + d.relations)


def test_blank_lines_at_the_end_are_tolerated(tmp_path):
  folder = _write(tmp_path / "kg")
  with open(folder / "valid.txt", "ab") as f:
    f.write(b"\r\n\n\r\n")
  d = kgdata.load_folder(folder)
  assert _names(d, "valid") == GOOD["valid"]


def test_vocabulary_sorted_over_all_splits_and_deterministic(tmp_path):
  d = kgdata.load_folder(_write(tmp_path / "kg"))
  all_entities = {x for s in GOOD.values() for (h, _, t) in s for x in (h, t)}
  all_relations = {r for s in GOOD.values() for (_, r, _) in s}
  assert list(d.entities) == sorted(all_entities)  # includes rome/italy, only in test
  assert list(d.relations) == sorted(all_relations)
  # the same files in another folder, written in another order, give the same ids
  other = {k: list(reversed(v)) for k, v in GOOD.items()}
  d2 = kgdata.load_folder(_write(tmp_path / "other", splits=GOOD))
  d3 = kgdata.load_folder(_write(tmp_path / "shuffled", splits=other))
  assert d2.entities == d.entities and d3.entities == d.entities
  assert d3.relations == d.relations
  for s in kgdata.SPLITS:
    np.testing.assert_array_equal(d2.split(s), d.split(s))
    np.testing.assert_array_equal(d3.split(s), d.split(s)[::-1])


def test_from_named_triples_ids(rng):
  names = [f"e{i:02d}" for i in range(15)]
  rels = ["r_b", "r_a", "r_c"]
  splits = {s: [(names[rng.integers(15)], rels[rng.integers(3)], names[rng.integers(15)])
                for _ in range(n)] for s, n in (("train", 30), ("valid", 5), ("test", 5))}
  d = kgdata.from_named_triples("x", splits, source="here")
  for s in kgdata.SPLITS:
    assert _names(d, s) == splits[s]
  assert list(d.relations) == sorted(set(d.relations))
  assert d.source == "here" and d.name == "x"


def test_with_reciprocals(rng):
  t = rng.integers(0, 10, (7, 3)).astype(np.int32)
  t[:, 1] = rng.integers(0, 4, 7)
  out = kgdata.with_reciprocals(t, 4)
  assert out.shape == (14, 3) and out.dtype == np.int32
  np.testing.assert_array_equal(out[:7], t)
  np.testing.assert_array_equal(out[7:], np.stack([t[:, 2], t[:, 1] + 4, t[:, 0]], axis=1))
  assert kgdata.with_reciprocals(np.zeros((0, 3), np.int32), 4).shape == (0, 3)


def _random_data(rng, n=12, nr=3, sizes=(60, 10, 10)):
  splits = {}
  for s, size in zip(kgdata.SPLITS, sizes):
    arr = np.stack([rng.integers(0, n, size), rng.integers(0, nr, size), rng.integers(0, n, size)],
                   axis=1).astype(np.int32)
    splits[s] = arr
  splits["train"][:3] = splits["test"][:3]  # duplicated triples across splits
  splits["valid"][0] = splits["valid"][1]   # and within a split
  return kgdata.KGData(name="rand", entities=tuple(f"e{i}" for i in range(n)),
                       relations=tuple(f"r{i}" for i in range(nr)), **splits)


def test_filter_index_matches_brute_force(rng):
  d = _random_data(rng)
  nr = d.num_relations
  known = collections.defaultdict(list)  # a multiset: one entry per copy of a triple
  for h, r, t in np.concatenate([d.train, d.valid, d.test]):
    known[(h, r)].append(t)
    known[(t, r + nr)].append(h)
  index = kgdata.FilterIndex(d)
  ents = rng.integers(0, d.num_entities, 200)
  rels = rng.integers(0, 2 * nr, 200)
  rows, answers = index.answers(ents, rels)
  assert rows.dtype == np.int32 and answers.dtype == np.int32 and rows.shape == answers.shape
  assert np.all(np.diff(rows) >= 0)
  got = collections.defaultdict(list)
  for row, a in zip(rows, answers):
    got[row].append(a)
  for i, (e, r) in enumerate(zip(ents, rels)):
    assert sorted(got.get(i, [])) == sorted(known.get((e, r), [])), (i, e, r)
  assert len(rows) == sum(len(known.get((e, r), [])) for e, r in zip(ents, rels))
  assert any(len(v) > 1 for v in got.values())  # the data set has multi-answer queries
  # no queries, no answers
  rows0, ans0 = index.answers(np.zeros(0, np.int32), np.zeros(0, np.int32))
  assert len(rows0) == 0 and len(ans0) == 0


def test_unseen_in_train(rng):
  d = kgdata.from_named_triples("u", {
      "train": [("a", "r", "b"), ("b", "r", "c")],
      "valid": [("a", "r", "x"), ("y", "r", "x"), ("a", "r", "c")],
      "test": [("z", "r", "z"), ("c", "r", "a")],
  })
  assert kgdata.unseen_in_train(d, "valid") == (2, 2)  # x and y; two triples touch them
  assert kgdata.unseen_in_train(d, "test") == (1, 1)   # z
  # random, against a brute force
  r = _random_data(rng, n=30, sizes=(20, 15, 15))
  seen = set(r.train[:, 0]) | set(r.train[:, 2])
  for s in ("valid", "test"):
    t = r.split(s)
    ents = {x for x in np.concatenate([t[:, 0], t[:, 2]]) if x not in seen}
    tri = sum(1 for h, _, tt in t if h not in seen or tt not in seen)
    assert kgdata.unseen_in_train(r, s) == (len(ents), tri)


# ----------------------------------------------------------------------------------------------
# Bad input: one DataError with a one-line message naming the file, the line and the fix.

GOOD_LINE = b"a\tr\tb\n"


def _folder_with(tmp_path, split, content):
  folder = _write(tmp_path / "kg")
  (folder / f"{split}.txt").write_bytes(content)
  return folder


def _check(err, path, line, hints):
  msg = str(err.value)
  assert "\n" not in msg and "\r" not in msg, msg
  assert str(path) in msg, msg
  if line is not None:
    assert f":{line}:" in msg, msg
  low = msg.lower()
  assert any(h in low for h in hints), msg
  assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("split,content,line,hints", [
    ("train", GOOD_LINE + b"a\tr\n", 2, ["3", "three"]),                       # 2 fields
    ("valid", GOOD_LINE + GOOD_LINE + b"a\tr\tb\tc\n", 3, ["3", "three"]),     # 4 fields
    ("test", b"a\tr b\n", 1, ["3", "three"]),                                  # spaces, not tabs
    ("train", GOOD_LINE + b"a\t\tb\n", 2, ["empty"]),                           # empty relation
    ("train", b" \tr\tb\n", 1, ["empty"]),                                      # blank head
    ("valid", GOOD_LINE + b"a\tr\t\r\n", 2, ["empty"]),                         # empty tail, CRLF
    ("test", GOOD_LINE + GOOD_LINE + b"a\tr\t\xffb\n", 3, ["utf-8", "utf8"]),   # bad bytes
    ("train", GOOD_LINE + b"\n" + GOOD_LINE, 2, ["empty line", "blank"]),       # empty line
    ("train", GOOD_LINE + b"\r\n" + GOOD_LINE, 2, ["empty line", "blank"]),     # empty CRLF line
], ids=["2fields", "4fields", "spaces", "empty-rel", "blank-head", "empty-tail", "bad-bytes",
        "empty-line", "empty-crlf-line"])
def test_bad_line_raises(tmp_path, split, content, line, hints):
  folder = _folder_with(tmp_path, split, content)
  with pytest.raises(DataError) as err:
    kgdata.load_folder(folder)
  _check(err, folder / f"{split}.txt", line, hints)


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\r\n"])
def test_empty_split_raises(tmp_path, content):
  folder = _folder_with(tmp_path, "valid", content)
  with pytest.raises(DataError) as err:
    kgdata.load_folder(folder)
  _check(err, folder / "valid.txt", None, ["no triples", "empty"])


@pytest.mark.parametrize("split", kgdata.SPLITS)
def test_missing_split_raises(tmp_path, split):
  folder = _write(tmp_path / "kg")
  (folder / f"{split}.txt").unlink()
  with pytest.raises(DataError) as err:
    kgdata.load_folder(folder)
  _check(err, folder / f"{split}.txt", None, ["missing", "not found", "no such"])
  assert "train.txt" in str(err.value)  # says what a folder needs


def test_missing_folder_raises(tmp_path):
  folder = tmp_path / "nope"
  with pytest.raises(DataError) as err:
    kgdata.load_folder(folder)
  _check(err, folder, None, ["no such", "missing", "not found"])


def test_a_file_instead_of_a_folder_raises(tmp_path):
  path = tmp_path / "train.txt"
  path.write_bytes(GOOD_LINE)
  with pytest.raises(DataError) as err:
    kgdata.load_folder(path)
  _check(err, path, None, ["no such", "folder", "director"])


# ----------------------------------------------------------------------------------------------
# The synthetic graph.


def test_synthetic_is_deterministic():
  a, b = synthetic.generate(), synthetic.generate()
  assert a.entities == b.entities and a.relations == b.relations
  for s in kgdata.SPLITS:
    np.testing.assert_array_equal(a.split(s), b.split(s))
  c = synthetic.generate(seed=1)
  assert c.entities == a.entities  # same graph ...
  assert not np.array_equal(c.test, a.test)  # ... different hold-out


def test_synthetic_held_out_triples_are_inferable():
  d = synthetic.generate()
  assert len(d.valid) > 0 and len(d.test) > 0
  assert set(d.relations) == {"parent_of", "child_of", "grandparent_of", "sibling_of", "at_level"}
  train = set(_names(d, "train"))
  parent_of = collections.defaultdict(set)
  for h, r, t in train:
    if r == "parent_of":
      parent_of[h].add(t)
  held_relations = collections.Counter()
  for s in ("valid", "test"):
    for h, r, t in _names(d, s):
      held_relations[r] += 1
      assert (h, r, t) not in train, (h, r, t)
      if r == "child_of":
        assert (t, "parent_of", h) in train, (h, r, t)
      elif r == "grandparent_of":
        assert any(t in parent_of[mid] for mid in parent_of[h]), (h, r, t)
      elif r == "sibling_of":
        assert (t, "sibling_of", h) in train, (h, r, t)
      else:
        pytest.fail(f"{r} triple held out: {(h, r, t)}")
  assert set(held_relations) == {"child_of", "grandparent_of", "sibling_of"}
  # valid and test do not overlap
  assert not set(_names(d, "valid")) & set(_names(d, "test"))


# ----------------------------------------------------------------------------------------------
# The power-law graph for scale runs.


def test_power_law_shapes_coverage_and_determinism():
  g = synthetic.power_law(5000, triples_per_entity=4, num_relations=7, held_out=50, seed=3)
  assert g.num_entities == 5000 and g.num_relations == 7
  assert g.train.shape == (20000, 3) and g.valid.shape == (50, 3) and g.test.shape == (50, 3)
  for s in kgdata.SPLITS:
    t = g.split(s)
    assert t.dtype == np.int32
    assert t[:, [0, 2]].min() >= 0 and t[:, [0, 2]].max() < 5000
    assert t[:, 1].min() >= 0 and t[:, 1].max() < 7
  # every entity occurs in train (the first N heads cover them)
  assert np.unique(g.train[:, [0, 2]]).size == 5000
  # heavy-tailed: the busiest entity has far more than the mean of 8 endpoints
  degree = np.bincount(g.train[:, [0, 2]].ravel(), minlength=5000)
  assert degree.max() > 20 * degree.mean()
  h = synthetic.power_law(5000, triples_per_entity=4, num_relations=7, held_out=50, seed=3)
  for s in kgdata.SPLITS:
    np.testing.assert_array_equal(g.split(s), h.split(s))
  assert g.entities == h.entities and list(g.entities[:3]) == ["e0", "e1", "e2"]
  assert g.entities[-1] == "e4999" and len(list(g.relations)) == 7
  with pytest.raises(IndexError):
    g.entities[5000]
  kgdata.FilterIndex(g)  # the filter index builds on it


def test_power_law_rejects_bad_sizes():
  with pytest.raises(ValueError, match="num_entities >= 2"):
    synthetic.power_law(1)


# ----------------------------------------------------------------------------------------------
# Input quirks: a byte-order mark, whitespace around fields.


def test_byte_order_mark_is_dropped(tmp_path):
  folder = _write(tmp_path / "kg")
  for split in kgdata.SPLITS:
    path = folder / f"{split}.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
  d = kgdata.load_folder(folder)
  for s in kgdata.SPLITS:
    assert _names(d, s) == GOOD[s]
  assert not any("\ufeff" in x for x in d.entities)


@pytest.mark.parametrize("content,line,role", [
    (GOOD_LINE + b" a\tr\tb\n", 2, "head"),
    (b"a\tr \tb\n", 1, "relation"),
    (GOOD_LINE + GOOD_LINE + b"a\tr\tb \r\n", 3, "tail"),
    ("a\tr\tb\u00a0\n".encode(), 1, "tail"),  # a no-break space counts as whitespace
], ids=["leading-head", "trailing-relation", "trailing-tail-crlf", "nbsp"])
def test_whitespace_around_a_field_raises(tmp_path, content, line, role):
  folder = _folder_with(tmp_path, "train", content)
  with pytest.raises(DataError) as err:
    kgdata.load_folder(folder)
  _check(err, folder / "train.txt", line, ["whitespace"])
  msg = str(err.value)
  assert role in msg and "strip_whitespace" in msg


def test_strip_whitespace_strips_fields(tmp_path):
  folder = _write(tmp_path / "kg")
  (folder / "train.txt").write_bytes(b" paris\tcapital_of \tfrance\nberlin\t capital_of\t"
                                     b"germany  \nfrance\tborders\tgermany\n")
  d = kgdata.load_folder(folder, strip_whitespace=True)
  assert _names(d, "train") == GOOD["train"]
  assert d.entities == kgdata.load_folder(_write(tmp_path / "clean")).entities
  (folder / "valid.txt").write_bytes(b"a\t \tb\n")  # still an empty field once stripped
  with pytest.raises(DataError, match="empty"):
    kgdata.load_folder(folder, strip_whitespace=True)


def test_inner_spaces_are_part_of_a_name(tmp_path):
  folder = _folder_with(tmp_path, "train", b"New York\tin country\tUnited States\n")
  d = kgdata.load_folder(folder)
  assert "New York" in d.entities and "in country" in d.relations


# ----------------------------------------------------------------------------------------------
# Summary (format kept) and the data report.


def test_summary_format_is_unchanged(tmp_path):
  d = kgdata.load_folder(_write(tmp_path / "kg"))
  assert kgdata.summary(d).split("\n") == [
      f"dataset kg  ({tmp_path / 'kg'})",
      "  entities 6   relations 2 (4 with reciprocals)",
      "  triples  train 3   valid 1   test 2",
      "  test: 2 entities unseen in train, in 2 triples (ranked with their untrained initial "
      "embeddings)",
  ]


QUIRKY = {
    "train": [("a", "r", "b"), ("b", "r", "c"), ("a", "r", "b"), ("c", "s", "a"), ("a", "r", "b"),
              ("c", "s", "a")],
    "valid": [("a", "r", "c"), ("a", "r", "c"), ("b", "r", "c"), ("x", "r", "a")],
    "test": [("c", "s", "a"), ("a", "r", "c"), ("y", "q", "z"), ("z", "q", "a"), ("a", "p", "b")],
}


def test_data_report_counts_and_examples():
  d = kgdata.from_named_triples("q", QUIRKY)
  report = kgdata.check_data(d)
  assert report.duplicates["train"] == kgdata.Finding(3, ("(a, r, b)", "(c, s, a)"))
  assert report.duplicates["valid"] == kgdata.Finding(1, ("(a, r, c)",))
  assert report.duplicates["test"].count == 0
  assert report.in_train["valid"] == kgdata.Finding(1, ("(b, r, c)",))
  assert report.in_train["test"] == kgdata.Finding(1, ("(c, s, a)",))
  assert report.test_in_valid == kgdata.Finding(1, ("(a, r, c)",))
  assert report.unseen_entities["valid"] == kgdata.Finding(1, ("x",))
  assert report.unseen_entities["test"] == kgdata.Finding(2, ("y", "z"))
  assert report.unseen_relations["valid"].count == 0
  assert report.unseen_relations["test"] == kgdata.Finding(2, ("q", "p"))
  assert not report.clean()
  # the unseen entity counts agree with unseen_in_train
  for s in ("valid", "test"):
    assert report.unseen_entities[s].count == kgdata.unseen_in_train(d, s)[0]
  lines = kgdata.data_report(d)
  assert lines == [
      "  check train: 3 duplicate triples [(a, r, b), (c, s, a)]",
      "  check valid: 1 duplicate triple [(a, r, c)]; 1 triple also in train [(b, r, c)]; "
      "1 entity unseen in train [x]",
      "  check test: 1 triple also in train [(c, s, a)]; 1 triple also in "
      "valid [(a, r, c)]; 2 entities unseen in train [y, z]; 2 relations unseen in train [q, p]",
  ]
  assert all("\n" not in line for line in lines)


def test_data_report_limits_examples(rng):
  d = _random_data(rng, n=40, sizes=(30, 40, 40))
  report = kgdata.check_data(d, examples=2)
  for finding in [*report.duplicates.values(), *report.unseen_entities.values()]:
    assert len(finding.examples) == min(2, finding.count)
  many = report.unseen_entities["test"]
  assert many.count > 2 and many.text("entities unseen in train").endswith(", ...]")
  assert f"{many.count} entities unseen in train" in kgdata.check_data(
      d, examples=0).lines()[-1]  # no examples: the count alone


@pytest.mark.parametrize("key_limit", [2 ** 62, 1], ids=["int64-keys", "exact-rows"])
def test_data_report_matches_brute_force(rng, monkeypatch, key_limit):
  monkeypatch.setattr(kgdata, "_KEY_LIMIT", key_limit)  # 1: the path for vast vocabularies
  d = _random_data(rng, n=8, nr=2, sizes=(40, 20, 20))
  report = kgdata.check_data(d)
  rows = {s: [tuple(t) for t in d.split(s)] for s in kgdata.SPLITS}
  for s in kgdata.SPLITS:
    assert report.duplicates[s].count == len(rows[s]) - len(set(rows[s]))
  train = set(rows["train"])
  for s in ("valid", "test"):
    assert report.in_train[s].count == sum(t in train for t in rows[s])
  assert report.test_in_valid.count == sum(t in set(rows["valid"]) for t in rows["test"])


def test_data_report_clean_and_generated_graphs():
  assert kgdata.check_data(synthetic.generate()).clean()
  g = synthetic.power_law(2000, triples_per_entity=3, num_relations=5, held_out=20, seed=1)
  lines = kgdata.data_report(g)  # NumberedNames vocabularies work
  assert lines and all(l.startswith("  check ") for l in lines)
  assert not any(" 0 " in l for l in lines), lines  # zero counts are left out
  assert kgdata.data_report(synthetic.generate()) == [
      "  check: no duplicate triples, no valid or test triple in train, every valid and test "
      "entity and relation seen in train"]
  assert "unseen" not in kgdata.summary(synthetic.generate())


def test_split_hashes(tmp_path):
  import hashlib
  folder = _write(tmp_path / "kg")
  hashes = kgdata.split_hashes(folder)
  assert set(hashes) == set(kgdata.SPLITS)
  for s in kgdata.SPLITS:
    assert hashes[s] == hashlib.sha256((folder / f"{s}.txt").read_bytes()).hexdigest()
  with open(folder / "test.txt", "ab") as f:
    f.write(b"a\tb\tc\n")
  changed = kgdata.split_hashes(folder)
  assert changed["test"] != hashes["test"] and changed["train"] == hashes["train"]
  (folder / "valid.txt").unlink()
  with pytest.raises(DataError) as err:
    kgdata.split_hashes(folder)
  _check(err, folder / "valid.txt", None, ["cannot be read"])


def _reference_findings(rows, examples):
  """Duplicates of one split's rows (tuples), from a dict: count, repeated triples in the
  order of their first copy."""
  copies = collections.Counter(rows)
  repeated = [t for t in dict.fromkeys(rows) if copies[t] > 1]
  return len(rows) - len(copies), repeated[:examples], len(repeated) > examples


@pytest.mark.parametrize("key_limit", [2 ** 62, 1], ids=["int64-keys", "exact-rows"])
def test_data_report_examples_match_a_dict_reference(rng, monkeypatch, key_limit):
  monkeypatch.setattr(kgdata, "_KEY_LIMIT", key_limit)
  d = _random_data(rng, n=6, nr=2, sizes=(150, 60, 60))
  report = kgdata.check_data(d, examples=4)
  rows = {s: [tuple(int(x) for x in t) for t in d.split(s)] for s in kgdata.SPLITS}

  def shown(triples):
    return tuple(f"(e{h}, r{r}, e{t})" for h, r, t in triples)

  for s in kgdata.SPLITS:
    count, repeated, truncated = _reference_findings(rows[s], 4)
    assert report.duplicates[s] == kgdata.Finding(count, shown(repeated), truncated)
    assert count > 4
  for s, other, finding in (("valid", "train", report.in_train["valid"]),
                            ("test", "train", report.in_train["test"]),
                            ("test", "valid", report.test_in_valid)):
    inside = [t for t in rows[s] if t in set(rows[other])]
    assert finding == kgdata.Finding(len(inside), shown(inside[:4]), len(inside) > 4)

"""The typed data specs: loading, fingerprints, label folders and the run.json round trip."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from hale_jax import data as kgdata
from hale_jax import data_file, dataspec
from hale_jax.data import DataError


def _graph(rng, entities=40, relations=5, count=300):
  triples = {(f"e{rng.integers(entities)}", f"r{rng.integers(relations)}",
              f"e{rng.integers(entities)}") for _ in range(count)}
  return sorted(triples, key=lambda t: rng.random())


def test_one_file_and_split_files_load_and_fingerprint(tmp_path, rng):
  path = tmp_path / "kg.tsv"
  path.write_text("".join(f"{h}\t{r} \t{t}\n" for h, r, t in _graph(rng)), encoding="utf-8")
  spec = dataspec.OneFile(str(path), (0.8, 0.1, 0.1), 4,
                          dataspec.Reading(strip_whitespace=True))
  lines = []
  data = spec.load(log=lines.append)
  ref, info = data_file.load_triples_file(path, seed=4, strip_whitespace=True)
  assert data.entities == ref.entities
  assert lines == info.lines()  # the launcher's start: how many triples the split moved
  assert f"({info.moved:,} moved to train so that every valid and test" in lines[1]
  np.testing.assert_array_equal(data.valid, ref.valid)
  with pytest.raises(DataError, match="strip_whitespace"):
    dataspec.OneFile(str(path), seed=4).load()
  folder = data_file.write_splits({s: [(data.entities[h], data.relations[r], data.entities[t])
                                      for h, r, t in data.split(s)] for s in kgdata.SPLITS},
                                 tmp_path / "splits")
  files = dataspec.SplitFiles(*(str(folder / f"{s}.txt") for s in kgdata.SPLITS))
  loaded = files.load()
  assert loaded.entities == data.entities
  np.testing.assert_array_equal(loaded.test, data.test)
  assert spec.hashes() == {"file": hashlib.sha256(path.read_bytes()).hexdigest()}
  assert files.hashes() == kgdata.split_hashes(folder)
  assert dataspec.Folder(str(folder)).hashes() == kgdata.split_hashes(folder)
  assert dataspec.Synthetic().hashes() == {} and dataspec.PowerLaw(50).hashes() == {}
  assert spec.label_folder() == tmp_path and files.label_folder() == folder


def test_folder_spec_strips_whitespace_only_when_asked(tmp_path):
  folder = tmp_path / "kg"
  folder.mkdir()
  for s in kgdata.SPLITS:
    (folder / f"{s}.txt").write_text("a \tr\tb\n", encoding="utf-8")
  with pytest.raises(DataError, match="whitespace"):
    dataspec.Folder(str(folder)).load()
  assert dataspec.Folder(str(folder), strip_whitespace=True).load().entities == ("a", "b")


@pytest.mark.parametrize("spec", [
    dataspec.Synthetic(), dataspec.PowerLaw(1000), dataspec.Dataset("codex_s"),
    dataspec.Folder("/data/kg", strip_whitespace=True),
    dataspec.OneFile("/data/kg.csv", (0.7, 0.2, 0.1), 3,
                     dataspec.Reading("id,head,relation,tail", "comma", True, False), "mine"),
    dataspec.SplitFiles("/d/a.tsv", "/d/b.tsv", "/d/c.tsv", dataspec.Reading(header=True))],
    ids=lambda s: s.kind)
def test_json_round_trip(spec):
  doc = json.loads(json.dumps(spec.to_json()))
  assert doc["kind"] == spec.kind
  assert dataspec.from_json(doc) == spec


def test_json_of_earlier_run_folders_reads_back():
  """The dicts run.json held before the typed specs load as the same specs."""
  old = {"kind": "file", "path": "/x/kg.tsv", "fractions": [0.8, 0.1, 0.1], "seed": 2,
         "columns": "head,relation,tail", "delimiter": None, "header": False,
         "strip_whitespace": False}
  assert dataspec.from_json(old) == dataspec.OneFile("/x/kg.tsv", seed=2)
  assert dataspec.from_json(old).to_json() == old
  assert dataspec.from_json({"kind": "folder", "path": "/p"}) == dataspec.Folder("/p")


@pytest.mark.parametrize("doc", [{"kind": "nope"}, [], {"kind": "folder"}, "folder"])
def test_bad_json_is_one_line(doc):
  with pytest.raises(DataError) as err:
    dataspec.from_json(doc)
  assert "\n" not in str(err.value) and "spec" in str(err.value)

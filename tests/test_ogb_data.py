"""The large benchmarks offline: torch.save files read without PyTorch, ogbl-wikikg2's zip and
Wikidata5M's tarball downloaded through a fake opener, installed, loaded, and refused when bad."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import urllib.error

import numpy as np
import pytest

from hale_jax import arrayfolder, datasets, download, ogb_data, torch_pickle
from hale_jax.data import DataError
from hale_jax.download import Tarball
from ogb_files import (ENTITY_IDS, RELATION_IDS, WIKIDATA5M_LINES, numpy1_pickle, ogb_splits,
                       ogb_zip, torch_legacy, torch_zip, wikidata5m_tar)

URL = "https://example.org/ogb/wikikg-v2.zip"


class _Response(io.BytesIO):
  headers: dict = {}


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.delenv("HALE_DATA_DIR", raising=False)
  monkeypatch.delenv("HALE_CACHE_DIR", raising=False)
  return tmp_path / "cache"


@pytest.fixture
def opener(monkeypatch):
  """Serves ``opener.bodies[url]`` (an exception there is raised); records the URLs asked."""
  class Opener:
    def __init__(self):
      self.bodies, self.asked = {}, []

    def __call__(self, url, timeout):
      self.asked.append(url)
      body = self.bodies[url]
      if isinstance(body, Exception):
        raise body
      return _Response(body)
  fake = Opener()
  monkeypatch.setattr(download, "_open", fake)
  return fake


def ogb_source(size=10_000_000):
  return {"ogbl-wikikg2": ogb_data.OgbZip(URL, size=size)}


# ----------------------------------------------------------------------------- torch.save files

@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_torch_files_of_numpy_arrays_read_without_torch(rng, tmp_path, container):
  d = {"head": rng.integers(0, 10**6, 50), "head_neg": rng.integers(0, 10**6, (50, 7)),
       "count": 3, "name": "x"}
  path = tmp_path / "split.pt"
  path.write_bytes(torch_zip(d, "split") if container == "zip" else torch_legacy(d))
  got = torch_pickle.load(path)
  assert sorted(got) == sorted(d) and got["count"] == 3 and got["name"] == "x"
  for key in ("head", "head_neg"):
    assert got[key].dtype == np.int64
    np.testing.assert_array_equal(got[key], d[key])


class _Runs:
  def __reduce__(self):
    return (os.system, ("true",))


class _Tensor:
  pass


def _tensor_pickle() -> bytes:
  """A pickle with a persistent id, as torch.save makes for a tensor."""
  buf = io.BytesIO()

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ("storage", "FloatStorage", "0", "cpu", 4) if isinstance(obj, _Tensor) else None
  Pickler(buf, protocol=2).dump({"head": _Tensor()})
  return buf.getvalue()


@pytest.mark.parametrize("payload, why", [
    (pickle.dumps({"x": _Runs()}, protocol=2), "posix.system|os.system"),
    (_tensor_pickle(), "PyTorch tensor"),
    (numpy1_pickle({"x": np.array([1, "a"], dtype=object)}), "Python objects"),
    (b"\x80\x02}q\x00", "not a torch.save"),
])
def test_torch_files_with_anything_else_are_refused(tmp_path, payload, why):
  path = tmp_path / "bad.pt"
  path.write_bytes(torch_zip(None, payload=payload))
  with pytest.raises(DataError, match=why) as err:
    torch_pickle.load(path)
  assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_file_that_is_neither_container_is_refused(tmp_path):
  path = tmp_path / "bad.pt"
  path.write_bytes(pickle.dumps(12345, protocol=2))
  with pytest.raises(DataError, match="magic number"):
    torch_pickle.load(path)


# ----------------------------------------------------------------------------- ogbl-wikikg2

def test_ogbl_wikikg2_downloads_installs_and_loads(rng, opener, cache, capsys):
  splits = ogb_splits(rng)
  archive = ogb_zip(splits)
  opener.bodies[URL] = archive
  folder = datasets.resolve("OGBL_WikiKG2", cache_dir=cache, sources=ogb_source())
  assert folder == cache / "ogbl-wikikg2"
  assert sorted(p.name for p in cache.iterdir()) == ["ogbl-wikikg2"]  # no staging left
  sha = hashlib.sha256(archive).hexdigest()
  assert (folder / arrayfolder.ARCHIVE_SHA256).read_text() == f"{sha}  wikikg-v2.zip\n"
  assert f"has sha256 {sha}" in capsys.readouterr().err
  assert not list(folder.glob("*.pt"))
  data = datasets.load("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  assert data.entities == tuple(ENTITY_IDS) and data.relations == tuple(RELATION_IDS)
  for s, d in splits.items():
    want = np.stack([d["head"], d["relation"], d["tail"]], axis=1)
    np.testing.assert_array_equal(data.split(s), want)
    assert data.split(s).dtype == np.int32
  for s in ("valid", "test"):
    neg = data.negatives[s]
    assert neg.dtype == np.int32 and neg.shape == (len(splits[s]["head"]), 2, 6)
    np.testing.assert_array_equal(neg[:, 0], splits[s]["head_neg"])
    np.testing.assert_array_equal(neg[:, 1], splits[s]["tail_neg"])
  # the second time from the cache, without network
  opener.bodies[URL] = urllib.error.URLError("offline")
  assert datasets.resolve("ogbl-wikikg2", cache_dir=cache, sources=ogb_source()) == folder
  assert opener.asked == [URL]
  hashes = datasets.hashes("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  assert hashes["test_negatives.npy"] == hashlib.sha256(
      (folder / "test_negatives.npy").read_bytes()).hexdigest()
  assert set(hashes) >= {"train.npy", "valid.npy", "test.npy", "entities.txt", "relations.txt"}


def test_legacy_files_and_no_mappings_give_the_ids_as_names(rng, opener, cache):
  splits = ogb_splits(rng)
  opener.bodies[URL] = ogb_zip(splits, with_mappings=False, legacy=True)
  data = datasets.load("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  top = max(int(np.max(d[k])) for d in splits.values() for k in d if k != "relation")
  assert data.entities == tuple(str(i) for i in range(top + 1))
  assert data.relations == tuple(str(i) for i in range(3))


def test_offline_is_one_line_saying_what_to_do(opener, cache):
  opener.bodies[URL] = urllib.error.URLError("Temporary failure in name resolution")
  with pytest.raises(DataError) as err:
    datasets.resolve("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  message = str(err.value)
  assert "\n" not in message and "could not download ogbl-wikikg2" in message
  assert f"download {URL} by hand to {cache / 'wikikg-v2.zip'}" in message
  assert "set HALE_DATA_DIR to a folder holding ogbl-wikikg2/ with train.npy" in message
  assert not cache.exists()


def test_an_archive_put_by_hand_is_installed_and_kept(rng, opener, cache):
  archive = ogb_zip(ogb_splits(rng))
  cache.mkdir(parents=True)
  (cache / "wikikg-v2.zip").write_bytes(archive)
  data = datasets.load("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  assert opener.asked == [] and data.num_entities == 12
  assert (cache / "wikikg-v2.zip").read_bytes() == archive  # not ours to delete


@pytest.mark.parametrize("change, message", [
    ("drop_test", "lacks split/time/test.pt"),
    ("no_key", "\\['tail_neg'\\] is NoneType"),
    ("neg_shape", "negatives of shapes"),
    ("float_ids", "\\['head'\\] is float64"),
    ("negative_id", "outside \\[0, 2\\*\\*31\\)"),
    ("not_zip", "the archive cannot be read"),
    ("short_mapping", "names 3 entity ids"),
])
def test_bad_archives_are_refused_and_nothing_is_cached(rng, opener, cache, change, message):
  splits = ogb_splits(rng)
  drop = ()
  if change == "drop_test":
    drop = ("split/time/test.pt",)
  elif change == "no_key":
    del splits["valid"]["tail_neg"]
  elif change == "neg_shape":
    splits["test"]["head_neg"] = splits["test"]["head_neg"][:, :4]
  elif change == "float_ids":
    splits["train"]["head"] = splits["train"]["head"].astype(np.float64)
  elif change == "negative_id":
    splits["test"]["tail_neg"][1, 1] = -1
  body = ogb_zip(splits, drop=drop,
                 entity_ids=ENTITY_IDS[:3] if change == "short_mapping" else ENTITY_IDS)
  if change == "not_zip":
    body = b"<html>not found</html>"
  opener.bodies[URL] = body
  with pytest.raises(DataError, match=message) as err:
    datasets.resolve("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  assert "\n" not in str(err.value)
  assert not (cache / "ogbl-wikikg2").exists() and not list(cache.glob(".ogbl-wikikg2.partial*"))


def test_a_download_beyond_the_cap_stops(rng, opener, cache):
  opener.bodies[URL] = ogb_zip(ogb_splits(rng))
  with pytest.raises(DataError, match="exceeds"):
    datasets.resolve("ogbl-wikikg2", cache_dir=cache, sources=ogb_source(size=100))


def test_a_damaged_installed_folder_is_one_line(rng, opener, cache):
  opener.bodies[URL] = ogb_zip(ogb_splits(rng))
  folder = datasets.resolve("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  neg = np.load(folder / "valid_negatives.npy")
  neg[0, 0, 0] = 12
  np.save(folder / "valid_negatives.npy", neg)
  with pytest.raises(DataError, match="valid_negatives.npy: the valid negatives hold entity "
                                      "ids outside \\[0, 12\\)"):
    datasets.load("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())
  (folder / "relations.txt").write_text("P1\nP1\n")
  with pytest.raises(DataError, match="holds a name twice"):
    datasets.load("ogbl-wikikg2", cache_dir=cache, sources=ogb_source())


# ----------------------------------------------------------------------------- Wikidata5M

def _wikidata5m_source(archive: bytes) -> dict:
  real = datasets.SOURCES["Wikidata5M"]
  return {"Wikidata5M": Tarball("https://example.org/w5m/wikidata5m_transductive.tar.gz",
                                hashlib.sha256(archive).hexdigest(), real.files,
                                size=len(archive), unpacked=10_000, rename=real.rename)}


def test_wikidata5m_installs_its_files_as_the_three_splits(opener, cache):
  archive = wikidata5m_tar()
  sources = _wikidata5m_source(archive)
  opener.bodies[sources["Wikidata5M"].url] = archive
  folder = datasets.resolve("wikidata5m", cache_dir=cache, sources=sources)
  assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
  data = datasets.load("WIKIDATA_5M", cache_dir=cache, sources=sources)
  assert data.relations == ("P17", "P31", "P36")
  assert data.entities == ("Q1", "Q2", "Q30", "Q5", "Q61")
  for split, lines in WIKIDATA5M_LINES.items():
    named = [tuple(x.split("\t")) for x in lines]
    got = [(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in data.split(split)]
    assert got == named
  assert datasets.hashes("wikidata5m", cache_dir=cache, sources=sources).keys() == {
      "train", "valid", "test"}


def test_wikidata5m_archive_checksum_is_checked(opener, cache):
  archive = wikidata5m_tar()
  sources = _wikidata5m_source(archive)
  opener.bodies[sources["Wikidata5M"].url] = archive[:20] + bytes([archive[20] ^ 1]) + archive[21:]
  with pytest.raises(DataError, match="wikidata5m_transductive.tar.gz has sha256"):
    datasets.resolve("wikidata5m", cache_dir=cache, sources=sources)
  assert not cache.exists()


def test_the_real_sources_of_the_large_benchmarks():
  w5m = datasets.SOURCES["Wikidata5M"]
  assert w5m.rename == {f"wikidata5m_transductive_{s}.txt": f"{s}.txt"
                        for s in ("train", "valid", "test")}
  assert set(w5m.files) == set(w5m.rename) and len(w5m.sha256) == 64
  assert "/resolve/6b2b09672129e280c0c9da97ab58154e9d535e6b/" in w5m.url  # a fixed revision
  ogb = datasets.SOURCES["ogbl-wikikg2"]
  assert ogb.url == "https://snap.stanford.edu/ogb/data/linkproppred/wikikg-v2.zip"
  assert ogb.sha256 is None and ogb.form is arrayfolder.ArrayFolder
  for given in ("wikidata5m", "Wikidata-5M", "ogbl_wikikg2", "OGBL-WIKIKG2", "ogblwikikg2"):
    assert datasets.canonical_name(given) in ("Wikidata5M", "ogbl-wikikg2")


def test_a_wrong_archive_put_by_hand_is_refused_and_left_alone(opener, cache):
  archive = wikidata5m_tar()
  sources = _wikidata5m_source(archive)
  cache.mkdir(parents=True)
  placed = cache / "wikidata5m_transductive.tar.gz"
  placed.write_bytes(archive + b"junk")
  with pytest.raises(DataError) as err:
    datasets.resolve("wikidata5m", cache_dir=cache, sources=sources)
  message = str(err.value)
  assert "\n" not in message and f"{placed} (put there by hand) is not the archive" in message
  assert message.endswith("replace or delete it") and opener.asked == []
  assert placed.read_bytes() == archive + b"junk"
  placed.write_bytes(archive)
  assert datasets.load("wikidata5m", cache_dir=cache, sources=sources).num_entities == 5

"""Tests of hale_jax.datasets and hale_jax.download against a loopback HTTP server and a fake
opener (no internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import time

import pytest

from hale_jax import datasets, download, ogb_data
from hale_jax.data import DataError, load_folder

SPLIT_LINES = {
    "train.txt": ["a\tr1\tb", "b\tr2\tc", "c\tr1\ta"],
    "valid.txt": ["a\tr2\tc"],
    "test.txt": ["b\tr1\ta"],
}
LF = {f: ("\n".join(lines) + "\n").encode() for f, lines in SPLIT_LINES.items()}
CRLF = {f: data.replace(b"\n", b"\r\n") for f, data in LF.items()}


def sha256(data: bytes) -> tuple[str, str]:
  return ("sha256", hashlib.sha256(data).hexdigest())


def gitblob(data: bytes) -> tuple[str, str]:
  return ("gitblob", hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


@pytest.fixture
def server(tmp_path):
  """Serves ``pub/``: ``data.tar.gz`` (CRLF files in ``pkg/nested/``) and ``files/*.txt`` (LF)."""
  root = tmp_path / "pub"
  (root / "files").mkdir(parents=True)
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for f, data in CRLF.items():
      info = tarfile.TarInfo(f"pkg/nested/{f}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  (root / "data.tar.gz").write_bytes(buf.getvalue())
  for f, data in LF.items():
    (root / "files" / f).write_bytes(data)
  handler = functools.partial(_QuietHandler, directory=str(root))
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.archive = buf.getvalue()
  yield httpd
  httpd.shutdown()
  httpd.server_close()
  thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.delenv("HALE_DATA_DIR", raising=False)
  monkeypatch.delenv("HALE_CACHE_DIR", raising=False)
  return tmp_path / "cache"


def tarball_sources(srv) -> dict:
  return {"WN18RR": download.Tarball(f"{srv.base}/data.tar.gz",
                                     hashlib.sha256(srv.archive).hexdigest(),
                                     {f: sha256(data) for f, data in LF.items()})}


def files_sources(base: str, checksum=gitblob, data=LF) -> dict:
  return {"CoDEx-S": download.Files({f: (f"{base}/files/{f}", checksum(data[f]))
                                     for f in SPLIT_LINES})}


def closed_port_url() -> str:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}"


def test_tarball_download_normalises_to_lf(server, cache, capsys):
  path = datasets.resolve("WN18RR", cache_dir=cache, sources=tarball_sources(server), timeout=5)
  assert path == cache / "WN18RR"
  assert sorted(p.name for p in cache.iterdir()) == ["WN18RR"]
  for f, data in LF.items():
    assert (path / f).read_bytes() == data
  data = load_folder(path)
  assert data.entities == ("a", "b", "c") and data.relations == ("r1", "r2")
  assert len(data.train) == 3
  assert f"downloading WN18RR from {server.base}/data.tar.gz" in capsys.readouterr().err


def test_second_resolve_uses_cache_without_network(server, cache):
  sources = tarball_sources(server)
  first = datasets.resolve("WN18RR", cache_dir=cache, sources=sources, timeout=5)
  server.shutdown()
  server.server_close()
  dead = {"WN18RR": download.Tarball(f"{closed_port_url()}/x.tar.gz", "0" * 64, {})}
  assert datasets.resolve("wn18rr", cache_dir=cache, sources=dead, timeout=5) == first


def test_per_file_download_with_gitblob(server, cache):
  path = datasets.resolve("CoDEx-S", cache_dir=cache, sources=files_sources(server.base))
  for f, data in LF.items():
    assert (path / f).read_bytes() == data
  assert load_folder(path).num_entities == 3


def test_cache_dir_from_environment(server, cache, monkeypatch):
  monkeypatch.setenv("HALE_CACHE_DIR", str(cache))
  assert datasets.resolve("CoDEx-S", sources=files_sources(server.base)) == cache / "CoDEx-S"


def test_cache_root_order(tmp_path, monkeypatch):
  monkeypatch.delenv("HALE_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert datasets.cache_root() == tmp_path / "xdg" / "hale_jax" / "datasets"
  monkeypatch.setenv("HALE_CACHE_DIR", str(tmp_path / "env"))
  assert datasets.cache_root() == tmp_path / "env"
  assert datasets.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_file_checksum_mismatch(server, cache):
  wrong = {f: data + b"x" for f, data in LF.items()}
  with pytest.raises(DataError) as err:
    datasets.resolve("CoDEx-S", cache_dir=cache,
                     sources=files_sources(server.base, sha256, wrong))
  message = str(err.value)
  assert "\n" not in message
  assert "train.txt" in message
  assert sha256(wrong["train.txt"])[1] in message and sha256(LF["train.txt"])[1] in message
  assert not cache.exists()


def test_tarball_checksum_mismatch(server, cache):
  source = tarball_sources(server)["WN18RR"]
  bad = {"WN18RR": download.Tarball(source.url, "0" * 64, source.files)}
  with pytest.raises(DataError, match="data.tar.gz") as err:
    datasets.resolve("WN18RR", cache_dir=cache, sources=bad)
  assert "\n" not in str(err.value)
  assert not cache.exists()


def test_unreachable_server(cache):
  sources = files_sources(closed_port_url())
  with pytest.raises(DataError) as err:
    datasets.resolve("CoDEx-S", cache_dir=cache, sources=sources, timeout=5)
  message = str(err.value)
  assert "\n" not in message
  assert "could not download CoDEx-S" in message
  assert str(cache / "CoDEx-S") in message and "HALE_DATA_DIR" in message
  # fits every command: evaluate/export/predict take no --data_dir, so it is only for training
  assert "set HALE_DATA_DIR to a folder holding CoDEx-S/" in message
  assert "train with --data_dir" in message and "pass --data_dir" not in message
  assert not cache.exists()


def test_http_error(server, cache):
  sources = {"CoDEx-S": download.Files({f: (f"{server.base}/missing/{f}", sha256(LF[f]))
                                        for f in SPLIT_LINES})}
  with pytest.raises(DataError, match="404") as err:
    datasets.resolve("CoDEx-S", cache_dir=cache, sources=sources)
  assert "\n" not in str(err.value)


def test_hale_data_dir_takes_precedence(tmp_path, cache, monkeypatch):
  local = tmp_path / "local" / "CoDEx-S"
  local.mkdir(parents=True)
  for f, data in LF.items():
    (local / f).write_bytes(data)
  monkeypatch.setenv("HALE_DATA_DIR", str(tmp_path / "local"))
  sources = files_sources(closed_port_url())
  assert datasets.resolve("codex-s", cache_dir=cache, sources=sources, timeout=5) == local
  assert not cache.exists()


def test_incomplete_cache_folder(cache):
  (cache / "CoDEx-S").mkdir(parents=True)
  (cache / "CoDEx-S" / "train.txt").write_bytes(LF["train.txt"])
  with pytest.raises(DataError, match="lacks"):
    datasets.resolve("CoDEx-S", cache_dir=cache, sources=files_sources(closed_port_url()))


def test_unknown_name(cache):
  with pytest.raises(DataError) as err:
    datasets.resolve("YAGO3-10", cache_dir=cache)
  message = str(err.value)
  assert "\n" not in message and "YAGO3-10" in message and "--data_dir" in message
  for name in datasets.SOURCES:
    assert name in message


@pytest.mark.parametrize("given, canonical", [
    ("codex_s", "CoDEx-S"), ("CODEX-S", "CoDEx-S"), ("codexm", "CoDEx-M"),
    ("fb15k237", "FB15k-237"), ("FB15K_237", "FB15k-237"), ("wn18rr", "WN18RR"),
    ("CoDEx-L", "CoDEx-L"),
])
def test_name_normalisation(given, canonical):
  assert datasets.canonical_name(given) == canonical


def test_name_normalisation_in_resolve(server, cache):
  path = datasets.resolve("codex_s", cache_dir=cache, sources=files_sources(server.base))
  assert path == cache / "CoDEx-S"


def test_gitblob_digest_matches_git():
  empty_blob = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git hash-object /dev/null
  assert download._digest("gitblob", b"") == empty_blob


# ----------------------------------------------------------------------------------------------
# Streaming, size caps, per-file checks, stale staging folders, hostile archives (fake opener).


class FakeResponse:
  """A response whose body is ``chunks`` (then EOF), read in pieces of at most ``n`` bytes."""

  def __init__(self, body: bytes = b"", headers=None, endless: bytes | None = None):
    self.body, self.headers, self.endless = body, headers or {}, endless
    self.served = 0

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def read(self, n: int) -> bytes:
    if self.endless is not None:
      self.served += len(self.endless)
      return self.endless
    chunk = self.body[self.served:self.served + n]
    self.served += len(chunk)
    return chunk


@pytest.fixture
def opener(monkeypatch):
  """Serves ``opener.bodies[url]``; records the URLs asked for in ``opener.asked``."""
  class Opener:
    def __init__(self):
      self.bodies, self.asked, self.responses = {}, [], []

    def __call__(self, url, timeout):
      self.asked.append(url)
      body = self.bodies[url]
      response = body if isinstance(body, FakeResponse) else FakeResponse(body)
      self.responses.append(response)
      return response
  fake = Opener()
  monkeypatch.setattr(download, "_open", fake)
  return fake


def test_streamed_download_strips_cr_and_checks_gitblob(opener, cache):
  base = "http://fake"
  opener.bodies = {f"{base}/files/{f}": data for f, data in CRLF.items()}
  path = datasets.resolve("CoDEx-S", cache_dir=cache, sources=files_sources(base))
  for f, data in LF.items():
    assert (path / f).read_bytes() == data
  assert sorted(p.name for p in cache.iterdir()) == ["CoDEx-S"]  # no staging folder left


def test_per_file_checksum_is_checked_before_the_next_fetch(opener, cache):
  base = "http://fake"
  opener.bodies = {f"{base}/files/{f}": data for f, data in LF.items()}
  opener.bodies[f"{base}/files/valid.txt"] = b"tampered\tr\tx\n"
  with pytest.raises(DataError, match="valid.txt has gitblob"):
    datasets.resolve("CoDEx-S", cache_dir=cache, sources=files_sources(base))
  assert opener.asked == [f"{base}/files/train.txt", f"{base}/files/valid.txt"]
  assert not cache.exists()  # no empty cache folder is left behind


def test_download_beyond_the_size_cap_stops(opener, cache):
  base = "http://fake"
  endless = FakeResponse(endless=b"a" * 65536)
  opener.bodies = {f"{base}/files/train.txt": endless}
  sizes = {"train.txt": 10_000, "valid.txt": 100, "test.txt": 100}
  source = download.Files(files_sources(base)["CoDEx-S"].files, sizes)
  with pytest.raises(DataError) as err:
    datasets.resolve("CoDEx-S", cache_dir=cache, sources={"CoDEx-S": source})
  message = str(err.value)
  assert "\n" not in message and "exceeds 40,000 bytes" in message and "4x" in message
  assert endless.served <= 40_000 + 65_536  # stopped at the first chunk past the cap
  assert not cache.exists()


def test_announced_length_beyond_the_cap_stops_before_reading(opener, cache, monkeypatch):
  base = "http://fake"
  big = FakeResponse(b"x" * 10, headers={"Content-Length": str(3 << 30)})
  opener.bodies = {f"{base}/files/train.txt": big}
  with pytest.raises(DataError, match="exceeds 2,147,483,648 bytes .the cap for a source of "
                                      "unknown size"):
    datasets.resolve("CoDEx-S", cache_dir=cache, sources=files_sources(base))
  assert big.served == 0


def _tar(members) -> bytes:
  """A .tar.gz of ``(TarInfo, bytes | None)``."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for info, data in members:
      if data is not None:
        info.size = len(data)
      tar.addfile(info, io.BytesIO(data) if data is not None else None)
  return buf.getvalue()


def _member(name, kind=tarfile.REGTYPE, link=""):
  info = tarfile.TarInfo(name)
  info.type, info.linkname = kind, link
  return info


def test_archive_member_beyond_the_cap_is_refused(opener, cache):
  bomb = b"a\tr\tb\n" * 20_000  # 120 KB that gzip packs into a few hundred bytes
  archive = _tar([(_member("train.txt"), bomb)])
  url = "http://fake/data.tar.gz"
  opener.bodies = {url: archive}
  source = download.Tarball(url, hashlib.sha256(archive).hexdigest(),
                            {"train.txt": sha256(bomb)}, size=len(archive))
  with pytest.raises(DataError, match="train.txt in the downloaded archive has 120,000 bytes"):
    datasets.resolve("WN18RR", cache_dir=cache, sources={"WN18RR": source})
  assert not cache.exists()


def test_hostile_archive_members_are_skipped(opener, cache, tmp_path):
  outside = tmp_path / "outside.txt"
  archive = _tar([
      (_member("pkg/train.txt", tarfile.SYMTYPE, "/etc/passwd"), None),
      (_member("../../outside.txt"), b"escaped"),
      (_member(str(outside)), b"escaped"),
      (_member("pkg/valid.txt", tarfile.LNKTYPE, "pkg/train.txt"), None),
      (_member("pkg/dev.txt", tarfile.CHRTYPE), None),
      *[(_member(f"../x/{f}"), data) for f, data in CRLF.items()],
  ])
  url = "http://fake/data.tar.gz"
  opener.bodies = {url: archive}
  source = download.Tarball(url, hashlib.sha256(archive).hexdigest(),
                            {f: sha256(data) for f, data in LF.items()})
  path = datasets.resolve("WN18RR", cache_dir=cache, sources={"WN18RR": source})
  assert sorted(p.name for p in path.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
  for f, data in LF.items():
    assert not (path / f).is_symlink() and (path / f).read_bytes() == data
  assert not outside.exists() and not (cache.parent / "outside.txt").exists()
  assert sorted(p.name for p in cache.iterdir()) == ["WN18RR"]


def test_stale_staging_folders_are_removed(opener, cache, capsys):
  base = "http://fake"
  opener.bodies = {f"{base}/files/{f}": data for f, data in LF.items()}
  cache.mkdir(parents=True)
  old = cache / ".CoDEx-S.partial-dead"
  old.mkdir()
  (old / "train.txt").write_bytes(b"half")
  fresh = cache / ".CoDEx-S.partial-live"
  fresh.mkdir()
  (fresh / "train.txt").write_bytes(b"being written")
  other = cache / ".CoDEx-M.partial-dead"
  other.mkdir()
  long_ago = time.time() - download.STALE_SECONDS - 60
  for p in (old, old / "train.txt", other):
    os.utime(p, (long_ago, long_ago))
  os.utime(fresh, (long_ago, long_ago))  # an old folder with a file written just now is live
  datasets.resolve("CoDEx-S", cache_dir=cache, sources=files_sources(base))
  names = sorted(p.name for p in cache.iterdir())
  assert names == [".CoDEx-M.partial-dead", ".CoDEx-S.partial-live", "CoDEx-S"]
  assert f"removing {old}" in capsys.readouterr().err


def test_remove_stale_partials_ignores_files_and_links(tmp_path):
  target = tmp_path / "WN18RR"
  (tmp_path / ".WN18RR.partial-file").write_bytes(b"not a folder")
  elsewhere = tmp_path / "keep"
  elsewhere.mkdir()
  (tmp_path / ".WN18RR.partial-link").symlink_to(elsewhere)
  long_ago = time.time() - 10 * download.STALE_SECONDS
  os.utime(elsewhere, (long_ago, long_ago))
  assert download.remove_stale_partials(target) == []
  assert elsewhere.is_dir() and (tmp_path / ".WN18RR.partial-file").exists()


def test_sources_know_their_sizes():
  for name, source in datasets.SOURCES.items():
    if isinstance(source, (download.Tarball, ogb_data.OgbZip)):
      assert source.size, name
    else:
      assert set(source.sizes) == set(source.files), name


def test_fetch_dataset_installs_into_the_target(opener, tmp_path):
  """The download entry on its own: the folder appears complete, with nothing staged beside."""
  base = "http://fake"
  opener.bodies = {f"{base}/files/{f}": data for f, data in CRLF.items()}
  target = tmp_path / "somewhere" / "CoDEx-S"
  download.fetch_dataset("CoDEx-S", files_sources(base)["CoDEx-S"], target, timeout=5)
  assert download.complete(target)
  assert sorted(p.name for p in target.parent.iterdir()) == ["CoDEx-S"]
  assert datasets.Tarball is download.Tarball and datasets.Files is download.Files

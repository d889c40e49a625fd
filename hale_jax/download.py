"""Downloading one benchmark dataset into the cache safely: staged, capped, verified, atomic.

:func:`fetch_dataset` is what :func:`hale_jax.datasets.resolve` calls when a dataset is in
neither ``$HALE_DATA_DIR`` nor the cache.  It downloads a :data:`Source` (one archive, or one
URL per split) into a staging folder ``<cache>/.<Name>.partial-*``, deletes every ``\\r`` (LF
line endings) and moves the finished folder into the cache in one rename, so the cache never
holds a half-written dataset.  Finding the dataset and naming its source is
:mod:`hale_jax.datasets`'s job; this module only knows how to fetch and check what it is given.

Downloads stream to disk while being hashed; one that grows past :data:`SIZE_FACTOR` times its
expected size (or :data:`UNKNOWN_SIZE_CAP` when the source gives none) is stopped.  Each file's
checksum is checked as soon as it is on disk, before the next file is fetched, and an
archive's before anything is extracted from it; only regular archive members with a wanted
basename are extracted, under that basename or the name ``rename`` gives it (links and devices
are skipped).  An archive someone put by hand beside the dataset's cache folder
(``<cache>/<archive name>``, for a machine without network) is checked the same way and
installed from there, and left in place.  Staging folders left by a killed download are
removed by the next download once unchanged for :data:`STALE_SECONDS`.

File checksums apply to the LF form that lands in the cache.  A source has ``fill`` (put the
files into ``staging``) and a ``form``: how the installed folder is recognised, loaded and
fingerprinted (:class:`TextFolder`; ``hale_jax.arrayfolder.ArrayFolder`` for OGB's arrays).
Any failure raises :class:`~hale_jax.data.DataError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol
from urllib.parse import urlsplit

from hale_jax.data import SPLITS, DataError, KGData, load_folder, one_line, split_hashes

Checksum = tuple[str, str]
"""``("sha256", hex)`` or ``("gitblob", hex)`` (the id ``git hash-object`` prints)."""

SIZE_FACTOR = 4
"""A download stops once it exceeds this many times its source's expected size."""
UNKNOWN_SIZE_CAP = 2 << 30
"""The cap, in bytes, for a download whose source gives no expected size (2 GiB)."""
STALE_SECONDS = 600
"""A ``.NAME.partial-*`` folder unchanged for this long is left from a killed download; the
next download of NAME removes it.  A live download writes far more often (reads time out after
``timeout`` seconds, 30 by default)."""
_CHUNK = 1 << 20
_ARCHIVE = ".download"  # the archive's name inside the staging folder; never a split's


class TextFolder:
  """The installed form of :class:`Tarball` and :class:`Files`: ``train.txt``, ``valid.txt``
  and ``test.txt``, read by :func:`hale_jax.data.load_folder`."""
  files = tuple(f"{s}.txt" for s in SPLITS)
  expects = "train.txt, valid.txt and test.txt"

  @staticmethod
  def complete(folder: Path) -> bool:
    return complete(folder)

  @staticmethod
  def load(folder: Path, name: str, log: Callable[[str], None] | None = None) -> KGData:
    return load_folder(folder, name=name, log=log)

  @staticmethod
  def hashes(folder: Path) -> dict[str, str]:
    return split_hashes(folder)


@dataclasses.dataclass(frozen=True)
class Tarball:
  """One archive holding the splits; each ``files`` key is found anywhere by basename, and
  checked by its checksum when one is given (``None``: the archive's sha256 vouches for it).

  ``size``: the expected bytes of the archive (an upper bound will do), for the size cap;
  ``unpacked``: the expected bytes of its largest wanted file, for the cap on each (default:
  ``size``); ``rename``: the name a file gets in the cache (default: its own).
  """
  url: str
  sha256: str
  files: Mapping[str, Checksum | None]
  size: int | None = None
  unpacked: int | None = None
  rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
  form: ClassVar[Any] = TextFolder

  def fill(self, name: str, staging: Path, target: Path, timeout: float) -> None:
    archive, _ = fetch_archive(name, self, staging, target, timeout)
    _extract(name, archive, self, staging, _cap(self.unpacked or self.size),
             by_hand(name, target, self))
    if archive.parent == staging:
      archive.unlink()


@dataclasses.dataclass(frozen=True)
class Files:
  """One URL per split: ``{file name: (url, checksum)}``; ``sizes``: expected bytes per file
  (for the size cap; a missing entry means the 2 GiB cap)."""
  files: Mapping[str, tuple[str, Checksum]]
  sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
  form: ClassVar[Any] = TextFolder

  def fill(self, name: str, staging: Path, target: Path, timeout: float) -> None:
    """Fetches file by file, each checked before the next is fetched."""
    for f, (url, checksum) in self.files.items():
      got = _fetch(name, url, timeout, staging / f, _cap(self.sizes.get(f)), lf=True)
      _verify(name, f, staging / f, checksum, got)


class Source(Protocol):
  """What :func:`fetch_dataset` needs of a source (module docstring)."""
  form: ClassVar[Any]

  def fill(self, name: str, staging: Path, target: Path, timeout: float) -> None: ...


class _DownloadFailed(Exception):
  """A URL could not be fetched; ``args == (url, reason)``."""


def archive_name(url: str) -> str:
  """The file name of an archive's URL (``.../wikikg-v2.zip`` -> ``wikikg-v2.zip``)."""
  return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "archive"


def by_hand(name: str, target: Path | str, source: Any = None) -> str:
  """The advice when a dataset cannot be downloaded; it fits every command (only training
  takes --data_dir, and only for text splits)."""
  target = Path(target)
  form = getattr(source, "form", TextFolder)
  where = f"set HALE_DATA_DIR to a folder holding {name}/ with {form.expects}"
  if form is TextFolder:
    where = (f"put {form.expects} by hand into {target}, or {where}, or train with "
             f"--data_dir <folder>")
  if getattr(source, "url", None):
    return (f"download {source.url} by hand to {target.parent / archive_name(source.url)} "
            f"(the next run checks and installs it from there), or {where}")
  return where


def complete(folder: Path) -> bool:
  """Whether ``folder`` holds all three split files (a usable dataset folder)."""
  return all((Path(folder) / f).is_file() for f in TextFolder.files)


def fetch_dataset(name: str, source: Source, target: Path, timeout: float) -> None:
  """Downloads dataset ``name`` from ``source`` into the folder ``target`` (which must not
  exist), staged next to it and renamed into place only once every file checked out; the
  staging folder is removed whatever happens.  ``timeout``: seconds per network read."""
  created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
  staging = _staging(name, target)
  try:
    source.fill(name, staging, target, timeout)
  except _DownloadFailed as err:
    url, reason = err.args
    raise DataError(f"could not download {name} from {url} ({one_line(reason)}); "
                    f"{by_hand(name, target, source)}") from None
  else:
    _install(name, staging, target, source.form)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    _remove_if_empty(created)


def _remove_if_empty(folders: list[Path]) -> None:
  """Removes the cache folders this download created, innermost first, where they stayed
  empty (a failed first download leaves no empty cache behind)."""
  for folder in folders:
    try:
      folder.rmdir()
    except OSError:  # not empty (the dataset landed, or another download), or gone
      return


def _staging(name: str, target: Path) -> Path:
  """A new empty ``.NAME.partial-*`` folder next to ``target``, after removing stale ones."""
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
  except OSError as err:
    raise DataError(f"cannot create the dataset cache {target.parent} ({one_line(err)}); set "
                    f"HALE_CACHE_DIR to a writable folder, or HALE_DATA_DIR to a folder "
                    f"holding {name}/") from None


def _last_write(folder: Path) -> float:
  """The latest modification time of ``folder`` and the entries directly in it."""
  times = [folder.lstat().st_mtime]
  for entry in folder.iterdir():
    try:
      times.append(entry.lstat().st_mtime)
    except FileNotFoundError:  # removed meanwhile: the folder is in use
      times.append(time.time())
  return max(times)


def remove_stale_partials(target: Path, max_age: float = STALE_SECONDS) -> list[Path]:
  """Removes the ``.NAME.partial-*`` folders next to ``target`` (``NAME`` its name) that no
  one wrote to for ``max_age`` seconds: leftovers of a killed download.  Returns them."""
  removed = []
  now = time.time()
  for folder in target.parent.glob(f".{glob.escape(target.name)}.partial-*"):
    try:
      if folder.is_symlink() or not folder.is_dir() or now - _last_write(folder) < max_age:
        continue
    except OSError:  # gone meanwhile, or not ours to read: leave it
      continue
    print(f"removing {folder}, left by a download that did not finish", file=sys.stderr,
          flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    removed.append(folder)
  return removed


def _cap(expected: int | None) -> tuple[int, str]:
  """``(byte cap, why)`` for a download of ``expected`` bytes (``None``: unknown)."""
  if expected is None:
    return UNKNOWN_SIZE_CAP, "the cap for a source of unknown size"
  return SIZE_FACTOR * expected, f"{SIZE_FACTOR}x the expected {expected:,} bytes"


def fetch_archive(name: str, source: Any, staging: Path, target: Path,
                  timeout: float) -> tuple[Path, str]:
  """``(path, sha256)`` of the archive of ``source`` (its ``url``, ``sha256`` or None, and
  expected ``size``), checked (size cap; sha256 when known): the one put by hand at
  ``<target's parent>/<archive name>`` if there is one, else downloaded into ``staging``.
  Without a known sha256 the archive's own is printed, so that the user can compare it."""
  cap = _cap(source.size)
  shown = archive_name(source.url)
  placed = target.parent / shown
  if placed.is_file():
    print(f"installing {name} from {placed} (put there by hand) ...", file=sys.stderr,
          flush=True)
    got = _file_digest("sha256", placed) if placed.stat().st_size <= cap[0] else "too large"
    if got == "too large" or (source.sha256 and got != source.sha256.lower()):
      raise DataError(f"{name}: {placed} (put there by hand) is not the archive of "
                      f"{source.url} ({placed.stat().st_size:,} bytes, sha256 {got}; expected "
                      f"sha256 {source.sha256 or 'unknown'}, at most {cap[0]:,} bytes); "
                      f"replace or delete it")
    archive = placed
  else:
    archive = staging / _ARCHIVE
    got = _fetch(name, source.url, timeout, archive, cap, lf=False)
  if source.sha256:
    _verify(name, shown, archive, ("sha256", source.sha256), got)
    return archive, source.sha256.lower()
  got = got or _file_digest("sha256", archive)
  print(f"{name}: {shown} has sha256 {got} (no published checksum to compare with; its "
        f"format is checked as it is installed)", file=sys.stderr, flush=True)
  return archive, got


def _open(url: str, timeout: float):
  """The response to a GET of ``url`` (a context manager with ``read(n)`` and ``headers``);
  tests replace it with a fake opener."""
  return urllib.request.urlopen(url, timeout=timeout)


def _fetch(name: str, url: str, timeout: float, dest: Path, cap: tuple[int, str],
           lf: bool) -> str:
  """Streams ``url`` into ``dest`` (deleting every ``\\r`` if ``lf``); returns the sha256 of
  what was written.  Stops with a :class:`DataError` beyond ``cap`` bytes."""
  print(f"downloading {name} from {url} ...", file=sys.stderr, flush=True)
  limit, why = cap
  too_large = DataError(f"{name}: the download from {url} exceeds {limit:,} bytes ({why}); the "
                        f"source changed or the server misbehaves, so nothing was cached")
  digest, received = hashlib.sha256(), 0
  try:
    with _open(url, timeout) as response, open(dest, "wb") as out:
      length = (getattr(response, "headers", None) or {}).get("Content-Length")
      if length and str(length).isdigit() and int(length) > limit:
        raise too_large
      while chunk := response.read(_CHUNK):
        received += len(chunk)
        if received > limit:
          raise too_large
        if lf:
          chunk = chunk.replace(b"\r", b"")
        digest.update(chunk)
        _write(out, chunk, dest)
  except urllib.error.HTTPError as err:
    raise _DownloadFailed(url, err) from None
  except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, broken connections
    raise _DownloadFailed(url, getattr(err, "reason", None) or err) from None
  return digest.hexdigest()


def _write(out, chunk: bytes, dest: Path) -> None:
  """``out.write(chunk)``, a full disk reported as such rather than as a failed download."""
  try:
    out.write(chunk)
  except OSError as err:
    raise DataError(f"cannot write {dest} ({one_line(err)}); free some space, or set "
                    f"HALE_CACHE_DIR to another folder") from None


def _extract(name: str, archive: Path, source: Tarball, staging: Path, cap: tuple[int, str],
             advice: str) -> None:
  """Copies the wanted files (``source.files``), found by basename anywhere in a tar archive,
  into ``staging`` as LF text under their ``source.rename`` names, verifying each as it lands.
  Members that are not regular files (links, devices, folders) are skipped, and a member is
  only ever written under a name of ``source``, so no member can write outside ``staging``."""
  wanted = source.files
  found: set[str] = set()
  limit, why = cap
  try:
    with tarfile.open(archive, mode="r:*") as tar:
      for member in tar:
        base = member.name.rsplit("/", 1)[-1]
        if not (member.isfile() and base in wanted and base not in found):
          continue
        if member.size > limit:
          raise DataError(f"{name}: {member.name} in the downloaded archive has "
                          f"{member.size:,} bytes, over {limit:,} ({why}); the source changed, "
                          f"so nothing was cached")
        dest = staging / source.rename.get(base, base)
        got = _copy_lf(tar.extractfile(member), dest)
        if wanted[base] is not None:
          _verify(name, base, dest, wanted[base], got)
        found.add(base)
  except (tarfile.TarError, EOFError, zlib.error) as err:
    raise DataError(f"{name}: the archive cannot be read ({one_line(err)}); try again later, "
                    f"or {advice}") from None
  missing = [f for f in wanted if f not in found]
  if missing:
    raise DataError(f"{name}: the archive lacks {', '.join(missing)}; the source has "
                    f"changed, so {advice}")


def _copy_lf(source, dest: Path) -> str:
  """Copies a binary stream into ``dest`` without ``\\r``; returns the sha256 written."""
  digest = hashlib.sha256()
  with open(dest, "wb") as out:
    while chunk := source.read(_CHUNK):
      chunk = chunk.replace(b"\r", b"")
      digest.update(chunk)
      _write(out, chunk, dest)
  return digest.hexdigest()


def _digest(kind: str, data: bytes) -> str:
  """The ``kind`` checksum (``sha256`` or ``gitblob``) of ``data``, as hex."""
  if kind == "sha256":
    return hashlib.sha256(data).hexdigest()
  if kind == "gitblob":
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
  raise ValueError(f"unknown checksum kind {kind!r}")


def _file_digest(kind: str, path: Path) -> str:
  """:func:`_digest` of a file's bytes, read in chunks."""
  if kind == "sha256":
    digest = hashlib.sha256()
  elif kind == "gitblob":  # needs the length first, so it cannot be hashed while streaming
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
  else:
    raise ValueError(f"unknown checksum kind {kind!r}")
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _verify(name: str, filename: str, path: Path, checksum: Checksum,
            sha256: str | None = None) -> None:
  """Raises unless ``path`` matches ``checksum``; ``sha256`` is the file's, if known."""
  kind, expected = checksum
  got = sha256 if kind == "sha256" and sha256 else _file_digest(kind, path)
  if got != expected.lower():
    raise DataError(f"{name}: downloaded {filename} has {kind} {got}, expected {expected}; "
                    f"the download is corrupt or the source changed, so nothing was cached")


def _install(name: str, staging: Path, target: Path, form: Any) -> None:
  """Renames the filled ``staging`` folder to ``target`` in one step."""
  try:
    os.chmod(staging, 0o755)  # mkdtemp makes it private
    try:
      os.rename(staging, target)
    except OSError:
      if not form.complete(target):  # else a concurrent download won the race
        raise
  except OSError as err:
    raise DataError(f"cannot write the dataset into {target} ({one_line(err)}); set "
                    f"HALE_CACHE_DIR to a writable folder, or HALE_DATA_DIR to a folder "
                    f"holding {name}/") from None

"""Finding a benchmark dataset by name, downloading and caching it on first use.

:func:`resolve` maps a name (``WN18RR``, ``FB15k-237``, ``CoDEx-S``, ``CoDEx-M``, ``CoDEx-L``;
case, ``-`` and ``_`` are ignored) to a folder holding ``train.txt``, ``valid.txt`` and
``test.txt``.  It looks, in order, in

1. ``$HALE_DATA_DIR/<Name>``, if that variable is set and the folder has ``train.txt``;
2. the cache folder ``<cache>/<Name>``, where ``<cache>`` is the ``cache_dir`` argument, else
   ``$HALE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hale_jax/datasets``, else
   ``~/.cache/hale_jax/datasets``;
3. otherwise it downloads the canonical public release (:data:`SOURCES`) into a staging
   folder ``<cache>/.<Name>.partial-*``, deletes every ``\\r`` (LF line endings) and moves the
   finished folder into the cache in one rename, so the cache never holds a half-written
   dataset.

Downloads stream to disk while being hashed; one that grows past :data:`SIZE_FACTOR` times its
expected size (or :data:`UNKNOWN_SIZE_CAP` when the source gives none) is stopped.  Each file's
checksum is checked as soon as it is on disk, before the next file is fetched, and an
archive's before anything is extracted from it; only regular archive members with a wanted
basename are extracted, under that basename (links and devices are skipped).  Staging folders
left by a killed download are removed by the next download once unchanged for
:data:`STALE_SECONDS`.

Sources, pinned to a commit (checksums as in ``shared/datasets/README.md``):

* WN18RR, FB15k-237: ``WN18RR.tar.gz`` / ``FB15k-237.tar.gz`` of github.com/TimDettmers/ConvE;
  the tarball's sha256 is checked, then each split's sha256 after LF normalisation (the
  FB15k-237 files are CRLF in the archive).
* CoDEx-S, CoDEx-M, CoDEx-L: ``data/triples/codex-{s,m,l}/*.txt`` of github.com/tsafavi/codex,
  one URL per split, checked by sha256 (S, M) or git blob id (L).

File checksums always apply to the LF form, which is what lands in the cache.  Any failure
raises :class:`~hale_jax.data.DataError` with a one-line message.
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
from typing import Any, Mapping, Union

from hale_jax.data import SPLITS, DataError, one_line

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


@dataclasses.dataclass(frozen=True)
class Tarball:
  """One archive holding the splits; each ``files`` key is found anywhere by basename.

  ``size``: the expected bytes of the archive (an upper bound will do), for the size cap.
  """
  url: str
  sha256: str
  files: Mapping[str, Checksum]
  size: int | None = None


@dataclasses.dataclass(frozen=True)
class Files:
  """One URL per split: ``{file name: (url, checksum)}``; ``sizes``: expected bytes per file
  (for the size cap; a missing entry means the 2 GiB cap)."""
  files: Mapping[str, tuple[str, Checksum]]
  sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)


Source = Union[Tarball, Files]

_CONVE = "https://github.com/TimDettmers/ConvE/raw/f3c0eb286025410fa5b4c04696c918264163d0ca"
_CODEX = ("https://raw.githubusercontent.com/tsafavi/codex/"
          "3132e426c2a6b643b70bad679905a3a6270be440/data/triples")


def _codex(size: str, kind: str, digests: tuple[str, str, str],
           sizes: tuple[int, int, int]) -> Files:
  return Files({f"{s}.txt": (f"{_CODEX}/codex-{size}/{s}.txt", (kind, d))
                for s, d in zip(SPLITS, digests)},
               {f"{s}.txt": n for s, n in zip(SPLITS, sizes)})


# Expected sizes: the splits' bytes (shared/datasets/README.md); for a tarball their sum,
# CRs included, which bounds the compressed archive; CoDEx-L's are estimates from line counts.
SOURCES: dict[str, Source] = {
    "WN18RR": Tarball(f"{_CONVE}/WN18RR.tar.gz",
                      "1eb9152f804c140d163462c0d49f65e5a0b30ab5fbb375c5e3353c11a6249060", {
        "train.txt": ("sha256", "038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df"),
        "valid.txt": ("sha256", "453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab"),
        "test.txt": ("sha256", "0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5"),
    }, size=3_400_000),
    "FB15k-237": Tarball(f"{_CONVE}/FB15k-237.tar.gz",
                         "311df7930f842a02979eaa7a802484a6afe62303c07f915f1e6edbc30cbe05e8", {
        "train.txt": ("sha256", "61099230e4439f90885ca9767739e31e8e32f54736fa1c35952b27997bc7c08a"),
        "valid.txt": ("sha256", "749cbe9d923bac7b9354da5614ecfed2e0220256d442c3e04a6b303db1f273d9"),
        "test.txt": ("sha256", "e2e35e8e6113de220140b6f44dc71a5207b0fc6872d575e874aefe13259b655b"),
    }, size=24_200_000),
    "CoDEx-S": _codex("s", "sha256", (
        "64f93b7f314f3936a6f65739721429db3f6a7c8f5a1e1104ec3bb544f7434f59",
        "3831c0e57daef03c3a18cdd1a72e370b496f696c5218883d35c7d2ab8a6a772c",
        "27127fcb34688c4778e88a39ef3c9b540807da846021e9d9685660ac1838aca1"),
        (615_428, 34_323, 34_252)),
    "CoDEx-M": _codex("m", "sha256", (
        "d99c3437ab51690391a26d96976adf6e5494dba7ef6902e77000551bfa566556",
        "11c323096367354940846b9ed940c5dabddc1d20a70474222babe7e7fd28b28d",
        "0575ce05e4ce915e395bb4f708e8df9547989dd4c8c71407cbfd78c19daffcf7"),
        (3_660_213, 203_470, 203_693)),
    "CoDEx-L": _codex("l", "gitblob", (
        "be8735738ba4728430922c630f25bf01bcc9eaac",
        "3e5cec60786324253038169b05ecec82dc1358a8",
        "1303c431701b3f0d2e116467c7fb7b0f210ce869"),
        (11_000_000, 700_000, 700_000)),
}


class _DownloadFailed(Exception):
  """A URL could not be fetched; ``args == (url, reason)``."""


def canonical_name(name: str, known=SOURCES) -> str:
  """``"codex_s"`` -> ``"CoDEx-S"``; ignores case, ``-`` and ``_``."""
  def key(s: str) -> str:
    return s.lower().replace("-", "").replace("_", "")
  for canonical in known:
    if key(canonical) == key(name):
      return canonical
  raise DataError(f"unknown dataset {name!r}; known names are {', '.join(known)}; to train on "
                  f"another folder with train.txt, valid.txt and test.txt, pass --data_dir")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
  """The folder that holds downloaded datasets, one sub-folder each."""
  if cache_dir is not None:
    return Path(cache_dir)
  if os.environ.get("HALE_CACHE_DIR"):
    return Path(os.environ["HALE_CACHE_DIR"])
  xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(xdg) / "hale_jax" / "datasets"


def by_hand(name: str, target: Path | str) -> str:
  """The advice when a dataset cannot be downloaded; it fits every command (only training
  takes --data_dir)."""
  return (f"put train.txt, valid.txt and test.txt by hand into {target}, or set HALE_DATA_DIR "
          f"to a folder holding {name}/, or train with --data_dir <folder>")


def resolve(name: str, *, cache_dir: str | os.PathLike | None = None,
            sources: Mapping[str, Source] | None = None, timeout: float = 30.0) -> Path:
  """The folder of dataset ``name``, downloading it into the cache if needed (module docs)."""
  sources = SOURCES if sources is None else sources
  name = canonical_name(name, sources)
  if os.environ.get("HALE_DATA_DIR"):
    local = Path(os.environ["HALE_DATA_DIR"]) / name
    if (local / "train.txt").is_file():
      return local
  target = cache_root(cache_dir) / name
  if _complete(target):
    return target
  if target.exists():
    raise DataError(f"{target} exists but lacks train.txt, valid.txt or test.txt; complete it "
                    f"or delete it so that {name} is downloaded again")
  staging = _staging(name, target)
  try:
    _download(name, sources[name], staging, timeout)
  except _DownloadFailed as err:
    url, reason = err.args
    raise DataError(f"could not download {name} from {url} ({one_line(reason)}); "
                    f"{by_hand(name, target)}") from None
  else:
    _install(name, staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target


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


def _download(name: str, source: Source, staging: Path, timeout: float) -> None:
  """Fills ``staging`` with the LF split files, each checksum verified as soon as it is there
  (a per-file source stops at the first bad file, before fetching the next)."""
  if isinstance(source, Tarball):
    archive = staging / _ARCHIVE
    cap = _cap(source.size)
    got = _fetch(name, source.url, timeout, archive, cap, lf=False)
    _verify(name, source.url.rsplit("/", 1)[-1], archive, ("sha256", source.sha256), got)
    _extract(name, archive, source.files, staging, cap)
    archive.unlink()
    return
  for f, (url, checksum) in source.files.items():
    got = _fetch(name, url, timeout, staging / f, _cap(source.sizes.get(f)), lf=True)
    _verify(name, f, staging / f, checksum, got)


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


def _extract(name: str, archive: Path, wanted: Mapping[str, Checksum], staging: Path,
             cap: tuple[int, str]) -> None:
  """Copies the ``wanted`` files, found by basename anywhere in a tar archive, into
  ``staging`` as LF text, verifying each as it lands.  Members that are not regular files
  (links, devices, folders) are skipped, and a member is only ever written under its
  basename, so no member can write outside ``staging``."""
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
        got = _copy_lf(tar.extractfile(member), staging / base)
        _verify(name, base, staging / base, wanted[base], got)
        found.add(base)
  except (tarfile.TarError, EOFError, zlib.error) as err:
    raise DataError(f"{name}: the downloaded archive cannot be read ({one_line(err)}); try "
                    f"again later, or {by_hand(name, staging.parent / name)}") from None
  missing = [f for f in wanted if f not in found]
  if missing:
    raise DataError(f"{name}: the downloaded archive lacks {', '.join(missing)}; the source "
                    f"has changed, so {by_hand(name, staging.parent / name)}")


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


def _install(name: str, staging: Path, target: Path) -> None:
  """Renames the filled ``staging`` folder to ``target`` in one step."""
  try:
    os.chmod(staging, 0o755)  # mkdtemp makes it private
    try:
      os.rename(staging, target)
    except OSError:
      if not _complete(target):  # else a concurrent download won the race
        raise
  except OSError as err:
    raise DataError(f"cannot write the dataset into {target} ({one_line(err)}); set "
                    f"HALE_CACHE_DIR to a writable folder, or HALE_DATA_DIR to a folder "
                    f"holding {name}/") from None


def _complete(folder: Path) -> bool:
  return all((folder / f"{s}.txt").is_file() for s in SPLITS)


def load_data(spec: Mapping[str, Any]):
  """Loads the :class:`~hale_jax.data.KGData` a run was trained on, from its data spec.

  ``spec`` (as stored in a run's ``run.json``) is one of

  * ``{"kind": "synthetic"}``; ``{"kind": "powerlaw", "entities": N}``
    (:func:`hale_jax.synthetic.power_law`);
  * ``{"kind": "dataset", "name": NAME}``;
  * ``{"kind": "folder", "path": PATH}``, optionally with ``"strip_whitespace": true``;
  * ``{"kind": "file", "path": PATH}`` with optional ``columns``, ``delimiter``, ``header``,
    ``strip_whitespace``, ``fractions`` (``[0.8, 0.1, 0.1]``), ``seed`` and ``name``: one file
    split by :func:`hale_jax.own_data.load_triples_file` (the same file and settings give the
    same splits);
  * ``{"kind": "files", "train": PATH, "valid": PATH, "test": PATH}`` with optional
    ``columns``, ``delimiter``, ``header``, ``strip_whitespace`` and ``name``
    (:func:`hale_jax.own_data.load_split_files`).

  Other keys (such as ``sha256``, see :func:`spec_hashes`) are ignored here.
  """
  from hale_jax import own_data, synthetic  # pylint: disable=import-outside-toplevel
  from hale_jax.data import load_folder  # pylint: disable=import-outside-toplevel
  kind = spec.get("kind")
  strip = bool(spec.get("strip_whitespace", False))
  reading = {"columns": spec.get("columns") or own_data.DEFAULT_COLUMNS,
             "delimiter": spec.get("delimiter"), "header": bool(spec.get("header", False)),
             "strip_whitespace": strip}
  if kind == "synthetic":
    return synthetic.generate()
  if kind == "powerlaw":
    return synthetic.power_law(int(spec["entities"]))
  if kind == "dataset":
    return load_folder(resolve(spec["name"]), name=spec["name"])
  if kind == "folder":
    return load_folder(spec["path"], strip_whitespace=strip)
  if kind == "file":
    data, _ = own_data.load_triples_file(
        spec["path"], fractions=spec.get("fractions") or own_data.DEFAULT_FRACTIONS,
        seed=int(spec.get("seed", 0)), name=spec.get("name"), **reading)
    return data
  if kind == "files":
    return own_data.load_split_files(spec["train"], spec["valid"], spec["test"],
                                     name=spec.get("name"), **reading)
  raise DataError(f"unknown data spec {dict(spec)!r}; expected kind synthetic, powerlaw, "
                  f"dataset, folder, file or files")


def spec_hashes(spec: Mapping[str, Any]) -> dict[str, str]:
  """sha256 of the raw files behind a data spec: ``{"train": .., "valid": .., "test": ..}``
  for a dataset, folder or files; ``{"file": ..}`` for one file; ``{}`` for generated graphs
  (their spec says it all).  Store it with the spec; :func:`check_hashes` compares later."""
  from hale_jax.data import file_sha256, split_hashes  # pylint: disable=import-outside-toplevel
  kind = spec.get("kind")
  if kind == "dataset":
    return split_hashes(resolve(spec["name"]))
  if kind == "folder":
    return split_hashes(spec["path"])
  if kind == "file":
    return {"file": file_sha256(spec["path"])}
  if kind == "files":
    return {s: file_sha256(spec[s]) for s in SPLITS}
  return {}


def check_hashes(spec: Mapping[str, Any], recorded: Mapping[str, str]) -> None:
  """Raises a one-line :class:`DataError` when the files behind ``spec`` changed since
  ``recorded`` (:func:`spec_hashes` at the start of the run), e.g. before resuming."""
  now = spec_hashes(spec)
  changed = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
  if changed:
    where = spec.get("path") or spec.get("name") or spec.get("train") or spec.get("kind")
    raise DataError(f"the data of this run changed since it started ({', '.join(changed)} of "
                    f"{where} now has another sha256); restore the files, or start a new run "
                    f"in another --workdir")

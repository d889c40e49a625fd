"""Finding a benchmark dataset by name, downloading and caching it on first use.

:func:`resolve` maps a name (``WN18RR``, ``FB15k-237``, ``CoDEx-S``, ``CoDEx-M``, ``CoDEx-L``;
case, ``-`` and ``_`` are ignored) to a folder holding ``train.txt``, ``valid.txt`` and
``test.txt``.  It looks, in order, in

1. ``$HALE_DATA_DIR/<Name>``, if that variable is set and the folder has ``train.txt``;
2. the cache folder ``<cache>/<Name>``, where ``<cache>`` is the ``cache_dir`` argument, else
   ``$HALE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hale_jax/datasets``, else
   ``~/.cache/hale_jax/datasets``;
3. otherwise it downloads the canonical public release (:data:`SOURCES`), checks its
   checksums, deletes every ``\\r`` (LF line endings) and moves the finished folder into the
   cache in one rename, so the cache never holds a half-written dataset.

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
import hashlib
import http.client
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Union

from hale_jax.data import SPLITS, DataError, one_line

Checksum = tuple[str, str]
"""``("sha256", hex)`` or ``("gitblob", hex)`` (the id ``git hash-object`` prints)."""


@dataclasses.dataclass(frozen=True)
class Tarball:
  """One archive holding the splits; each ``files`` key is found anywhere by basename."""
  url: str
  sha256: str
  files: Mapping[str, Checksum]


@dataclasses.dataclass(frozen=True)
class Files:
  """One URL per split: ``{file name: (url, checksum)}``."""
  files: Mapping[str, tuple[str, Checksum]]


Source = Union[Tarball, Files]

_CONVE = "https://github.com/TimDettmers/ConvE/raw/f3c0eb286025410fa5b4c04696c918264163d0ca"
_CODEX = ("https://raw.githubusercontent.com/tsafavi/codex/"
          "3132e426c2a6b643b70bad679905a3a6270be440/data/triples")


def _codex(size: str, kind: str, digests: tuple[str, str, str]) -> Files:
  return Files({f"{s}.txt": (f"{_CODEX}/codex-{size}/{s}.txt", (kind, d))
                for s, d in zip(SPLITS, digests)})


SOURCES: dict[str, Source] = {
    "WN18RR": Tarball(f"{_CONVE}/WN18RR.tar.gz",
                      "1eb9152f804c140d163462c0d49f65e5a0b30ab5fbb375c5e3353c11a6249060", {
        "train.txt": ("sha256", "038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df"),
        "valid.txt": ("sha256", "453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab"),
        "test.txt": ("sha256", "0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5"),
    }),
    "FB15k-237": Tarball(f"{_CONVE}/FB15k-237.tar.gz",
                         "311df7930f842a02979eaa7a802484a6afe62303c07f915f1e6edbc30cbe05e8", {
        "train.txt": ("sha256", "61099230e4439f90885ca9767739e31e8e32f54736fa1c35952b27997bc7c08a"),
        "valid.txt": ("sha256", "749cbe9d923bac7b9354da5614ecfed2e0220256d442c3e04a6b303db1f273d9"),
        "test.txt": ("sha256", "e2e35e8e6113de220140b6f44dc71a5207b0fc6872d575e874aefe13259b655b"),
    }),
    "CoDEx-S": _codex("s", "sha256", (
        "64f93b7f314f3936a6f65739721429db3f6a7c8f5a1e1104ec3bb544f7434f59",
        "3831c0e57daef03c3a18cdd1a72e370b496f696c5218883d35c7d2ab8a6a772c",
        "27127fcb34688c4778e88a39ef3c9b540807da846021e9d9685660ac1838aca1")),
    "CoDEx-M": _codex("m", "sha256", (
        "d99c3437ab51690391a26d96976adf6e5494dba7ef6902e77000551bfa566556",
        "11c323096367354940846b9ed940c5dabddc1d20a70474222babe7e7fd28b28d",
        "0575ce05e4ce915e395bb4f708e8df9547989dd4c8c71407cbfd78c19daffcf7")),
    "CoDEx-L": _codex("l", "gitblob", (
        "be8735738ba4728430922c630f25bf01bcc9eaac",
        "3e5cec60786324253038169b05ecec82dc1358a8",
        "1303c431701b3f0d2e116467c7fb7b0f210ce869")),
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
  raise DataError(f"unknown dataset {name!r}; known names are {', '.join(known)}; for any other "
                  f"folder with train.txt, valid.txt and test.txt use --data_dir")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
  """The folder that holds downloaded datasets, one sub-folder each."""
  if cache_dir is not None:
    return Path(cache_dir)
  if os.environ.get("HALE_CACHE_DIR"):
    return Path(os.environ["HALE_CACHE_DIR"])
  xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(xdg) / "hale_jax" / "datasets"


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
  try:
    files = _download(name, sources[name], timeout)
  except _DownloadFailed as err:
    url, reason = err.args
    raise DataError(
        f"could not download {name} from {url} ({one_line(reason)}); put train.txt, valid.txt "
        f"and test.txt by hand into {target} or into $HALE_DATA_DIR/{name}, or pass "
        f"--data_dir <folder>") from None
  _install(files, target)
  return target


def _download(name: str, source: Source, timeout: float) -> dict[str, bytes]:
  """``{file name: LF content}``, every checksum verified."""
  if isinstance(source, Tarball):
    archive = _fetch(name, source.url, timeout)
    _verify(name, source.url.rsplit("/", 1)[-1], archive, ("sha256", source.sha256))
    raw = _extract(name, archive, source.files)
    checksums = source.files
  else:
    raw = {f: _fetch(name, url, timeout) for f, (url, _) in source.files.items()}
    checksums = {f: checksum for f, (_, checksum) in source.files.items()}
  files = {f: data.replace(b"\r", b"") for f, data in raw.items()}
  for f, data in files.items():
    _verify(name, f, data, checksums[f])
  return files


def _fetch(name: str, url: str, timeout: float) -> bytes:
  print(f"downloading {name} from {url} ...", file=sys.stderr, flush=True)
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      return response.read()
  except urllib.error.HTTPError as err:
    raise _DownloadFailed(url, err) from None
  except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, broken connections
    raise _DownloadFailed(url, getattr(err, "reason", None) or err) from None


def _extract(name: str, archive: bytes, wanted) -> dict[str, bytes]:
  """Reads the ``wanted`` files, found by basename anywhere in a tar archive."""
  found: dict[str, bytes] = {}
  try:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
      for member in tar:
        base = member.name.rsplit("/", 1)[-1]
        if member.isfile() and base in wanted and base not in found:
          found[base] = tar.extractfile(member).read()
  except tarfile.TarError as err:
    raise DataError(f"{name}: the downloaded archive cannot be read ({one_line(err)}); "
                    f"delete it and try again, or use --data_dir") from None
  missing = [f for f in wanted if f not in found]
  if missing:
    raise DataError(f"{name}: the downloaded archive lacks {', '.join(missing)}; the source "
                    f"has changed, so pass --data_dir <folder> with the files instead")
  return found


def _digest(kind: str, data: bytes) -> str:
  if kind == "sha256":
    return hashlib.sha256(data).hexdigest()
  if kind == "gitblob":
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
  raise ValueError(f"unknown checksum kind {kind!r}")


def _verify(name: str, filename: str, data: bytes, checksum: Checksum) -> None:
  kind, expected = checksum
  got = _digest(kind, data)
  if got != expected.lower():
    raise DataError(f"{name}: downloaded {filename} has {kind} {got}, expected {expected}; "
                    f"the download is corrupt or the source changed, so nothing was cached")


def _install(files: Mapping[str, bytes], target: Path) -> None:
  """Writes ``files`` into a temporary folder and renames it to ``target`` in one step."""
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
  except OSError as err:
    raise DataError(f"cannot create the dataset cache {target.parent} ({one_line(err)}); set "
                    f"HALE_CACHE_DIR to a writable folder, or use --data_dir") from None
  try:
    for f, data in files.items():
      (tmp / f).write_bytes(data)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    try:
      os.rename(tmp, target)
    except OSError:
      if not _complete(target):  # else a concurrent download won the race
        raise
  except OSError as err:
    raise DataError(f"cannot write the dataset into {target} ({one_line(err)}); set "
                    f"HALE_CACHE_DIR to a writable folder, or use --data_dir") from None
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _complete(folder: Path) -> bool:
  return all((folder / f"{s}.txt").is_file() for s in SPLITS)



def load_data(spec: Mapping[str, str]):
  """Loads the :class:`~hale_jax.data.KGData` a run was trained on, from its data spec.

  ``spec`` is one of ``{"kind": "synthetic"}``, ``{"kind": "powerlaw", "entities": N}``
  (:func:`hale_jax.synthetic.power_law`), ``{"kind": "dataset", "name": NAME}`` or
  ``{"kind": "folder", "path": PATH}`` (as stored in a run's ``run.json``).
  """
  from hale_jax import synthetic  # pylint: disable=import-outside-toplevel
  from hale_jax.data import load_folder  # pylint: disable=import-outside-toplevel
  kind = spec.get("kind")
  if kind == "synthetic":
    return synthetic.generate()
  if kind == "powerlaw":
    return synthetic.power_law(int(spec["entities"]))
  if kind == "dataset":
    return load_folder(resolve(spec["name"]), name=spec["name"])
  if kind == "folder":
    return load_folder(spec["path"])
  raise DataError(f"unknown data spec {dict(spec)!r}; expected kind synthetic, powerlaw, dataset or folder")

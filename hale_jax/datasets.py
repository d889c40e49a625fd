"""Finding a benchmark dataset by name, downloading and caching it on first use, loading it.

:func:`resolve` maps a name (``WN18RR``, ``FB15k-237``, ``CoDEx-S``, ``CoDEx-M``, ``CoDEx-L``,
``Wikidata5M``, ``ogbl-wikikg2``; case, ``-`` and ``_`` are ignored) to a folder holding the
dataset in its installed form (its source's ``form``): ``train.txt``, ``valid.txt`` and
``test.txt``, or for ogbl-wikikg2 a folder of arrays (``hale_jax.arrayfolder``); :func:`load`
reads it and :func:`hashes` fingerprints it.  It looks, in order, in

1. ``$HALE_DATA_DIR/<Name>``, if that variable is set and the folder is complete;
2. the cache folder ``<cache>/<Name>``, where ``<cache>`` is the ``cache_dir`` argument, else
   ``$HALE_CACHE_DIR``, else ``$XDG_CACHE_HOME/hale_jax/datasets``, else
   ``~/.cache/hale_jax/datasets``;
3. otherwise it downloads the canonical public release (:data:`SOURCES`) into the cache with
   :func:`hale_jax.download.fetch_dataset` (staged, size-capped, checksummed, LF line endings,
   moved into place in one rename; see that module).  An archive put by hand at
   ``<cache>/<archive name>`` is installed from there instead.

Sources, pinned to a commit or revision (checksums as in ``shared/datasets/README.md``):

* WN18RR, FB15k-237: ``WN18RR.tar.gz`` / ``FB15k-237.tar.gz`` of github.com/TimDettmers/ConvE;
  the tarball's sha256 is checked, then each split's sha256 after LF normalisation (the
  FB15k-237 files are CRLF in the archive).
* CoDEx-S, CoDEx-M, CoDEx-L: ``data/triples/codex-{s,m,l}/*.txt`` of github.com/tsafavi/codex,
  one URL per split, checked by sha256 (S, M) or git blob id (L).
* Wikidata5M, the transductive split (KEPLER, Wang et al.; 4,594,485 entities, 822 relations,
  20,614,279 / 5,163 / 5,133 triples of tab-separated Wikidata ``Q``/``P`` ids): the archive
  ``wikidata5m_transductive.tar.gz`` holding ``wikidata5m_transductive_{train,valid,test}.txt``,
  installed as ``train.txt``, ``valid.txt``, ``test.txt``.  The authors' release is
  https://www.dropbox.com/s/6sbhm0rwo4l73jq/wikidata5m_transductive.tar.gz?dl=1, linked from
  https://deepgraphlearning.github.io/project/wikidata5m (PyG's loader uses it too), with no
  checksum.  hale_jax fetches the copy on Hugging Face (``intfloat/wikidata5m``, by SimKGC's
  author) at a fixed revision, whose sha256 and size (168,258,214 bytes) are recorded for that
  revision in public lock files and pinned here; they were not checked against the Dropbox
  file (written without network).
* ogbl-wikikg2 (Open Graph Benchmark): OGB's ``wikikg-v2.zip``, converted on install to arrays
  with its given valid/test negatives; OGB publishes no checksum (``hale_jax.ogb_data``).

Any failure raises :class:`~hale_jax.data.DataError` with a one-line message.
(:mod:`hale_jax.dataspec` turns a run's data spec back into its data.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

from hale_jax import download, ogb_data
from hale_jax.data import SPLITS, DataError, KGData
from hale_jax.download import Files, Source, Tarball

_CONVE = "https://github.com/TimDettmers/ConvE/raw/f3c0eb286025410fa5b4c04696c918264163d0ca"
_CODEX = ("https://raw.githubusercontent.com/tsafavi/codex/"
          "3132e426c2a6b643b70bad679905a3a6270be440/data/triples")
_WIKIDATA5M = ("https://huggingface.co/datasets/intfloat/wikidata5m/resolve/"
               "6b2b09672129e280c0c9da97ab58154e9d535e6b/wikidata5m_transductive.tar.gz")
_WIKIDATA5M_FILES = {f"wikidata5m_transductive_{s}.txt": f"{s}.txt" for s in SPLITS}


def _codex(size: str, kind: str, digests: tuple[str, str, str],
           sizes: tuple[int, int, int]) -> Files:
  """The per-split source of CoDEx-``size``: its pinned raw URLs, ``kind`` checksums and
  expected byte sizes, in :data:`~hale_jax.data.SPLITS` order."""
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
    # unpacked: an upper estimate of the train file (20.6M lines of about 25 bytes).
    "Wikidata5M": Tarball(_WIKIDATA5M,
                          "383160990b41c0905fc03f4a8afbb9b12be1ca3591e026bde6cdc94a59542597",
                          dict.fromkeys(_WIKIDATA5M_FILES), size=168_258_214,
                          unpacked=1_000_000_000, rename=_WIKIDATA5M_FILES),
    # size: about 4.1 GB (a listing of the server; the negatives alone are 8.2 GB of int64).
    "ogbl-wikikg2": ogb_data.OgbZip("https://snap.stanford.edu/ogb/data/linkproppred/"
                                    "wikikg-v2.zip", size=4_100_000_000),
}


def canonical_name(name: str, known=SOURCES) -> str:
  """``"codex_s"`` -> ``"CoDEx-S"``; ignores case, ``-`` and ``_``."""
  def key(s: str) -> str:
    return s.lower().replace("-", "").replace("_", "")
  for canonical in known:
    if key(canonical) == key(name):
      return canonical
  raise DataError(f"unknown dataset {name!r}; known names are {', '.join(known)}; to train on "
                  f"another folder with train.txt, valid.txt and test.txt, pass --data_dir")


def _source(name: str, sources: Mapping[str, Source] | None) -> tuple[str, Source]:
  sources = SOURCES if sources is None else sources
  name = canonical_name(name, sources)
  return name, sources[name]


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
  name, source = _source(name, sources)
  form = source.form
  if os.environ.get("HALE_DATA_DIR"):
    root = Path(os.environ["HALE_DATA_DIR"])
    if not root.is_dir():
      raise DataError(f"HALE_DATA_DIR={root} is not a folder; point it at the folder that holds "
                      f"{name}/ (with {form.expects}), or unset it to look in the cache "
                      f"{cache_root(cache_dir)} and download there")
    local = root / name
    if form.complete(local):
      return local
  target = cache_root(cache_dir) / name
  if form.complete(target):
    return target
  if target.exists():
    missing = [f for f in form.files if not (target / f).is_file()]
    raise DataError(f"{target} exists but lacks {', '.join(missing)}; complete it or delete "
                    f"it so that {name} is downloaded again")
  download.fetch_dataset(name, source, target, timeout)
  return target


def load(name: str, *, cache_dir: str | os.PathLike | None = None,
         sources: Mapping[str, Source] | None = None, timeout: float = 30.0,
         log: Callable[[str], None] | None = None) -> KGData:
  """Dataset ``name`` (resolved, downloaded if needed), read in its installed form; the data's
  name is ``name`` as given.  ``log`` gets the reader's progress lines (text splits)."""
  folder = resolve(name, cache_dir=cache_dir, sources=sources, timeout=timeout)
  return _source(name, sources)[1].form.load(folder, name, log=log)


def hashes(name: str, *, cache_dir: str | os.PathLike | None = None,
           sources: Mapping[str, Source] | None = None) -> dict[str, str]:
  """sha256 of the installed files of dataset ``name`` (what ``run.json`` keeps)."""
  folder = resolve(name, cache_dir=cache_dir, sources=sources)
  return _source(name, sources)[1].form.hashes(folder)

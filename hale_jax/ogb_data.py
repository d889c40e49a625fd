"""ogbl-wikikg2 (and any OGB link-prediction archive laid out like it): downloaded once and
converted into a folder of arrays that loads without PyTorch and without parsing text.

The source is the Open Graph Benchmark's archive, the ``url`` of ``ogbl-wikikg2`` in
``ogb/linkproppred/master.csv`` (https://snap.stanford.edu/ogb/data/linkproppred/wikikg-v2.zip),
which ``ogb.linkproppred.LinkPropPredDataset`` unpacks into ``wikikg-v2/``:

==================================  =========================================================
``split/time/train.pt``             ``{"head", "relation", "tail"}``: int64 ``[T]`` each
``split/time/{valid,test}.pt``      the same, and ``"head_neg"``, ``"tail_neg"``: int64
                                    ``[n, 500]``, the candidates OGB's evaluator ranks each
                                    triple against (``get_edge_split``; PyKEEN's OGB loader
                                    types the same keys)
``mapping/nodeidx2entityid.csv.gz`` ``node idx,entity id``: the Wikidata id of each entity
``mapping/reltype2relid.csv.gz``    ``reltype,rel id``: the Wikidata id of each relation
``raw/``                            the same graph as edge lists (not needed)
==================================  =========================================================

2,500,604 entities, 535 relations; 16,109,182 train, 429,456 valid and 598,543 test triples.

**Checks.**  OGB publishes no checksum of its link-prediction archives (its large-scale
challenge archives have md5 sums on their pages; these do not), so none is pinned: the download
is capped at :data:`~hale_jax.download.SIZE_FACTOR` times its expected size, its sha256 is
printed and kept in ``archive.sha256``, and its content is checked as it is converted: the
members above must be there, each ``.pt`` file a ``torch.save`` dict of integer NumPy arrays
(:mod:`hale_jax.torch_pickle`, which runs no code from the file) with the keys and shapes above,
every id within the vocabularies.  Every installed file's sha256 goes into a run's ``run.json``.

**Conversion** (:func:`convert`): each split's triples become int32 ``[T, 3]`` and its
negatives int32 ``[n, 2, 500]`` (head, then tail), written as ``.npy`` files of
:mod:`hale_jax.arrayfolder`; names come from the mapping files when the archive has them, else
the ids themselves are the names.  Unpickling holds a split's raw pickle, a copy as a string and
the arrays at once: about three times the largest file (``test.pt``, about 5 GB) in memory,
once, while installing.
"""

from __future__ import annotations

import dataclasses
import gzip
import zipfile
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hale_jax import arrayfolder, download, torch_pickle
from hale_jax.arrayfolder import ArrayFolder
from hale_jax.data import SPLITS, DataError, one_line

TRIPLE_KEYS = ("head", "relation", "tail")
NEGATIVE_KEYS = ("head_neg", "tail_neg")
MAPPINGS = {"entity": "mapping/nodeidx2entityid.csv.gz",
            "relation": "mapping/reltype2relid.csv.gz"}
_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class OgbZip:
  """An OGB link-prediction zip: ``url``, expected bytes ``size`` (for the size cap),
  ``sha256`` (None: none is published) and the ``split`` folder to use."""
  url: str
  size: int | None
  sha256: str | None = None
  split: str = "time"
  form: ClassVar[Any] = ArrayFolder

  def fill(self, name: str, staging: Path, target: Path, timeout: float) -> None:
    archive, sha256 = download.fetch_archive(name, self, staging, target, timeout)
    advice = download.by_hand(name, target, self)
    convert(name, archive, staging, self.split, self.size, advice)
    (staging / arrayfolder.ARCHIVE_SHA256).write_text(
        f"{sha256}  {download.archive_name(self.url)}\n", encoding="utf-8")
    if archive.parent == staging:
      archive.unlink()


def _member(name: str, archive: zipfile.ZipFile, path: str, advice: str,
            required: bool = True) -> zipfile.ZipInfo | None:
  """The one member whose name is ``path`` or ends in ``/path`` (a top folder is allowed)."""
  found = [i for i in archive.infolist()
           if not i.is_dir() and (i.filename == path or i.filename.endswith("/" + path))]
  if len(found) > 1:
    raise DataError(f"{name}: the archive holds {path} {len(found)} times; {advice}")
  if not found and required:
    raise DataError(f"{name}: the archive lacks {path}; the source has changed, so {advice}")
  return found[0] if found else None


def _extract(name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path,
             cap: int) -> Path:
  """Copies one member to ``dest``, stopping beyond ``cap`` bytes whatever its header says."""
  written = 0
  with archive.open(info) as source, open(dest, "wb") as out:
    while chunk := source.read(1 << 20):
      written += len(chunk)
      if written > cap:
        raise DataError(f"{name}: {info.filename} in the archive unpacks to over {cap:,} "
                        f"bytes; the source changed, so nothing was cached")
      out.write(chunk)
  return dest


def _int_array(name: str, where: str, d: dict, key: str, ndim: int) -> np.ndarray:
  a = d.get(key)
  if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.ndim != ndim:
    what = (f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray)
            else type(a).__name__)
    raise DataError(f"{name}: {where}[{key!r}] is {what}, expected a {ndim}-d integer array")
  if a.size and (a.min() < 0 or a.max() > _INT32_MAX):
    raise DataError(f"{name}: {where}[{key!r}] holds ids outside [0, 2**31)")
  return a


def split_arrays(name: str, where: str, d: Any, held_out: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
  """``(triples int32 [T, 3], negatives int32 [T, 2, K] or None)`` of one OGB split dict."""
  if not isinstance(d, dict):
    raise DataError(f"{name}: {where} holds a {type(d).__name__}, expected a dict of arrays")
  h, r, t = (_int_array(name, where, d, k, 1) for k in TRIPLE_KEYS)
  if not len(h) == len(r) == len(t):
    raise DataError(f"{name}: {where} has {len(h)} heads, {len(r)} relations, {len(t)} tails")
  triples = np.stack([h, r, t], axis=1).astype(np.int32)
  if not held_out:
    return triples, None
  head_neg, tail_neg = (_int_array(name, where, d, k, 2) for k in NEGATIVE_KEYS)
  if head_neg.shape != tail_neg.shape or head_neg.shape[0] != len(h) or not head_neg.shape[1]:
    raise DataError(f"{name}: {where} has negatives of shapes {head_neg.shape} and "
                    f"{tail_neg.shape} for {len(h)} triples, expected [{len(h)}, K] each")
  negatives = np.empty((len(h), 2, head_neg.shape[1]), np.int32)
  negatives[:, 0], negatives[:, 1] = head_neg, tail_neg
  return triples, negatives


def read_mapping(name: str, where: str, raw: bytes) -> list[str]:
  """The names of an OGB mapping file (gzipped CSV: a header, then ``index,name`` with the
  indices 0, 1, 2, ... in order)."""
  try:
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
  except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
    raise DataError(f"{name}: {where} is not gzipped UTF-8 text ({one_line(err)})") from None
  names = []
  for number, line in enumerate(lines[1:], start=2):
    index, comma, value = line.partition(",")
    if not comma or index.strip() != str(number - 2) or not value.strip():
      raise DataError(f"{name}: {where}:{number}: expected '{number - 2},<id>', got "
                      f"{line[:60]!r}")
    names.append(value.strip())
  return names


def _names(name: str, archive: zipfile.ZipFile, kind: str, count: int, advice: str) -> list[str]:
  """The mapping's names (at least ``count`` of them), or the ids as names without one."""
  info = _member(name, archive, MAPPINGS[kind], advice, required=False)
  if info is None:
    return [str(i) for i in range(count)]
  names = read_mapping(name, info.filename, archive.read(info))
  if len(names) < count:
    raise DataError(f"{name}: {info.filename} names {len(names)} {kind} ids, but the splits "
                    f"use ids up to {count - 1}; {advice}")
  return names


def convert(name: str, archive_path: Path, staging: Path, split: str, size: int | None,
            advice: str) -> None:
  """Writes the folder of arrays of an OGB link-prediction zip into ``staging`` (module
  docstring); each ``.pt`` file is extracted, converted and deleted before the next."""
  cap = download.SIZE_FACTOR * size if size else download.UNKNOWN_SIZE_CAP
  num_entities = num_relations = 0  # 1 + the largest id seen
  try:
    with zipfile.ZipFile(archive_path) as archive:
      infos = {s: _member(name, archive, f"split/{split}/{s}.pt", advice) for s in SPLITS}
      for s in SPLITS:
        pt = _extract(name, archive, infos[s], staging / f".{s}.pt", cap)
        triples, negatives = split_arrays(name, infos[s].filename, torch_pickle.load(pt),
                                          held_out=s != "train")
        pt.unlink()
        np.save(staging / arrayfolder.split_file(s), triples)
        num_entities = max(num_entities, int(triples[:, [0, 2]].max(initial=-1)) + 1)
        num_relations = max(num_relations, int(triples[:, 1].max(initial=-1)) + 1)
        if negatives is not None:
          num_entities = max(num_entities, int(negatives.max(initial=-1)) + 1)
          np.save(staging / arrayfolder.negatives_file(s), negatives)
        del triples, negatives
      entities = _names(name, archive, "entity", num_entities, advice)
      relations = _names(name, archive, "relation", num_relations, advice)
  except (zipfile.BadZipFile, zlib.error, EOFError) as err:
    raise DataError(f"{name}: the archive cannot be read ({one_line(err)}); try again later, "
                    f"or {advice}") from None
  arrayfolder.write_names(staging / arrayfolder.ENTITIES, entities)
  arrayfolder.write_names(staging / arrayfolder.RELATIONS, relations)


"""Small files in the exact formats of the large benchmarks, for offline tests.

* :func:`torch_zip` / :func:`torch_legacy`: what ``torch.save`` writes for a dict of NumPy
  arrays (PyTorch is not installed here): the same pickle (protocol 2, torch's default) in a zip
  archive ``<stem>/data.pkl`` beside ``<stem>/version`` and ``<stem>/byteorder`` (PyTorch >= 1.6),
  or after the magic number, version and system information pickles (the legacy stream).  The
  arrays' reconstruct function is named ``numpy.core.multiarray`` as NumPy 1.x, which OGB's files
  were written with, names it.
* :func:`ogb_zip`: an archive laid out like OGB's ``wikikg-v2.zip``.
* :func:`wikidata5m_tar`: an archive laid out like ``wikidata5m_transductive.tar.gz``.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile

import numpy as np

from hale_jax.torch_pickle import LEGACY_MAGIC

ENTITY_IDS = [f"Q{100 + 7 * i}" for i in range(12)]
RELATION_IDS = ["P31", "P17", "P279"]


def numpy1_pickle(obj) -> bytes:
  """A protocol-2 pickle of ``obj`` naming NumPy's modules as NumPy 1.x does."""
  return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray",
                                               b"numpy.core.multiarray")


def torch_zip(obj, stem: str = "archive", payload: bytes | None = None) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{stem}/data.pkl", numpy1_pickle(obj) if payload is None else payload)
    z.writestr(f"{stem}/byteorder", "little")
    z.writestr(f"{stem}/version", "3\n")
  return buf.getvalue()


def torch_legacy(obj) -> bytes:
  info = {"protocol_version": 1001, "little_endian": True,
          "type_sizes": {"short": 2, "int": 4, "long": 4}}
  return b"".join([pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2),
                   pickle.dumps(info, protocol=2), numpy1_pickle(obj),
                   pickle.dumps([], protocol=2)])


def ogb_splits(rng: np.random.Generator, k: int = 6) -> dict[str, dict[str, np.ndarray]]:
  """Random OGB split dicts over 12 entities and 3 relations: int64 arrays, ``K = k``
  negatives per valid and test triple (some equal to the true answer, as in OGB's)."""
  sizes = {"train": 30, "valid": 5, "test": 7}
  out = {}
  for split, n in sizes.items():
    d = {"head": rng.integers(0, 12, n), "relation": rng.integers(0, 3, n),
         "tail": rng.integers(0, 12, n)}
    if split != "train":
      d["head_neg"] = rng.integers(0, 12, (n, k))
      d["tail_neg"] = rng.integers(0, 12, (n, k))
      d["tail_neg"][0, 0] = d["tail"][0]  # the true tail sampled as a negative: a tie
    out[split] = d
  out["train"]["head"][0] = 11  # every entity id is used
  return out


def mapping(header: str, names: list[str]) -> bytes:
  return gzip.compress(("\n".join([header] + [f"{i},{n}" for i, n in enumerate(names)])
                        + "\n").encode())


def ogb_zip(splits, with_mappings: bool = True, legacy: bool = False,
            drop: tuple[str, ...] = (), entity_ids: list[str] = ENTITY_IDS) -> bytes:
  """A ``wikikg-v2.zip``: ``wikikg-v2/split/time/*.pt``, the mapping files, and a raw file
  that is not needed; members named in ``drop`` are left out."""
  members = {f"split/time/{s}.pt": (torch_legacy(d) if legacy else torch_zip(d, s))
             for s, d in splits.items()}
  if with_mappings:
    members["mapping/nodeidx2entityid.csv.gz"] = mapping("node idx,entity id", entity_ids)
    members["mapping/reltype2relid.csv.gz"] = mapping("reltype,rel id", RELATION_IDS)
  members["raw/edge.csv.gz"] = gzip.compress(b"0,1\n")
  members["RELEASE_v2.txt"] = b"v2\n"
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    for name, data in members.items():
      if name not in drop:
        z.writestr(f"wikikg-v2/{name}", data)
  return buf.getvalue()


WIKIDATA5M_LINES = {
    "train": ["Q1\tP31\tQ5", "Q2\tP31\tQ5", "Q1\tP17\tQ30", "Q30\tP36\tQ61", "Q2\tP17\tQ30"],
    "valid": ["Q61\tP17\tQ30"],
    "test": ["Q2\tP36\tQ61"],
}


def wikidata5m_tar() -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for split, lines in WIKIDATA5M_LINES.items():
      data = ("\n".join(lines) + "\n").encode()
      info = tarfile.TarInfo(f"wikidata5m_transductive_{split}.txt")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buf.getvalue()

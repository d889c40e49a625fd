"""Reading a PyTorch ``.pt`` file of NumPy arrays without PyTorch, and without running its code.

OGB's link-prediction splits (``split/<kind>/{train,valid,test}.pt`` of an OGB archive, read by
``ogb.linkproppred.LinkPropPredDataset.get_edge_split`` with ``torch.load``) are dicts of NumPy
arrays saved with ``torch.save``: OGB's own wikikg2 example turns ``triples['head_neg'][i]``
into a tensor with ``torch.from_numpy`` (examples/linkproppred/wikikg2/dataloader.py), and
PyKEEN's OGB loader types them as ``numpy.ndarray`` (pykeen/datasets/ogb.py).  ``torch.save``
writes one of two containers around a pickle (protocol 2 by default):

* since PyTorch 1.6, a zip archive whose ``<name>/data.pkl`` is the pickle (tensors would be
  the other members, ``<name>/data/<key>``, referred to by persistent ids);
* before, the legacy stream: pickles of a magic number, the format version and system
  information, then the object, then the list of tensor storage keys and their bytes.

:func:`load` reads either.  Its unpickler resolves only the names a NumPy array's pickle needs
(``numpy.core.multiarray._reconstruct`` or ``numpy._core...``, ``numpy.ndarray``,
``numpy.dtype``, ``numpy...scalar``, and ``_codecs.encode`` for latin-1, which protocol 2 uses
for bytes); any other name, a tensor (a persistent id) or an array of Python objects is refused
with a :class:`~hale_jax.data.DataError`, so a hostile file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hale_jax.data import DataError, one_line

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickle of a legacy ``torch.save`` stream (torch.serialization.MAGIC_NUMBER)."""

_CORE = getattr(np, "_core", None) or np.core  # NumPy 2 moved numpy.core to numpy._core


def _latin1(text: str, encoding: str) -> bytes:
  """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it (latin-1 only)."""
  if encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
  return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _CORE.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _CORE.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _CORE.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _CORE.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class _NumpyOnly(pickle.Unpickler):
  """An unpickler that builds NumPy arrays, dicts, lists and plain values, nothing else."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(f"refers to {module}.{name}, which is not part of a NumPy "
                                   f"array") from None

  def persistent_load(self, pid: Any) -> Any:
    raise pickle.UnpicklingError("holds a PyTorch tensor, not NumPy arrays")


def _unpickle(stream) -> Any:
  return _NumpyOnly(stream).load()


def _from_zip(path: Path) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(names) != 1:
      raise pickle.UnpicklingError(f"a torch.save zip holds one data.pkl, this one {len(names)}")
    with archive.open(names[0]) as stream:
      return _unpickle(stream)


def _from_legacy(path: Path) -> Any:
  with open(path, "rb") as stream:
    if _unpickle(stream) != LEGACY_MAGIC:
      raise pickle.UnpicklingError("it starts with neither a zip archive nor torch's magic "
                                   "number")
    _unpickle(stream)  # the format version
    _unpickle(stream)  # system information: byte order, type sizes
    obj = _unpickle(stream)
    if _unpickle(stream):  # the keys of tensor storages
      raise pickle.UnpicklingError("holds PyTorch tensors, not NumPy arrays")
    return obj


def _check_arrays(obj: Any) -> None:
  """Refuses arrays of Python objects (their items could be anything)."""
  values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else [obj]
  for value in values:
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
      raise pickle.UnpicklingError("holds an array of Python objects")
    if isinstance(value, (dict, list)):
      _check_arrays(value)


def load(path: str | Path) -> Any:
  """The object a ``torch.save`` file holds, when it is made of NumPy arrays, dicts, lists and
  plain values (module docstring).

  Raises:
    DataError: not such a file (one line naming it and what was found).
  """
  path = Path(path)
  try:
    obj = _from_zip(path) if zipfile.is_zipfile(path) else _from_legacy(path)
    _check_arrays(obj)
    return obj
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          IndexError, KeyError, zipfile.BadZipFile, io.UnsupportedOperation,
          OSError) as err:
    raise DataError(f"{path}: not a torch.save file of NumPy arrays ({one_line(err)[:160]}); "
                    f"fetch the archive again") from None

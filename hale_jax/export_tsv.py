"""A run's parameters as a folder of ``name<TAB>values`` files, written whole before it replaces
anything (``python -m hale_jax.export --format=tsv``; :func:`hale_jax.inference.export_run`).

The folder is built next to its target, then renamed into place; an earlier export there is
renamed aside first and deleted once the new one is in place.  Each export holds a marker,
``export.json``; a folder without it may hold someone else's files and is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from hale_jax import runfiles
from hale_jax.data import KGData

MARKER = "export.json"


def check_target(output: Path) -> None:
  """Refuses an existing ``output`` that is not a folder written by an earlier TSV export."""
  if output.exists() and (not output.is_dir() or not (output / MARKER).is_file()):
    what = "is not a folder" if not output.is_dir() else f"holds no {MARKER}"
    raise FileExistsError(f"{output}: exists and {what}, so it is not an earlier TSV export "
                          f"(it may hold other files); choose another --output")


def _fmt(values: np.ndarray) -> str:
  return "\t".join(f"{float(v):.9g}" for v in np.ravel(values))  # round-trips float32


def _tables(data: KGData, rel_names: Sequence[str], params: dict[str, np.ndarray],
            c_r: np.ndarray) -> dict[str, tuple[Sequence[str], np.ndarray]]:
  """``{file name: (row names, table)}`` of a TSV export."""
  rows = {runfiles.ENTITIES: (data.entities, params["entity"]),
          "relation_scale.tsv": (rel_names, c_r)}
  for name, table in params.items():
    if name in ("bias_head", "bias_tail"):  # one value per entity
      rows[f"entities_{name}.tsv"] = (data.entities, table)
    elif name not in ("entity", "scale"):
      rows[f"relations_{name}.tsv"] = (rel_names, table)
  for fname, (names, table) in rows.items():
    if len(names) != len(table):
      raise ValueError(f"{fname}: {len(table)} rows for {len(names)} names")
  return rows


def write(output: Path, workdir: str | os.PathLike, data: KGData, rel_names: Sequence[str],
          params: dict[str, np.ndarray], c_r: np.ndarray) -> None:
  """Writes the export folder ``output`` (module docstring)."""
  rows = _tables(data, rel_names, params, c_r)
  staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
  old = output.with_name(f".{output.name}.old-{os.getpid()}")
  aside = False  # the earlier export is at ``old`` and must come back if the swap fails
  try:
    staging.mkdir()
    for fname, (names, table) in rows.items():
      with open(staging / fname, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{n}\t{_fmt(values)}\n" for n, values in zip(names, table))
    marker = {"workdir": str(Path(workdir).resolve()), "files": sorted(rows)}
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    if output.exists():
      os.replace(output, old)
      aside = True
    os.replace(staging, output)
    aside = False
    shutil.rmtree(old, ignore_errors=True)
  except OSError as err:
    if aside:
      os.replace(old, output)
    raise runfiles.OutputError(f"{output}: cannot be written ({runfiles.why(err)}); nothing "
                               f"was replaced") from None
  finally:
    shutil.rmtree(staging, ignore_errors=True)

"""Using a finished run: re-evaluate it, export its embeddings, answer queries by name.

Library code (no flags) over :mod:`hale_jax.trained_model`; ``hale_jax.evaluate``,
``hale_jax.export`` and ``hale_jax.predict`` are the command lines over it.  Everything works
from the run folder alone (``hale_jax.trained_model.load``).

Shapes: ``N`` entities, ``|R|`` relations, ``R2 = 2 |R|`` relation ids (reciprocal ``r + |R|``),
``d`` dimensions.  Distances are what ranking sorts (smaller is better).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

from hale_jax import cli, export_tsv, runfiles, trained_model
from hale_jax.data import DataError
from hale_jax.trained_model import Prediction, TrainedModel, relation_names

QUERY_BATCH = 1024  # queries answered at a time by a queries file
# Keys of an npz export that are not parameter tables.
EXPORT_META_KEYS = ("entity_names", "relation_names", "model", "dim", "c_r")


def export_run(workdir: str | os.PathLike, fmt: str, output: str | os.PathLike,
               overwrite: bool = False) -> Path:
  """Writes the run's best parameters with names; returns the path written.

  ``fmt="npz"``: one file holding ``entity [N, d]``, ``entity_names [N]`` and
  ``relation_names [R2]`` (str), every other parameter table under its own key (``scale [R2]``
  raw, ``translation``/``rotation``/``diagonal [R2, d]``, ``alpha [R2]``, ...), ``c_r [R2]``
  (``softplus(scale)``), and 0-d ``model`` (str) and ``dim`` (int).

  ``fmt="tsv"``: a folder holding ``entities.tsv`` (``name<TAB>v1<TAB>...<TAB>vd``),
  ``relations_<table>.tsv`` for each relation table (``name<TAB>values``, ``R2`` lines),
  ``relation_scale.tsv`` (``name<TAB>c_r``), for runs with KGEmb's entity biases
  ``entities_bias_tail.tsv`` and (samneg, advneg) ``entities_bias_head.tsv`` (``name<TAB>b``,
  ``N`` lines), and ``export.json`` naming the run and the files.

  Both are written whole before they replace anything.  An existing ``output`` is refused
  (FileExistsError) unless ``overwrite``; so is, always, a run's own file or folder, and a
  folder that is not an earlier TSV export (it may hold someone else's files).
  """
  if fmt not in ("npz", "tsv"):
    raise ValueError(f"unknown export format {fmt!r}; choose npz or tsv")
  output = Path(output)
  cli.check_output(output, overwrite)
  if fmt == "tsv":
    export_tsv.check_target(output)
  model = trained_model.load(workdir, cli.warn)
  data = model.data
  params = {k: np.asarray(v) for k, v in model.params.items()}
  c_r = np.asarray(jax.nn.softplus(params["scale"]))
  rel_names = relation_names(data)
  output.parent.mkdir(parents=True, exist_ok=True)
  if fmt == "tsv":
    export_tsv.write(output, workdir, data, rel_names, params, c_r)
    return output
  arrays = dict(params)
  arrays.update(entity_names=np.array(data.entities, dtype=str),
                relation_names=np.array(rel_names, dtype=str), c_r=c_r,
                model=np.array(model.run["config"]["model"]), dim=np.array(params["entity"].shape[1]))
  runfiles.write_npz(output, arrays)
  return output


def parse_query_lines(path: str | os.PathLike) -> list[tuple[int, tuple[str, str, str]]]:
  """``(line number, query)`` of a queries file (see :func:`parse_queries`)."""
  path = Path(path)
  try:
    text = path.read_text(encoding="utf-8-sig")
  except (OSError, UnicodeDecodeError) as err:
    raise DataError(f"{path}: cannot be read ({err}); give a UTF-8 file of queries") from None
  queries = []
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip() or line.startswith("#"):
      continue
    fields = line.split("\t")
    if len(fields) != 3 or (fields[0] == "?") == (fields[2] == "?") or "?" == fields[1]:
      raise DataError(f"{path}:{number}: expected head<TAB>relation<TAB>? or "
                      f"?<TAB>relation<TAB>tail (exactly one '?', in the head or tail slot), "
                      f"got {line!r}")
    queries.append((number, (fields[0], fields[1], fields[2])))
  return queries


def check_names(model: TrainedModel, numbered: list[tuple[int, tuple[str, str, str]]],
                path: str | os.PathLike) -> None:
  """Raises a :class:`DataError` naming ``path:line`` for the first query whose entity or
  relation the model does not know."""
  for number, (head, relation, tail) in numbered:
    try:
      model.relation_id(relation)
      model.entity_id(tail if head == "?" else head)
    except DataError as err:
      raise DataError(f"{path}:{number}: {err}") from None


def parse_queries(path: str | os.PathLike) -> list[tuple[str, str, str]]:
  """Queries from a file of ``head<TAB>relation<TAB>?`` and ``?<TAB>relation<TAB>tail`` lines
  (``?`` marks the slot to predict); blank lines and lines starting with ``#`` are skipped.

  Raises:
    DataError: a malformed line, with its file and line number.
  """
  return [q for _, q in parse_query_lines(path)]


def answer_queries(model: TrainedModel, queries: list[tuple[str, str, str]], k: int = 10,
                   filtered: bool = True) -> list[list[Prediction]]:
  """The ``k`` best answers of each query of :func:`parse_queries`, in the queries' order."""
  tails = [i for i, q in enumerate(queries) if q[2] == "?"]
  heads = [i for i, q in enumerate(queries) if q[0] == "?"]
  out: list[list[Prediction]] = [[] for _ in queries]
  for i, answers in zip(tails, model.predict_tails([queries[i][0] for i in tails],
                                                   [queries[i][1] for i in tails], k, filtered)):
    out[i] = answers
  for i, answers in zip(heads, model.predict_heads([queries[i][1] for i in heads],
                                                   [queries[i][2] for i in heads], k, filtered)):
    out[i] = answers
  return out



_REMOVED = {
    "load_run": "hale_jax.load(workdir), whose .run, .data and .params are the three values",
    "evaluate_run": "hale_jax.load(workdir).evaluate(split, chunk, breakdown)",
    "run_activation": "hale_jax.load(workdir).activation",
    "top_k": "hale_jax.load(workdir).predict_tails(head, relation, k, filtered) or "
             ".predict_heads(relation, tail, k, filtered)",
}


def __getattr__(name: str):
  """Names this module no longer has: an AttributeError naming what replaced them."""
  if name in _REMOVED:
    raise AttributeError(f"hale_jax.inference.{name} was removed; use {_REMOVED[name]}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

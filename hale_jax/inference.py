"""Using a finished run: re-evaluate it, export its embeddings, answer queries by name.

Library code (no flags) over :mod:`hale_jax.trained`; ``hale_jax.evaluate``,
``hale_jax.export`` and ``hale_jax.predict`` are the command lines over it.  Everything works
from the run folder alone (``hale_jax.trained.load``).

Shapes: ``N`` entities, ``|R|`` relations, ``R2 = 2 |R|`` relation ids (reciprocal ``r + |R|``),
``d`` dimensions.  Distances are what ranking sorts (smaller is better).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.typing import ArrayLike

from hale_jax import activations, cli, trained
from hale_jax.data import DataError, KGData
from hale_jax.trained import Prediction, TrainedModel, relation_names  # noqa: F401

Array = jax.Array
# Keys of an npz export that are not parameter tables.
EXPORT_META_KEYS = ("entity_names", "relation_names", "model", "dim", "c_r")


def load_run(workdir: str | os.PathLike, allow_changed_data: bool = False
             ) -> tuple[dict[str, Any], KGData, dict[str, Array]]:
  """``(run, data, params)`` of a run folder: ``run.json``, the run's data, and its best-valid
  parameters (see :func:`hale_jax.trained.load` for the errors)."""
  model = trained.load(workdir, allow_changed_data)
  return model.run, model.data, model.params


def evaluate_run(workdir: str | os.PathLike, split: str = "test", chunk: int = 256,
                 allow_changed_data: bool = False, breakdown: str | None = None
                 ) -> dict[str, Any]:
  """Filtered ranking of ``split`` with the run's best parameters: ``{tie rule: metrics}``
  for the realistic, pessimistic and optimistic rules (as ``results.json["metrics"]``), or
  per group with ``breakdown`` (``TrainedModel.evaluate``)."""
  if split not in ("valid", "test"):
    raise ValueError(f"unknown split {split!r}; choose valid or test")
  if chunk <= 0:
    raise ValueError(f"chunk must be positive, got {chunk}")
  return trained.load(workdir, allow_changed_data).evaluate(split, chunk, breakdown)


def run_activation(run: dict[str, Any]) -> Callable[[ArrayLike], Array]:
  """The activation ``h`` of a run spec's config (ranking needs it when the run learned
  entity biases; ``models.ranking_distances``)."""
  cfg = run["config"]
  return activations.get_activation(cfg.get("activation", "hanon"), cfg.get("beta"),
                                    cfg.get("gamma", 10.0))


def _fmt(values: np.ndarray) -> str:
  return "\t".join(f"{float(v):.9g}" for v in np.ravel(values))  # round-trips float32


def export_run(workdir: str | os.PathLike, fmt: str, output: str | os.PathLike,
               overwrite: bool = False, allow_changed_data: bool = False) -> Path:
  """Writes the run's best parameters with names; returns the path written.

  ``fmt="npz"``: one file holding ``entity [N, d]``, ``entity_names [N]`` and
  ``relation_names [R2]`` (str), every other parameter table under its own key (``scale [R2]``
  raw, ``translation``/``rotation``/``diagonal [R2, d]``, ``alpha [R2]``, ...), ``c_r [R2]``
  (``softplus(scale)``), and 0-d ``model`` (str) and ``dim`` (int).

  ``fmt="tsv"``: a folder holding ``entities.tsv`` (``name<TAB>v1<TAB>...<TAB>vd``),
  ``relations_<table>.tsv`` for each relation table (``name<TAB>values``, ``R2`` lines),
  ``relation_scale.tsv`` (``name<TAB>c_r``) and, for runs with KGEmb's entity biases,
  ``entities_bias_tail.tsv`` and (samneg, advneg) ``entities_bias_head.tsv`` (``name<TAB>b``,
  ``N`` lines).

  An existing ``output`` is refused (FileExistsError) unless ``overwrite``.
  """
  if fmt not in ("npz", "tsv"):
    raise ValueError(f"unknown export format {fmt!r}; choose npz or tsv")
  output = Path(output)
  cli.check_output(output, overwrite)
  run, data, params = load_run(workdir, allow_changed_data)
  params = {k: np.asarray(v) for k, v in params.items()}
  c_r = np.asarray(jax.nn.softplus(params["scale"]))
  rel_names = relation_names(data)
  if fmt == "npz":
    arrays = dict(params)
    arrays.update(entity_names=np.array(data.entities, dtype=str),
                  relation_names=np.array(rel_names, dtype=str), c_r=c_r,
                  model=np.array(run["config"]["model"]),
                  dim=np.array(params["entity"].shape[1]))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: numpy appends no ".npz" to the name
      np.savez(f, **arrays)
    os.replace(tmp, output)
    return output

  if output.exists() and not output.is_dir():
    raise FileExistsError(f"{output}: exists and is not a folder; choose another --output")
  output.mkdir(parents=True, exist_ok=True)
  for old in [*output.glob("relations_*.tsv"), *output.glob("entities_*.tsv")]:
    old.unlink()  # stale tables of an overwritten export
  rows = {"entities.tsv": (data.entities, params["entity"]),
          "relation_scale.tsv": (rel_names, c_r)}
  for name, table in params.items():
    if name in ("bias_head", "bias_tail"):  # one value per entity
      rows[f"entities_{name}.tsv"] = (data.entities, table)
    elif name not in ("entity", "scale"):
      rows[f"relations_{name}.tsv"] = (rel_names, table)
  for fname, (names, table) in rows.items():
    if len(names) != len(table):
      raise ValueError(f"{fname}: {len(table)} rows for {len(names)} names")
    with open(output / fname, "w", encoding="utf-8") as f:
      for n, values in zip(names, table):
        f.write(f"{n}\t{_fmt(values)}\n")
  return output


def parse_queries(path: str | os.PathLike) -> list[tuple[str, str, str]]:
  """Queries from a file of ``head<TAB>relation<TAB>?`` and ``?<TAB>relation<TAB>tail`` lines
  (``?`` marks the slot to predict); blank lines and lines starting with ``#`` are skipped.

  Raises:
    DataError: a malformed line, with its file and line number.
  """
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
    queries.append((fields[0], fields[1], fields[2]))
  return queries


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


def top_k(params: dict[str, Array], model: str, data: KGData, *, head: str | None = None,
          relation: str, tail: str | None = None, k: int = 10, filtered: bool = True,
          activation: Callable[[ArrayLike], Array] | None = None) -> list[tuple[str, float]]:
  """The ``k`` entities closest to one query given by names, closest first: give exactly one
  of ``head`` (rank tails of ``(head, relation, ?)``) or ``tail`` (rank heads of
  ``(?, relation, tail)``).  Returns ``(entity name, distance)`` pairs."""
  if (head is None) == (tail is None):
    raise ValueError("give exactly one of head (to rank tails) and tail (to rank heads)")
  run = {"config": {"model": model}}
  m = TrainedModel(Path("."), run, data, params, {"entity": {}, "relation": {}})
  if activation is not None:
    m.activation = activation
  answers = (m.predict_tails(head, relation, k, filtered) if head is not None
             else m.predict_heads(relation, tail, k, filtered))[0]
  return [(a.name, a.distance) for a in answers]

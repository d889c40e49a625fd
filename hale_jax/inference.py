"""Using a finished run: reload it, re-evaluate it, export its embeddings, rank answers by name.

Library code (no flags); ``hale_jax.evaluate``, ``hale_jax.export`` and ``hale_jax.predict`` are
the command lines over it.  A run folder (``--workdir`` of :mod:`hale_jax.launch`) holds
``run.json`` (config, data spec, vocabulary hash), the best-valid parameters
(``best_params.npz``, or the ``best/`` checkpoint while a run is unfinished) and
``results.json``.  :func:`load_run` reloads the data the run was trained on from its data spec
and refuses it if its vocabulary (the names behind the ids) is not the one trained on.

Shapes: ``N`` entities, ``|R|`` relations, ``R2 = 2 |R|`` relation ids (reciprocal ``r + |R|``),
``d`` dimensions.  Distances are the squared distances used in ranking (smaller is better).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hale_jax import activations, checkpoints, datasets, models, rundir
from hale_jax.data import DataError, FilterIndex, KGData, one_line
from hale_jax.evaluation import Evaluator, candidate_distances

Array = jax.Array
REVERSE_SUFFIX = "_reverse"
# Keys of an npz export that are not parameter tables.
EXPORT_META_KEYS = ("entity_names", "relation_names", "model", "dim", "c_r")


def load_run(workdir: str | os.PathLike) -> tuple[dict[str, Any], KGData, dict[str, Array]]:
  """Reloads a run: ``(run, data, params)``.

  ``run`` is ``run.json`` (``config``, ``data`` spec, ``dataset``, ``vocab_sha256``); ``data`` the
  :class:`KGData` from the spec; ``params`` the best-valid parameters as device arrays
  (``entity [N, d]``, ``scale [R2]`` and the model's relation tables ``[R2, d]`` / ``[R2]``).

  Raises:
    FileNotFoundError: no such folder, no ``run.json``, or no saved parameters.
    DataError: ``run.json`` unreadable or incomplete, the data cannot be loaded, or the data's
      vocabulary differs from the one the run was trained on.
  """
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir}: no such folder; pass the --workdir of a hale_jax run")
  path = workdir / rundir.RUN_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing; is {workdir} the --workdir of a hale_jax run "
                            f"(runs write run.json when they start)?")
  try:
    run = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, ValueError) as err:
    raise DataError(f"{path}: cannot be read ({one_line(err)}); it is not a hale_jax run "
                    f"spec") from None
  missing = [k for k in ("config", "data", "vocab_sha256") if not isinstance(run, dict)
             or k not in run]
  if missing or "model" not in run["config"]:
    raise DataError(f"{path}: lacks {', '.join(missing) or 'config.model'}; it is not a "
                    f"complete hale_jax run spec")
  if not isinstance(run["data"], dict) or run["data"].get("kind") == "unknown":
    raise DataError(f"{path}: does not say how to reload the run's data (data {run['data']}); "
                    f"runs started through hale_jax.launch record it")
  data = datasets.load_data(run["data"])
  got = rundir.vocabulary_hash(data)
  if got != run["vocab_sha256"]:
    raise DataError(f"{workdir}: the data {run['data']} has another vocabulary than the run was "
                    f"trained on (sha256 {got[:12]}... vs {str(run['vocab_sha256'])[:12]}...); "
                    f"the dataset files changed since training, so ids would mean other names")
  params = {k: jnp.asarray(v) for k, v in checkpoints.load_best_params(workdir).items()}
  return run, data, params


def evaluate_run(workdir: str | os.PathLike, split: str = "test", chunk: int = 256
                 ) -> dict[str, dict[str, float]]:
  """Filtered ranking of ``split`` with the run's best parameters.

  Returns ``{tie_mode: {"mr", "mrr", "hits@1", "hits@3", "hits@10"}}`` for the tie modes
  realistic, pessimistic and optimistic (as in ``results.json["metrics"][split]``).
  """
  if split not in ("valid", "test"):
    raise ValueError(f"unknown split {split!r}; choose valid or test")
  if chunk <= 0:
    raise ValueError(f"chunk must be positive, got {chunk}")
  run, data, params = load_run(workdir)
  return Evaluator(data, split, run["config"]["model"], chunk,
                   activation=run_activation(run))(params)


def run_activation(run: dict[str, Any]) -> Callable[[ArrayLike], Array]:
  """The activation ``h`` of a run spec's config (ranking needs it when the run learned
  entity biases; ``models.ranking_distances``)."""
  cfg = run["config"]
  return activations.get_activation(cfg.get("activation", "hanon"), cfg.get("beta"),
                                    cfg.get("gamma", 10.0))


def relation_names(data: KGData) -> list[str]:
  """The ``R2`` names of the relation ids: ``|R|`` names, then ``<name>_reverse`` for each."""
  return list(data.relations) + [n + REVERSE_SUFFIX for n in data.relations]


def _fmt(values: np.ndarray) -> str:
  return "\t".join(f"{float(v):.9g}" for v in np.ravel(values))  # round-trips float32


def _check_output(output: Path, overwrite: bool) -> None:
  if output.exists() and not overwrite:
    raise FileExistsError(f"{output}: already exists; choose another --output or pass "
                          f"--overwrite to replace it")


def export_run(workdir: str | os.PathLike, fmt: str, output: str | os.PathLike,
               overwrite: bool = False) -> Path:
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
  _check_output(output, overwrite)
  run, data, params = load_run(workdir)
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


_candidate_distances = jax.jit(candidate_distances, static_argnames=("model", "activation"))


def _lookup(kind: str, name: str, names: Sequence[str]) -> int:
  ids = {n: i for i, n in enumerate(names)}
  if name in ids:
    return ids[name]
  close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.5)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  raise DataError(f"unknown {kind} {name!r} ({len(names)} {kind}s known){hint}")


def top_k(params: dict[str, Array], model: str, data: KGData, *, head: str | None = None,
          relation: str, tail: str | None = None, k: int = 10, filtered: bool = True,
          index: FilterIndex | None = None,
          activation: Callable[[ArrayLike], Array] | None = None) -> list[tuple[str, float]]:
  """The ``k`` entities closest to a query given by names, closest first.

  Give exactly one of ``head`` (rank tails of ``(head, relation, ?)`` with relation id ``r``)
  or ``tail`` (rank heads of ``(?, relation, tail)``: the query ``(tail, r + |R|, ?)``).
  ``relation`` is a relation name, or ``<name>_reverse`` for its reciprocal.  With
  ``filtered``, entities already known to answer the query in train, valid or test are left
  out (``index`` may pass a prebuilt :class:`FilterIndex`).

  ``activation`` is the run's ``h`` (:func:`run_activation`); it matters only for runs with
  entity biases, whose distance is ``h(c_r d^2) - b_t`` (``models.ranking_distances``).

  Returns:
    Up to ``k`` pairs ``(entity name, squared distance)``, distances ascending.

  Raises:
    DataError: an unknown name (the message suggests a close one).
    ValueError: not exactly one of head and tail, or ``k < 1``.
  """
  if (head is None) == (tail is None):
    raise ValueError("give exactly one of head (to rank tails) and tail (to rank heads)")
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  nr = data.num_relations
  r = _lookup("relation", relation, relation_names(data))
  if head is None:
    entity = _lookup("entity", tail, data.entities)
    r = (r + nr) % (2 * nr)
  else:
    entity = _lookup("entity", head, data.entities)
  distances = np.asarray(_candidate_distances(
      params, models.canonical_model(model), jnp.array([entity], jnp.int32),
      jnp.array([r], jnp.int32), activation=activation))[0]
  candidates = np.ones(data.num_entities, bool)
  if filtered:
    _, known = (index or FilterIndex(data)).answers(np.array([entity]), np.array([r]))
    candidates[known] = False
  ids = np.flatnonzero(candidates)
  order = ids[np.argsort(distances[ids], kind="stable")[:k]]
  return [(data.entities[i], float(distances[i])) for i in order]


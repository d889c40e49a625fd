"""A trained model that travels on its own: ``model = hale_jax.load(workdir)``.

A run folder holds everything a trained model needs, so no dataset folder, ``HALE_DATA_DIR``
or network is needed to use it, and nothing outside the folder is read: ``run.json`` (the
config), ``entities.tsv`` and ``relations.tsv`` (the vocabularies), ``triples/`` (the train,
valid and test triples as int32 ids, for filtering and evaluation; ``negatives/``, the given
negatives of a dataset that ships them, for the OGB protocol), the best-valid parameters
(``best_params.npz``, or the ``best/`` checkpoint while the run is unfinished) and, when the
dataset had them, ``entity_labels.tsv`` / ``relation_labels.tsv`` (``name<TAB>label``).  Each
is validated as it is read (:mod:`hale_jax.rundata`).

:class:`TrainedModel` answers in names and in batches: :meth:`~TrainedModel.predict_tails`,
:meth:`~TrainedModel.predict_heads`, :meth:`~TrainedModel.score`,
:meth:`~TrainedModel.embedding`, :meth:`~TrainedModel.evaluate`.  Names may also be given by
their label where the label is unambiguous.  Head prediction ``(?, r, t)`` is the tail
prediction of the reciprocal query ``(t, r^-1, ?)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hale_jax import (activations, models, objective, ogb_eval, data_file, rundata, rundir,
                      runfiles, topk)
from hale_jax import config as config_lib
from hale_jax.config import Config
from hale_jax.data import DataError, FilterIndex, KGData, one_line
from hale_jax.ranking import candidate_distances

_QUERY_CHUNK = 256
_SCORE_CHUNK = 1 << 16  # scores computed at a time (padded to a power of two up to this)
_distances = jax.jit(candidate_distances, static_argnames=("model", "activation"))


class Prediction(NamedTuple):
  """One ranked answer: the entity's name, its label (or None), its ``score`` (higher is
  better: :meth:`TrainedModel.score` of the triple as asked, ``(entity, relation, answer)``,
  a head query's being ``(tail, reciprocal relation, answer)``), and ``distance``, what
  ranking sorts (smaller is better: the squared distance; ``h(c_r d^2) - b_t`` for runs with
  biases)."""
  name: str
  label: str | None
  distance: float
  score: float = math.nan


def reciprocal_names(relations: Sequence[str]) -> list[str]:
  """Names of the reciprocal relation ids ``r + |R|``: ``<name>_reverse``, or, if a real
  relation already has such a name, the first of ``_inverse``, ``^-1``, ``_reciprocal``,
  ``_reciprocal2`` ... that no real name can be confused with."""
  real = set(relations)
  suffixes = ["_reverse", "_inverse", "^-1", "_reciprocal"]
  suffixes += [f"_reciprocal{i}" for i in range(2, len(real) + 3)]
  for suffix in suffixes:
    names = [n + suffix for n in relations]
    if not real & set(names):
      return names
  raise DataError("no suffix gives reciprocal relation names distinct from the real ones")


def relation_names(data: KGData) -> list[str]:
  """The ``2 |R|`` names of the relation ids: the relations, then their reciprocals."""
  return list(data.relations) + reciprocal_names(data.relations)


def _config(run: dict[str, Any], path: Path) -> Config:
  """The run's config, checked (fields this version no longer has are ignored)."""
  known = config_lib.field_owners()
  try:
    return Config.make(**{k: v for k, v in run["config"].items() if k in known})
  except (TypeError, ValueError) as err:
    raise DataError(f"{path}: its config is not valid ({one_line(err)}); it is not a complete "
                    f"hale_jax run spec") from None


def expected_shapes(config: Config, data: KGData) -> dict[str, tuple[int, ...]]:
  """The parameter tables (name -> shape) a run of ``config`` on ``data`` trains."""
  m, o = config.model, config.objective
  shapes = jax.eval_shape(lambda: models.init_params(
      m.model, jax.random.PRNGKey(0), data.num_entities, data.num_relations, m.dim,
      m.init_scale, m.dtype, entity_bias=objective.bias_tables(o.loss, o.bias),
      rotation_init=m.rotation_init))
  return {k: tuple(v.shape) for k, v in shapes.items()}


def load(workdir: str | os.PathLike, log: Callable[[str], None] = print) -> "TrainedModel":
  """The trained model of a run folder, from the folder alone (see the module docstring):
  nothing outside it is read, no dataset is looked up, nothing is downloaded.

  Raises:
    FileNotFoundError: no such folder, no ``run.json``, or no saved parameters.
    DataError: a damaged or incomplete run folder (one line naming the file).
  """
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir}: no such folder; pass the --workdir of a hale_jax run")
  try:
    run = rundir.read_run(workdir)
  except rundir.RunFolderError as err:
    raise DataError(str(err)) from None
  path = workdir / runfiles.RUN
  if run is None:
    raise FileNotFoundError(f"{path}: missing; is {workdir} the --workdir of a hale_jax run "
                            f"(runs write run.json when they start)?")
  config = _config(run, path)
  data = rundata.read_data(workdir, str(run.get("dataset", workdir.name)))
  if config.budget.eval_protocol == "ogb" and data.negatives is None:
    raise DataError(f"{workdir / runfiles.NEGATIVES}: missing, but the run ranks by the OGB "
                    f"protocol (its given negatives); the run folder is damaged: restore it "
                    f"from a copy")
  if rundir.vocabulary_hash(data) != run.get("vocab_sha256"):
    raise DataError(f"{workdir}: the vocabularies do not match the run's ({path}'s "
                    f"vocab_sha256); the run folder was changed after training")
  params = rundata.load_params(workdir, expected_shapes(config, data), log)
  labels = rundata.read_labels(workdir, log)
  return TrainedModel(workdir, run, data, {k: jnp.asarray(v) for k, v in params.items()}, labels,
                      log)


class TrainedModel:
  """A run's best-valid parameters with its vocabularies, known triples and labels."""

  def __init__(self, workdir: Path, run: dict[str, Any], data: KGData,
               params: dict[str, jax.Array], labels: dict[str, dict[str, str]],
               log: Callable[[str], None] = print):
    self.workdir, self.run, self.data, self.params = workdir, run, data, params
    self.labels, self.log = labels, log  # log: warnings and the progress of long rankings
    cfg = run["config"]
    self.model = models.canonical_model(cfg["model"])
    self.activation = activations.get_activation(cfg.get("activation", "hanon"),
                                                 cfg.get("beta"), cfg.get("gamma", 10.0))
    self.relation_names = relation_names(data)
    self._entity_ids = {n: i for i, n in enumerate(data.entities)}
    self._relation_ids = {n: i for i, n in enumerate(self.relation_names)}
    self._index: FilterIndex | None = None
    self._evaluators: dict[tuple[str, int, str], Any] = {}
    self.protocol = cfg.get("eval_protocol", "filtered")  # runs from before the option: filtered

  @property
  def entities(self) -> tuple[str, ...]:
    return self.data.entities

  @property
  def relations(self) -> tuple[str, ...]:
    return self.data.relations

  def arrays(self) -> dict[str, np.ndarray]:
    """The raw parameter tables as NumPy arrays (``hale_jax.models`` layout)."""
    return {k: np.asarray(v) for k, v in self.params.items()}

  def entity_id(self, name: str) -> int:
    """The id of an entity given by name, or by a label that only one entity has."""
    return self._lookup("entity", name, self._entity_ids, self.data.entities)

  def relation_id(self, name: str) -> int:
    """The id (``0 .. 2|R|-1``) of a relation or reciprocal name, or an unambiguous label."""
    return self._lookup("relation", name, self._relation_ids, self.relation_names)

  def _lookup(self, kind: str, name: str, ids: dict[str, int], names: Sequence[str]) -> int:
    if name in ids:
      return ids[name]
    by_label = [n for n, label in self.labels[kind].items() if label == name and n in ids]
    if len(by_label) == 1:
      return ids[by_label[0]]
    listing = runfiles.ENTITIES if kind == "entity" else runfiles.RELATIONS
    if len(by_label) > 1:
      raise DataError(f"the {kind} label {name!r} is ambiguous ({', '.join(by_label[:5])}); "
                      f"give the name instead")
    close = difflib.get_close_matches(name, list(names) + list(self.labels[kind].values()),
                                      n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise DataError(f"unknown {kind} {name!r} ({len(names)} known, listed in "
                    f"{self.workdir / listing}){hint}")

  def label(self, kind: str, name: str) -> str | None:
    return self.labels[kind].get(name)

  def _reciprocal(self, relation_id: int) -> int:
    nr = self.data.num_relations
    return (relation_id + nr) % (2 * nr)

  def _names(self, items: str | Sequence[str]) -> list[str]:
    return [items] if isinstance(items, str) else list(items)

  def predict_tails(self, heads: str | Sequence[str], relations: str | Sequence[str],
                    k: int = 10, filtered: bool = True) -> list[list[Prediction]]:
    """The ``k`` best tails of each query ``(head, relation, ?)``, best first.  With
    ``filtered`` the answers already known from train, valid or test are left out."""
    heads, relations = self._names(heads), self._names(relations)
    if len(heads) != len(relations):
      raise ValueError(f"{len(heads)} heads for {len(relations)} relations")
    ids = [(self.entity_id(h), self.relation_id(r)) for h, r in zip(heads, relations)]
    return self._top_k(ids, k, filtered)

  def predict_heads(self, relations: str | Sequence[str], tails: str | Sequence[str],
                    k: int = 10, filtered: bool = True) -> list[list[Prediction]]:
    """The ``k`` best heads of each query ``(?, relation, tail)``, best first."""
    relations, tails = self._names(relations), self._names(tails)
    if len(tails) != len(relations):
      raise ValueError(f"{len(tails)} tails for {len(relations)} relations")
    ids = [(self.entity_id(t), self._reciprocal(self.relation_id(r)))
           for r, t in zip(relations, tails)]
    return self._top_k(ids, k, filtered)

  def query_distances(self, entity_ids: np.ndarray, relation_ids: np.ndarray) -> np.ndarray:
    """What ranking sorts, ``[Q, N]``, for the queries ``(entity, relation id, ?)``: the dense
    block, ``4 Q N`` bytes in float32 (a million entities: 4 MB a query).  The predictions and
    :meth:`score` never build it (:mod:`hale_jax.topk`)."""
    out = []
    for start in range(0, len(entity_ids), _QUERY_CHUNK):
      e = np.asarray(entity_ids[start:start + _QUERY_CHUNK], np.int32)
      r = np.asarray(relation_ids[start:start + _QUERY_CHUNK], np.int32)
      pad = _QUERY_CHUNK - len(e)  # one compiled size for every chunk
      d = _distances(self.params, self.model, jnp.asarray(np.pad(e, (0, pad))),
                     jnp.asarray(np.pad(r, (0, pad))), activation=self.activation)
      out.append(np.asarray(d)[:len(e)])
    return np.concatenate(out) if out else np.zeros((0, self.data.num_entities), np.float32)

  def _top_k(self, ids: list[tuple[int, int]], k: int, filtered: bool) -> list[list[Prediction]]:
    """The ``k`` best of each query, in bounded memory (:func:`hale_jax.topk.top_k`); with
    ``filtered`` the known answers (distance ``+inf`` there) and NaN distances are left out."""
    if k < 1:
      raise ValueError(f"k must be at least 1, got {k}")
    ents = np.array([e for e, _ in ids], np.int64)
    rels = np.array([r for _, r in ids], np.int64)
    best, distances = topk.top_k(self.params, self.model, ents, rels, k,
                                 self.filter_index() if filtered else None, self.activation)
    names = self.data.entities
    scores = self._scores(np.repeat(ents, best.shape[1]), np.repeat(rels, best.shape[1]),
                          np.asarray(distances, np.float64).reshape(-1)).reshape(best.shape)
    results = []
    for row_ids, row, row_scores in zip(best.tolist(), distances.tolist(), scores.tolist()):
      results.append([Prediction(names[i], self.label("entity", names[i]), d, s)
                      for i, d, s in zip(row_ids, row, row_scores)
                      if not filtered or math.isfinite(d)])
    return results

  def _scores(self, heads: np.ndarray, relations: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:meth:`score` from what ranking sorts (``d``) of triples ``(heads, relations, .)``."""
    if models.has_entity_bias(self.params):  # d is h(c_r d^2) - b_t
      head_bias = np.asarray(self.params.get("bias_head", np.zeros(self.data.num_entities)))
      return head_bias[heads] - d
    out = np.zeros(len(d), np.float32)
    size = min(_SCORE_CHUNK, 1 << max(4, (len(d) - 1).bit_length()))
    for lo in range(0, len(d), size):  # padded: a few array sizes, each compiled once
      part = slice(lo, min(lo + size, len(d)))
      rels, dist = np.zeros(size, np.int32), np.zeros(size, np.float32)
      rels[:part.stop - lo], dist[:part.stop - lo] = relations[part], d[part]
      scale = np.asarray(models.relation_scale(self.params, jnp.asarray(rels)))
      with np.errstate(invalid="ignore"):  # +inf distances of filtered answers
        out[part] = -np.asarray(self.activation(jnp.asarray(scale * dist)))[:part.stop - lo]
    return out

  def filter_index(self) -> FilterIndex:
    if self._index is None:
      self._index = FilterIndex(self.data)
    return self._index

  def score(self, triples: Sequence[tuple[str, str, str]]) -> np.ndarray:
    """The model's score of each ``(head, relation, tail)``, higher is more plausible:
    ``-h(c_r ||Phi(e_h, r) - e_t||^2)`` (plus the learned biases of runs that have them).
    Computed from the triple's rows alone (:func:`hale_jax.topk.pair_distances`), with the
    squared distance that ranking uses."""
    ids = np.array([(self.entity_id(h), self.relation_id(r), self.entity_id(t))
                    for h, r, t in triples], np.int64).reshape(-1, 3)
    d = topk.pair_distances(self.params, self.model, ids, self.activation)
    return self._scores(ids[:, 0], ids[:, 1], np.asarray(d))

  def embedding(self, names: str | Sequence[str]) -> np.ndarray:
    """The entity vectors ``[n, d]`` of the named entities."""
    ids = [self.entity_id(n) for n in self._names(names)]
    return np.asarray(self.params["entity"])[ids]

  def triple_ids(self, triples: Any) -> np.ndarray:
    """``[T, 3]`` int64 ids of ``(head, relation, tail)`` triples given as names (or unique
    labels) or ids, or as the path of a file of them (one ``head<TAB>relation<TAB>tail`` a
    line; ``.csv`` comma-separated).  A reciprocal relation ``(h, r^-1, t)`` becomes
    ``(t, r, h)``.  Raises ValueError (a :class:`DataError`) for an unknown name or id, with
    ``file:line`` for a file."""
    if isinstance(triples, (str, os.PathLike)):
      path = Path(triples)
      if not path.is_file():
        raise DataError(f"{path}: no such file; give 'valid', 'test', an array of (head, "
                        f"relation, tail) triples, or a file of them")
      numbered = data_file.read_numbered_triples(path)
      where = [f"{path}:{number}" for number, _ in numbered]
      rows = np.array([t for _, t in numbered], dtype=object).reshape(-1, 3)
    else:
      rows = np.asarray(triples)
      if rows.ndim != 2 or rows.shape[1] != 3 or not len(rows):
        raise ValueError(f"expected triples as [T, 3] (head, relation, tail) rows, T > 0; "
                         f"got an array of shape {rows.shape}")
      where = [f"triple {i} {tuple(row)}" for i, row in enumerate(rows.tolist())]
    if rows.dtype.kind in "iu":
      ids = self._check_ids(rows.astype(np.int64), where)
    else:
      ids = np.empty(rows.shape, np.int64)
      for i, (h, r, t) in enumerate(rows.tolist()):
        try:
          ids[i] = (self.entity_id(str(h)), self.relation_id(str(r)), self.entity_id(str(t)))
        except DataError as err:
          raise DataError(f"{where[i]}: {err}") from None
    nr = self.data.num_relations
    back = ids[:, 1] >= nr  # reciprocal names: the triple the other way round
    ids[back] = np.stack([ids[back, 2], ids[back, 1] - nr, ids[back, 0]], axis=1)
    return ids

  def _check_ids(self, ids: np.ndarray, where: list[str]) -> np.ndarray:
    """Integer triples whose ids are in range (relations ``0 .. 2|R|-1``)."""
    n, r2 = self.data.num_entities, 2 * self.data.num_relations
    bad = (ids[:, [0, 2]] < 0).any(1) | (ids[:, [0, 2]] >= n).any(1) | (ids[:, 1] < 0) | (
        ids[:, 1] >= r2)
    if bad.any():
      raise DataError(f"{where[int(np.argmax(bad))]}: ids out of range (entities 0..{n - 1}, "
                      f"relations 0..{r2 - 1}, reciprocals included)")
    return ids

  def _evaluator(self, triples: Any, chunk: int, protocol: str) -> Any:
    """The evaluator of a split (compiled once per split, chunk and protocol), or of given
    triples (filtered by train, valid, test and the triples themselves)."""
    if isinstance(triples, str) and triples in ("valid", "test"):
      key = (triples, chunk, protocol)
      if key not in self._evaluators:
        index = self.filter_index() if protocol == "filtered" else None
        self._evaluators[key] = ogb_eval.make_evaluator(
            protocol, self.data, triples, self.model, chunk, index, activation=self.activation,
            log=self.log)
      return self._evaluators[key]
    if protocol != "filtered":
      raise ValueError(f"given triples are ranked by the filtered protocol only (the {protocol} "
                       f"protocol needs a split's given negatives); pass protocol='filtered'")
    ids = self.triple_ids(triples).astype(np.int32)
    known = dataclasses.replace(self.data, test=np.concatenate([self.data.test, ids]),
                                negatives=None)
    given = dataclasses.replace(self.data, test=ids, negatives=None)
    return ogb_eval.make_evaluator("filtered", given, "test", self.model, chunk,
                                   FilterIndex(known), activation=self.activation, log=self.log)

  def evaluate(self, triples: Any = "test", chunk: int = 256, breakdown: str | None = None,
               protocol: str | None = None) -> dict[str, Any]:
    """Ranking of ``triples`` by ``protocol`` (default: the run's ``--eval_protocol``; filtered,
    or ogb: against the given negatives, ``hale_jax.ogb_eval``): ``{tie rule: {"mr", "mrr",
    "hits@1", "hits@3", "hits@10"}}`` for the realistic, pessimistic and optimistic tie rules.
    ``triples``: ``"valid"``, ``"test"`` (these names are the splits, never files), or
    triples of your own (:meth:`triple_ids`: names or
    ids, or a file), ranked both ways by the filtered protocol with every triple of train,
    valid, test and the given ones as the known answers.  With ``breakdown``
    (``"direction"`` or ``"relation"``): ``{group: {"count": n, tie rule: metrics}}`` with the
    groups ``tail``/``head`` or the relation names."""
    if chunk <= 0:
      raise ValueError(f"chunk must be positive, got {chunk}")
    split = isinstance(triples, str) and triples in ("valid", "test")
    protocol = protocol or (self.protocol if split else "filtered")
    if split:
      ogb_eval.check_protocol(protocol, self.data)
    evaluator = self._evaluator(triples, chunk, protocol)
    if breakdown is None:
      return evaluator(self.params)
    groups = evaluator.breakdown(self.params, breakdown)
    if breakdown == "relation":
      return {self.data.relations[r]: metrics for r, metrics in groups.items()}
    return groups

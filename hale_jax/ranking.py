"""Filtered link-prediction ranking: MR, MRR and Hits@{1,3,10} in both directions.

Every test triple ``(h, r, t)`` gives two queries: ``(h, r, ?)`` with target ``t`` and
``(t, r + |R|, ?)`` with target ``h``.  Candidates are all ``N`` entities, ranked by the
model's squared distance ``||Phi(e, r) - e'||^2`` (smaller is better; the Poincaré distance
under the query's curvature for the hyperbolic models, ``models.ranking_distances``).  The activation and ``c_r`` are
training devices and play no part in ranking (``c_r > 0`` and ``h`` is increasing, so they could
only add ties where ``h`` saturates), except in runs with KGEmb's learned entity biases, which
rank by the full score ``h(c_r d^2) - b_t`` (``models.ranking_distances``).  Other known
answers of the query, from train, valid and test, are filtered out ("filtered" setting); the
target itself always competes.

Ties are ranked three ways (``n_<`` / ``n_=`` = other candidates strictly closer / equally
close):

- optimistic   ``1 + n_<``
- pessimistic  ``1 + n_< + n_=``   (as KGEmb, the source of the paper's baselines)
- realistic    the mean of the two, the expected rank under random tie-breaking (the headline,
  as in PyKEEN and LibKGE).

A NaN target distance ranks last (``N``), so a broken model never looks good.  Entities of
valid/test unseen in train keep their initial embeddings and are ranked like any other.

Ranking runs jit-compiled over fixed-size query chunks (``lax.map``), a few chunks a device
call, so memory is bounded by ``chunk x N`` distances and a call's known answers whatever the
split size, and long rankings report progress between calls.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.typing import ArrayLike

from hale_jax import activations, models
from hale_jax.data import FilterIndex, KGData, member
from hale_jax.layout import Layout, put_global
from hale_jax.mesh import single_device_mesh
from hale_jax.progress import PROGRESS_SECONDS, ProgressLine

Array = jax.Array
HITS_AT = (1, 3, 10)
TIE_MODES = ("realistic", "pessimistic", "optimistic")
CPU_CHUNK_DISTANCES = 1 << 24  # on a CPU, chunk x N at most (the distances: 64 MB in float32)
CALL_DISTANCES = 1 << 28  # distances a device call ranks at most (unless one chunk is more)
CALL_PAIRS = 1 << 22      # known-answer pairs a device call holds at most (unless one chunk ...)
KEEP_BYTES = 1 << 26      # calls' arrays kept on the device between rankings up to this size


def ranks_from_distances(distances: ArrayLike, targets: ArrayLike, filter_rows: ArrayLike,
                         filter_cols: ArrayLike,
                         num_candidates: int | None = None) -> tuple[Array, Array]:
  """Filtered optimistic and pessimistic ranks.

  Args:
    distances: ``[C, N]`` distances of each query to every candidate (smaller is better).
    targets: ``[C]`` the target entity of each query.
    filter_rows, filter_cols: ``[P]`` pairs ``(query, entity)`` of known answers to remove;
      pairs with ``filter_cols >= N`` are padding and ignored.  The target may be listed.
    num_candidates: only columns ``< num_candidates`` compete (default: all ``N``).  The
      columns beyond are padding rows of a sharded table (``hale_jax.layout``); they are
      masked out whatever their values.

  Returns:
    ``(optimistic, pessimistic)``, each ``[C]`` int32 ranks in ``[1, num_candidates]``.
  """
  d = jnp.asarray(distances)
  targets = jnp.asarray(targets)
  rows = jnp.arange(d.shape[0])
  d_target = d[rows, targets][:, None]
  excluded = jnp.zeros(d.shape, bool)
  excluded = excluded.at[jnp.asarray(filter_rows), jnp.asarray(filter_cols)].set(True, mode="drop")
  competing = ~excluded.at[rows, targets].set(True)  # the target never counts against itself
  worst = d.shape[1] if num_candidates is None else int(num_candidates)
  if worst < d.shape[1]:
    competing &= jnp.arange(d.shape[1])[None, :] < worst
  closer = jnp.sum((d < d_target) & competing, axis=1)
  tied = jnp.sum((d == d_target) & competing, axis=1)
  bad = jnp.isnan(d_target[:, 0])
  optimistic = jnp.where(bad, worst, 1 + closer).astype(jnp.int32)
  pessimistic = jnp.where(bad, worst, 1 + closer + tied).astype(jnp.int32)
  return optimistic, pessimistic


def metrics_from_ranks(optimistic: np.ndarray, pessimistic: np.ndarray) -> dict[str, dict[str, float]]:
  """``{tie_mode: {"mr", "mrr", "hits@1", "hits@3", "hits@10"}}`` (float64 means)."""
  optimistic = np.asarray(optimistic, np.float64)
  pessimistic = np.asarray(pessimistic, np.float64)
  out = {}
  for mode, r in (("realistic", 0.5 * (optimistic + pessimistic)),
                  ("pessimistic", pessimistic), ("optimistic", optimistic)):
    m = {"mr": float(r.mean()), "mrr": float((1.0 / r).mean())}
    for k in HITS_AT:
      m[f"hits@{k}"] = float((r <= k).mean())
    out[mode] = m
  return out


def _split_queries(data: KGData, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(heads, relations, targets)`` of ``split``'s queries, int32 ``[2T]``: the tail queries
  ``(h, r, ?)`` first, then the head queries ``(t, r + |R|, ?)``."""
  triples = data.split(split)
  nr = data.num_relations
  heads = np.concatenate([triples[:, 0], triples[:, 2]])
  rels = np.concatenate([triples[:, 1], triples[:, 1] + nr])
  targets = np.concatenate([triples[:, 2], triples[:, 0]])
  return tuple(a.astype(np.int32) for a in (heads, rels, targets))


def filter_index_for(data: KGData, splits: Sequence[str] = ("valid", "test")) -> FilterIndex:
  """The :class:`~hale_jax.data.FilterIndex` of ``data`` kept to what the queries of
  ``splits`` need: built from only the triples that answer one of them (in their order), it
  gives those queries the same answers in the same order as the index of all triples, while
  its size and build time follow the held-out splits, not the training set."""
  nr = data.num_relations
  wanted = np.unique(np.concatenate(
      [_query_keys(*_split_queries(data, s)[:2], nr) for s in splits]))

  def answering(triples: np.ndarray) -> np.ndarray:
    tail_queries = member(_query_keys(triples[:, 0], triples[:, 1], nr), wanted)
    tail_queries |= member(_query_keys(triples[:, 2], triples[:, 1] + nr, nr), wanted)
    return triples[tail_queries]

  return FilterIndex(dataclasses.replace(
      data, train=answering(data.train), valid=answering(data.valid),
      test=answering(data.test)))


def _query_keys(entities: np.ndarray, relations: np.ndarray, num_relations: int) -> np.ndarray:
  """One int64 per query ``(entity, relation id)``, relation ids in ``[0, 2 |R|)``."""
  return entities.astype(np.int64) * (2 * num_relations) + relations


class _Plan(NamedTuple):
  """How a split is ranked: ``chunk`` queries at a time (one ``lax.map`` step), ``per_call``
  chunks a device call (``calls`` of them, the last padded), each chunk's known answers as
  ``width`` pairs (the most any chunk has)."""
  chunk: int
  per_call: int
  calls: int
  width: int


def _plan(index: FilterIndex, heads: np.ndarray, rels: np.ndarray, chunk: int,
          columns: int) -> _Plan:
  """Sizes the calls so that each ranks at most ``CALL_DISTANCES`` distances and holds at
  most ``CALL_PAIRS`` filter pairs (at least one chunk); ``columns``: candidates a device
  scores for a query."""
  n_chunks = max(1, -(-len(heads) // chunk))
  counts = np.zeros(n_chunks * chunk, np.int64)
  counts[:len(heads)] = index.counts(heads, rels)
  width = max(1, int(counts.reshape(n_chunks, chunk).sum(axis=1).max()))
  most = max(1, min(CALL_DISTANCES // (chunk * columns), CALL_PAIRS // width, n_chunks))
  calls = -(-n_chunks // most)
  return _Plan(chunk, -(-n_chunks // calls), calls, width)


def _call_arrays(index: FilterIndex, queries: tuple[np.ndarray, ...], plan: _Plan, call: int,
                 num_entities: int) -> tuple[np.ndarray, ...]:
  """The host arrays of one call: heads, relations, targets ``[per_call, chunk]`` (padding
  queries ``(0, 0, 0)``) and each chunk's known answers as ``(row in chunk, entity)`` pairs
  ``[per_call, width]`` (padding pairs have entity ``N``, out of range)."""
  size = plan.per_call * plan.chunk
  lo = call * size
  heads, rels, targets = (np.zeros(size, np.int32) for _ in range(3))
  real = len(queries[0][lo:lo + size])
  for out, src in zip((heads, rels, targets), queries):
    out[:real] = src[lo:lo + real]
  rows, cols = index.answers(heads[:real], rels[:real])  # rows ascending
  chunk_of = rows // plan.chunk
  per_chunk = np.bincount(chunk_of, minlength=plan.per_call)
  slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_chunk) - per_chunk, per_chunk)
  f_rows = np.zeros((plan.per_call, plan.width), np.int32)
  f_cols = np.full((plan.per_call, plan.width), num_entities, np.int32)
  f_rows[chunk_of, slot] = rows % plan.chunk
  f_cols[chunk_of, slot] = cols
  shape = (plan.per_call, plan.chunk)
  return heads.reshape(shape), rels.reshape(shape), targets.reshape(shape), f_rows, f_cols


def candidate_distances(params: dict[str, Array], model: str, heads: ArrayLike,
                        relations: ArrayLike,
                        activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION
                        ) -> Array:
  """What ranking sorts for the queries ``(heads [C], relations [C], ?)``: ``[C, N]``, smaller
  is better (``models.ranking_distances``: the squared distance, or with entity biases
  ``h(c_r d^2) - b_t``, which needs the run's ``activation``)."""
  queries = models.transform(model, params, heads, relations)
  return models.ranking_distances(params, queries, relations, activation)


def _rank_chunks(params, heads, rels, targets, f_rows, f_cols, *, model, num_candidates,
                 activation):
  def one(args):
    h, r, t, fr, fc = args
    d = candidate_distances(params, model, h, r, activation)
    return ranks_from_distances(d, t, fr, fc, num_candidates)
  return jax.lax.map(one, (heads, rels, targets, f_rows, f_cols))


class Evaluator:
  """Filtered ranking of one split, prepared once and run jit-compiled on the layout's mesh.

  ``chunk`` queries are ranked at a time; memory is ``O(chunk * N)``.  On a CPU, where running
  out of memory ends the process instead of raising, the chunk is at most
  ``CPU_CHUNK_DISTANCES / N`` queries (a device raises, and the chunk is halved until it
  fits).  The chunks go to the device a few at a time (``_plan``): each call's queries and
  known answers are built on the host when it is due (kept when all calls together are small),
  so memory does not grow with the split, and a long ranking writes a progress line through
  ``log`` every ``progress_every`` seconds.  ``activation`` (the run's ``h``) matters only for
  parameters with entity biases (``models.ranking_distances``).  The parameters come laid out
  by ``layout`` (default: one device): row-sharded over ``"model"``, so each device scores its
  block of candidates and the counts of closer and tied candidates are summed across blocks;
  each chunk's queries are split over ``"data"`` (when ``chunk`` divides by its size).  Padding
  columns ``>= N`` are masked out.  The ranks come back replicated, so every process of a
  multi-host run reads them.
  """

  def __init__(self, data: KGData, split: str, model: str, chunk: int = 256,
               index: FilterIndex | None = None, layout: Layout | None = None,
               activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION,
               log: Callable[[str], None] = print, progress_every: float = PROGRESS_SECONDS):
    self.model = models.canonical_model(model)
    self.split = split
    self._data, self._index, self._activation, self._log = data, index, activation, log
    self.progress_every = progress_every
    self._layout = layout or Layout(single_device_mesh(), data.num_entities)
    self._queries = _split_queries(data, split)
    self._count = len(self._queries[0])
    self.relations = self._queries[1] % data.num_relations
    self._build(chunk)

  def _columns(self) -> int:
    """Candidates each device scores for a query (its block of the padded table)."""
    return self._layout.rows // int(self._layout.mesh.shape["model"])

  def _build(self, chunk: int) -> None:
    """Plans the calls for chunks of ``chunk`` queries (fewer on a CPU when ``N`` is large)
    and the (not yet compiled) ranking."""
    layout = self._layout
    if layout.mesh.devices.flat[0].platform == "cpu":
      chunk = min(chunk, max(1, CPU_CHUNK_DISTANCES // self._columns()))
    self.chunk = chunk
    self._index = self._index or filter_index_for(self._data, (self.split,))
    self._plan = _plan(self._index, *self._queries[:2], chunk, self._columns())
    rep = layout.replicated()
    rows = (NamedSharding(layout.mesh, P(None, "data"))
            if chunk % layout.mesh.shape["data"] == 0 else rep)
    self._shardings = (rows, rows, rows, rep, rep)
    plan = self._plan
    size = plan.calls * plan.per_call * (3 * plan.chunk + 2 * plan.width) * 4
    self._kept = None
    if size <= KEEP_BYTES:
      self._kept = [self._arrays(i) for i in range(plan.calls)]
    self._fn = jax.jit(functools.partial(_rank_chunks, model=self.model,
                                         num_candidates=self._data.num_entities,
                                         activation=self._activation),
                       out_shardings=(rep, rep))
    self._compiled = None

  def _arrays(self, call: int) -> tuple[Array, ...]:
    """The device arrays of call ``call`` (``_call_arrays``, laid out)."""
    if self._kept is not None:
      return self._kept[call]
    host = _call_arrays(self._index, self._queries, self._plan, call, self._data.num_entities)
    return tuple(put_global(a, sh) for a, sh in zip(host, self._shardings))

  @property
  def num_queries(self) -> int:
    return self._count

  def compile(self, params) -> float:
    """Compiles ahead of time for ``params``' shapes; returns the seconds it took.  Out of
    device memory, the chunk is halved (once said) until it fits."""
    t0 = time.perf_counter()
    self._retrying(lambda: setattr(self, "_compiled",
                                   self._fn.lower(params, *self._arrays(0)).compile()))
    return time.perf_counter() - t0

  def _retrying(self, fn: Callable[[], Any]) -> Any:
    while True:
      try:
        return fn()
      except Exception as err:  # pylint: disable=broad-except  # XLA's errors vary by version
        if not _out_of_memory(err) or self.chunk == 1:
          raise
        self._log(f"ranking {self.split}: out of device memory with chunks of {self.chunk} "
                  f"queries; retrying with {self.chunk // 2} (--eval_chunk sets it)")
        self._build(self.chunk // 2)

  def _rank_calls(self, params) -> tuple[np.ndarray, np.ndarray]:
    """Runs every call, the next dispatched before the last is read (the host builds a
    call's arrays while the device ranks the one before)."""
    if self._compiled is None:
      self.compile(params)
    progress = ProgressLine(f"ranking {self.split}", self._count, self._log,
                            self.progress_every)
    per_call = self._plan.per_call * self._plan.chunk
    done: list[tuple[np.ndarray, np.ndarray]] = []
    pending = None
    for call in range(self._plan.calls + 1):
      running = (self._compiled(params, *self._arrays(call)) if call < self._plan.calls
                 else None)
      if pending is not None:
        # Replicated over the mesh, possibly across processes: read the local copy.
        done.append(tuple(np.asarray(a.addressable_data(0)).reshape(-1) for a in pending))
        progress.update(min(self._count, len(done) * per_call))
      pending = running
    opt, pess = (np.concatenate([d[i] for d in done]) for i in (0, 1))
    return opt[:self._count], pess[:self._count]

  def ranks(self, params) -> tuple[np.ndarray, np.ndarray]:
    """``(optimistic, pessimistic)`` ranks of every query, tail queries first."""
    return self._retrying(lambda: self._rank_calls(params))

  def __call__(self, params) -> dict[str, dict[str, float]]:
    return metrics_from_ranks(*self.ranks(params))

  def breakdown(self, params, by: str) -> dict[str, dict[str, Any]]:
    """:func:`breakdown_from_ranks` of this split's ranks."""
    return breakdown_from_ranks(*self.ranks(params), self.relations, by)


def breakdown_from_ranks(opt: np.ndarray, pess: np.ndarray, relations: np.ndarray,
                         by: str) -> dict[Any, dict[str, Any]]:
  """Metrics per group of queries (tail queries first, then as many head queries; their real
  relation ids ``relations``), with their ``count``: by ``"direction"`` (``tail`` prediction
  ``(h, r, ?)`` and ``head`` prediction ``(?, r, t)``) or by ``"relation"`` (the relation
  id: both directions of each relation)."""
  count = len(opt)
  if by == "direction":
    groups = {"tail": np.arange(count // 2), "head": np.arange(count // 2, count)}
  elif by == "relation":
    groups = {int(r): np.flatnonzero(relations == r) for r in np.unique(relations)}
  else:
    raise ValueError(f"unknown breakdown {by!r}; choose direction or relation")
  return {key: {"count": int(len(rows)), **metrics_from_ranks(opt[rows], pess[rows])}
          for key, rows in groups.items()}


def _out_of_memory(err: Exception) -> bool:
  text = str(err)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text

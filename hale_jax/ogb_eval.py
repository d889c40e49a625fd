"""OGB's evaluation protocol: each held-out triple ranked against the negatives the dataset ships.

For a valid or test triple ``(h, r, t)`` with its given head negatives ``H`` and tail negatives
``T`` (``K`` each; 500 in ogbl-wikikg2, ``KGData.negatives``) there are two queries:

- tail prediction ``(h, r, ?)``: the target ``t`` against the ``K`` entities of ``T``;
- head prediction ``(t, r^-1, ?)``: the target ``h`` against the ``K`` entities of ``H``
  (the reciprocal relation, as in filtered ranking).

Nothing is filtered (OGB's protocol has no filter): a negative that is a true answer, or the
target itself, competes.

OGB's ``Evaluator`` for ogbl-wikikg2 (metric ``mrr``, ``_eval_mrr`` in
``ogb/linkproppred/evaluate.py``) takes scores, higher is better: ``optimistic`` = the
negatives scoring higher than the positive, ``pessimistic`` = those scoring at least as high,
``rank = 0.5 (optimistic + pessimistic) + 1``; MRR is the mean of ``1 / rank`` and Hits@K of
``rank <= K`` over the head and tail queries together (OGB's wikikg2 example averages both
directions' lists).  Here the score is minus what ranking sorts (``models.ranking_distances``,
smaller is better), so with ``n_<`` negatives strictly closer and ``n_=`` equally close,
hale_jax's optimistic rank ``1 + n_<``, pessimistic ``1 + n_< + n_=`` and realistic rank, their
mean, is OGB's rank exactly: the ``realistic`` metrics of ``metrics_from_ranks``
(``hale_jax.ranking``) are OGB's MRR and Hits@1/3/10; the other two tie rules bound them.  One
departure: a NaN target distance ranks last (``K + 1``) where OGB's comparisons with NaN would
give rank 1, so that a broken model never looks good.

Distances are those of full ranking: ``models.ranking_distances`` applied to the candidates'
rows of the entity tables (gathered per query), the target in the same call as its negatives,
so a negative equal to the target ties exactly.  Ranking runs jit-compiled over blocks of
``chunk x`` :data:`CHUNKS_PER_CALL` queries (``lax.map`` over chunks); the negatives stay on the
host (memory-mapped) and go to the device block by block: device memory is
``O(chunk x K x d)`` whatever the split's size.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hale_jax import activations, models
from hale_jax.config import EVAL_PROTOCOLS
from hale_jax.data import FilterIndex, KGData
from hale_jax.ranking import Evaluator, breakdown_from_ranks, metrics_from_ranks
from hale_jax.layout import Layout, put_global
from hale_jax.mesh import single_device_mesh

CHUNKS_PER_CALL = 16
PROGRESS_SECONDS = 30.0
RANKING = {
    "filtered": "filtered (train+valid+test), both directions; headline = realistic ties (mean "
                "of optimistic and pessimistic)",
    "ogb": "ogb: each valid/test triple against its given head and tail negatives, both "
           "directions, unfiltered; headline = realistic ties = OGB's rank "
           "1 + (optimistic + pessimistic) / 2, OGB's MRR and Hits",
}
"""What ``results.json`` says of each ``--eval_protocol``."""


def check_protocol(protocol: str, data: KGData) -> None:
  """Raises a one-line ValueError unless ``protocol`` can rank ``data``."""
  if protocol not in EVAL_PROTOCOLS:
    raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of "
                     f"{', '.join(EVAL_PROTOCOLS)}")
  if protocol == "ogb" and data.negatives is None:
    raise ValueError(f"--eval_protocol=ogb ranks each valid and test triple against the "
                     f"negatives its dataset ships, and {data.name} ships none (ogbl-wikikg2 "
                     f"does); use --eval_protocol=filtered")


def ranks_against_negatives(d: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """``(optimistic, pessimistic)`` int32 ranks ``[C]`` from ``d [C, 1 + K]``: column 0 the
  target's distance, the others its negatives' (smaller is better; module docstring)."""
  d = jnp.asarray(d)
  target, negatives = d[:, :1], d[:, 1:]
  closer = jnp.sum(negatives < target, axis=1)
  tied = jnp.sum(negatives == target, axis=1)
  bad = jnp.isnan(target[:, 0])
  worst = negatives.shape[1] + 1
  optimistic = jnp.where(bad, worst, 1 + closer).astype(jnp.int32)
  pessimistic = jnp.where(bad, worst, 1 + closer + tied).astype(jnp.int32)
  return optimistic, pessimistic


def candidate_distances(params: dict[str, jax.Array], model: str, heads: ArrayLike,
                        relations: ArrayLike, candidates: ArrayLike,
                        activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION
                        ) -> jax.Array:
  """What ranking sorts for each query ``(heads [C], relations [C], ?)`` and its own
  ``candidates [C, M]``: ``[C, M]``, ``models.ranking_distances`` on the candidates' rows."""
  queries = models.transform(model, params, heads, relations)
  tables = [k for k in models.ENTITY_TABLES if k in params]

  def one(query, relation, rows):
    own = {**params, **{k: params[k][rows] for k in tables}}
    return models.ranking_distances(own, query[None], relation[None], activation)[0]
  return jax.vmap(one)(queries, jnp.asarray(relations), jnp.asarray(candidates))


def _block_ranks(params, heads, rels, candidates, *, model, activation):
  def one(args):
    h, r, c = args
    return ranks_against_negatives(candidate_distances(params, model, h, r, c, activation))
  return jax.lax.map(one, (heads, rels, candidates))


class OgbEvaluator:
  """OGB-protocol ranking of one split (module docstring), with the interface of
  :class:`~hale_jax.ranking.Evaluator`: ``compile``, ``ranks`` (tail queries first),
  ``__call__`` (metrics), ``breakdown``, ``num_queries``, ``relations``."""

  def __init__(self, data: KGData, split: str, model: str, chunk: int = 256,
               layout: Layout | None = None,
               activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION,
               log: Callable[[str], None] = print):
    check_protocol("ogb", data)
    self.model, self.split, self.chunk, self._log = models.canonical_model(model), split, chunk, log
    triples, nr = data.split(split), data.num_relations
    self._negatives = data.negatives[split]  # [n, 2, K], host (memory-mapped)
    self._n = len(triples)
    self._heads = np.concatenate([triples[:, 0], triples[:, 2]]).astype(np.int32)
    self._rels = np.concatenate([triples[:, 1], triples[:, 1] + nr]).astype(np.int32)
    self._targets = np.concatenate([triples[:, 2], triples[:, 0]]).astype(np.int32)
    self.relations = self._rels % nr
    self._steps = max(1, min(CHUNKS_PER_CALL, -(-2 * self._n // chunk)))
    self._layout = layout or Layout(single_device_mesh(), data.num_entities)
    rep = self._layout.replicated()
    self._fn = jax.jit(functools.partial(_block_ranks, model=self.model, activation=activation),
                       out_shardings=(rep, rep))
    self._compiled = None

  @property
  def num_queries(self) -> int:
    return 2 * self._n

  def _block(self, start: int) -> tuple[tuple[jax.Array, ...], int]:
    """The queries ``start ..`` of one call (padded to full size) on the device, and how many
    are real."""
    size = self._steps * self.chunk
    idx = np.arange(start, min(start + size, 2 * self._n))
    tail = (idx < self._n).astype(np.int64)  # tail queries take [i, 1], head queries [i, 0]
    negatives = self._negatives[idx % self._n, tail]
    candidates = np.concatenate([self._targets[idx, None], negatives], axis=1)
    pad = size - len(idx)
    arrays = (np.pad(self._heads[idx], (0, pad)), np.pad(self._rels[idx], (0, pad)),
              np.pad(candidates, ((0, pad), (0, 0))))
    shapes = ((self._steps, self.chunk), (self._steps, self.chunk),
              (self._steps, self.chunk, candidates.shape[1]))
    rep = self._layout.replicated()
    return tuple(put_global(a.reshape(s).astype(np.int32), rep)
                 for a, s in zip(arrays, shapes)), len(idx)

  def compile(self, params) -> float:
    """Compiles ahead of time for ``params``' shapes; returns the seconds it took."""
    t0 = time.perf_counter()
    self._compiled = self._fn.lower(params, *self._block(0)[0]).compile()
    return time.perf_counter() - t0

  def ranks(self, params) -> tuple[np.ndarray, np.ndarray]:
    """``(optimistic, pessimistic)`` ranks of every query, tail queries first."""
    if self._compiled is None:
      self.compile(params)
    opts, pesss, last = [], [], time.perf_counter()
    for start in range(0, 2 * self._n, self._steps * self.chunk):
      arrays, real = self._block(start)
      opt, pess = (np.asarray(a.addressable_data(0)).reshape(-1)[:real]
                   for a in self._compiled(params, *arrays))
      opts.append(opt)
      pesss.append(pess)
      if time.perf_counter() - last > PROGRESS_SECONDS:
        last = time.perf_counter()
        self._log(f"ranking {self.split} (OGB protocol): {start + real:,} of "
                  f"{2 * self._n:,} queries")
    return np.concatenate(opts), np.concatenate(pesss)

  def __call__(self, params) -> dict[str, dict[str, float]]:
    return metrics_from_ranks(*self.ranks(params))

  def breakdown(self, params, by: str) -> dict[Any, dict[str, Any]]:
    return breakdown_from_ranks(*self.ranks(params), self.relations, by)


def make_evaluator(protocol: str, data: KGData, split: str, model: str, chunk: int = 256,
                   index: FilterIndex | None = None, layout: Layout | None = None,
                   activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION,
                   log: Callable[[str], None] = print) -> Evaluator | OgbEvaluator:
  """The evaluator of ``split`` under ``protocol`` (``--eval_protocol``); ``index`` (the
  filter) matters only to filtered ranking."""
  check_protocol(protocol, data)
  if protocol == "ogb":
    return OgbEvaluator(data, split, model, chunk, layout, activation, log)
  return Evaluator(data, split, model, chunk, index, layout, activation, log)

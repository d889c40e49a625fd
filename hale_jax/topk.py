"""The ``k`` best candidates of many queries in bounded memory, and the distance of single triples.

:func:`top_k` ranks ``(entity, relation id, ?)`` queries against all ``N`` entities by what
ranking sorts (``models.ranking_distances``, smaller is better) without ever holding a
``[Q, N]`` array: ``query_chunk`` queries at a time (one jitted call each, padded to a power
of two up to that size, so that few sizes are ever compiled), and inside a call the entities ``entity_chunk``
at a time (a ``lax.scan``): each block's distances, the known answers that fall in the block
set to ``+inf`` (filtered ranking; the ``(row, column)`` pairs of
``FilterIndex.answers``), its best ``k`` by ``lax.top_k``, merged into the best ``k`` so far.
:func:`chunk_sizes` picks both chunks from ``N`` and ``k`` so that a block holds at most
``BLOCK_ELEMENTS`` distances (32 MB in float32), whatever ``Q`` and ``N``.

The order is that of ``np.argsort(row, kind="stable")`` over the dense row: smaller first,
equal distances by smaller id, then ``+inf``, then NaN.  ``lax.top_k`` orders float bits
totally (``-0.0`` below ``+0.0``, NaN by sign) and puts the lower index first among equals;
the keys are the negated distances with zeros made ``+0.0`` and NaN made positive, the best
so far sit before the block in each merge (and hold smaller ids), so equal distances keep id
order.  The last block overlaps the one before it when ``entity_chunk`` does not divide ``N``
(no padded copy of the table); its repeated columns get a key below every real one.  The
distances are the dense ranking's up to the last bit of float32 (a matmul's rounding depends
on its shapes, so the dense ``[Q, N]`` rows already differ in the last bit between batch
sizes); hand-made ties and NaN are exact.

:func:`pair_distances` is the same quantity for given ``(entity, relation, candidate)``
triples, from their rows alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hale_jax import activations, models
from hale_jax.data import FilterIndex

Array = jax.Array
QUERY_CHUNK = 256       # queries a call at most
ENTITY_CHUNK = 32768    # entities a block at most
BLOCK_ELEMENTS = 1 << 23  # distances a block at most (with the best k kept beside it)
MIN_PAIRS = 1 << 12     # filter pairs of a call, padded to a power of two at least this
PAIR_CHUNK = 1 << 16    # triples a call of pair_distances


def chunk_sizes(num_entities: int, k: int, entity_chunk: int = ENTITY_CHUNK) -> tuple[int, int]:
  """``(query_chunk, entity_chunk)`` for ranking ``num_entities`` candidates for the best
  ``k``: ``query_chunk x (entity_chunk + 2 min(k, N)) <= BLOCK_ELEMENTS`` unless one query
  alone needs more."""
  if num_entities < 1 or k < 1 or entity_chunk < 1:
    raise ValueError(f"need num_entities, k and entity_chunk >= 1, got {num_entities}, {k}, "
                     f"{entity_chunk}")
  chunk = min(num_entities, entity_chunk)
  kept = min(k, num_entities)
  return max(1, min(QUERY_CHUNK, BLOCK_ELEMENTS // (chunk + 2 * kept))), chunk


def _below_all(dtype) -> np.ndarray:
  """The float whose bits are all ones: a NaN below every other value in ``lax.top_k``'s
  total order (below the negated NaN distances too)."""
  dtype = np.dtype(dtype)
  return np.array(-1, f"int{8 * dtype.itemsize}").view(dtype)


def _keys(d: Array) -> Array:
  """What ``lax.top_k`` picks the largest of: ``-d``, with ``-0.0`` made ``+0.0`` and every
  NaN made positive first (so that NaN sorts last, as in NumPy)."""
  d = jnp.where(d == 0, jnp.zeros_like(d), d)
  return -jnp.where(jnp.isnan(d), jnp.full_like(d, jnp.nan), d)


def _block_params(params: dict[str, Array], start: Array, chunk: int) -> dict[str, Array]:
  """``params`` with the entity-row tables cut to rows ``[start, start + chunk)``."""
  out = dict(params)
  for name in ("entity", "bias_tail"):
    if name in params:
      out[name] = jax.lax.dynamic_slice_in_dim(params[name], start, chunk)
  return out


@functools.partial(jax.jit, static_argnames=("model", "activation", "k", "chunk"))
def _chunk_top_k(params, heads, relations, pair_rows, pair_cols, *, model, activation, k,
                 chunk):
  """``(distances, ids)``, ``[q, k]`` each, best first, of the queries ``(heads, relations)``
  over all entities; the pairs ``(pair_rows, pair_cols)`` are set to ``+inf`` (padding pairs
  have ``pair_cols >= N``)."""
  n = params["entity"].shape[0]
  queries = models.transform(model, params, heads, relations)
  block_k = min(k, chunk)
  below = _below_all(queries.dtype)

  def block(best, step):
    first = step * chunk
    start = jnp.minimum(first, n - chunk)
    d = models.ranking_distances(_block_params(params, start, chunk), queries, relations,
                                 activation)
    local = pair_cols - start
    local = jnp.where((local >= 0) & (local < chunk), local, chunk)  # chunk: dropped
    d = d.at[pair_rows, local].set(jnp.inf, mode="drop")
    ids = start + jnp.arange(chunk, dtype=jnp.int32)
    keys = jnp.where(ids[None, :] < first, below, _keys(d))  # columns of the block before
    top, where = jax.lax.top_k(keys, block_k)
    keys = jnp.concatenate([best[0], top], axis=1)
    ids = jnp.concatenate([best[1], ids[where]], axis=1)
    top, where = jax.lax.top_k(keys, k)
    return (top, jnp.take_along_axis(ids, where, axis=1)), None

  q = heads.shape[0]
  start = (jnp.full((q, k), below, queries.dtype), jnp.full((q, k), n, jnp.int32))
  (keys, ids), _ = jax.lax.scan(block, start, jnp.arange(-(-n // chunk)))
  return -keys, ids


def _bucket(count: int, least: int, most: int | None = None) -> int:
  """The power of two at least ``count`` and ``least`` (at most ``most``): the padded size of
  a call's arrays, so that few sizes are ever compiled."""
  size = max(least, 1 << max(0, int(count) - 1).bit_length())
  return size if most is None else min(size, most)


def _pad(values: np.ndarray, size: int, fill: int) -> np.ndarray:
  out = np.full(size, fill, np.int32)
  out[:len(values)] = values
  return out


def top_k(params: dict[str, Array], model: str, entities: np.ndarray, relations: np.ndarray,
          k: int, index: FilterIndex | None = None,
          activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION,
          entity_chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The ``min(k, N)`` best candidates of each query ``(entities[i], relations[i], ?)``.

  Args:
    params: the model's tables (``models.init_params`` layout).
    model: its name.
    entities, relations: ``[Q]`` entity ids and relation ids (``0 .. 2|R|-1``).
    k: how many candidates a query.
    index: filtered ranking: the query's known answers get distance ``+inf`` (they come last,
      and the caller drops them); None ranks every entity.
    activation: the run's ``h``, a name or callable (default Hanon; used only with entity
      biases, ``models.ranking_distances``).
    entity_chunk: entities a block at most (default ``ENTITY_CHUNK``, read at the call).

  Returns:
    ``(ids, distances)``, ``[Q, min(k, N)]`` int32 and the tables' float type, best first,
    in the order of ``np.argsort(kind="stable")`` of the dense row (module docstring).
  """
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  n = int(params["entity"].shape[0])
  kept = min(k, n)
  q, chunk = chunk_sizes(n, kept, ENTITY_CHUNK if entity_chunk is None else entity_chunk)
  entities = np.asarray(entities, np.int64).reshape(-1)
  relations = np.asarray(relations, np.int64).reshape(-1)
  count = len(entities)
  ids = np.zeros((count, kept), np.int32)
  distances = np.zeros((count, kept), np.dtype(params["entity"].dtype))
  model = models.canonical_model(model)
  q = _bucket(count, 1, q)  # a few queries are not padded to a whole chunk
  for lo in range(0, count, q):
    e, r = entities[lo:lo + q], relations[lo:lo + q]
    rows, cols = (index.answers(e, r) if index is not None
                  else (np.zeros(0, np.int32), np.zeros(0, np.int32)))
    pairs = _bucket(len(rows), MIN_PAIRS)
    d, top = _chunk_top_k(params, _pad(e, q, 0), _pad(r, q, 0), _pad(rows, pairs, 0),
                          _pad(cols, pairs, n), model=model, activation=activation, k=kept,
                          chunk=chunk)
    ids[lo:lo + len(e)] = np.asarray(top)[:len(e)]
    distances[lo:lo + len(e)] = np.asarray(d)[:len(e)]
  return ids, distances


@functools.partial(jax.jit, static_argnames=("model", "activation"))
def _pair_distances(params, heads, relations, tails, *, model, activation):
  q = models.transform(model, params, heads, relations)
  e = params["entity"][tails]
  d = jnp.sum(q * q, axis=-1) + jnp.sum(e * e, axis=-1) - 2.0 * jnp.sum(q * e, axis=-1)
  d = jnp.where(d < 0, jnp.zeros_like(d), d)
  if not models.has_entity_bias(params):
    return d
  x = activations.resolve(activation)(models.relation_scale(params, relations) * d)
  return x - params["bias_tail"][tails]


def pair_distances(params: dict[str, Array], model: str, triples: np.ndarray,
                   activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION) -> np.ndarray:
  """What ranking sorts for each ``(entity, relation id, candidate)`` of ``triples [T, 3]``:
  ``[T]``, the value :func:`top_k` and the dense ranking give that candidate (the same
  formula, ``|q|^2 + |e|^2 - 2 q.e`` clamped at 0, read for one pair; ``h(c_r d^2) - b_t``
  with entity biases), from the two rows alone."""
  triples = np.asarray(triples, np.int64).reshape(-1, 3)
  model = models.canonical_model(model)
  out = np.zeros(len(triples), np.dtype(params["entity"].dtype))
  size = _bucket(len(triples), 16, PAIR_CHUNK)
  for lo in range(0, len(triples), size):
    part = triples[lo:lo + size]
    cols = [_pad(part[:, j], size, 0) for j in range(3)]
    out[lo:lo + len(part)] = np.asarray(_pair_distances(params, *cols, model=model,
                                                        activation=activation))[:len(part)]
  return out

"""Prediction in bounded memory (``hale_jax.topk``): the chunked top-k against a float64
brute force, hand-made ties, NaN and infinite distances, single-triple distances, and the
compiled sizes that keep memory from growing with the number of queries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import activations, synthetic, topk
from hale_jax.data import FilterIndex, KGData
from hale_jax.ranking import candidate_distances
from tests.reference import np_activation, np_softplus, np_transform, random_params, to_f64


def _graph(num_entities=61, seed=0) -> KGData:
  """A small power-law graph whose hubs have many known answers (61 entities: no chunk
  size used below divides it)."""
  return synthetic.power_law(num_entities, 4.0, 3, held_out=10, seed=seed)


def _queries(rng, data, count):
  """Entities and relation ids (reciprocals included) of ``count`` queries, half of them
  those of train triples (so that they have known answers)."""
  half = count // 2
  rows = data.train[rng.integers(0, len(data.train), half)]
  ents = np.concatenate([rows[:, 0], rng.integers(0, data.num_entities, count - half)])
  rels = np.concatenate([rows[:, 1], rng.integers(0, 2 * data.num_relations, count - half)])
  return ents, rels


def _np_distances(model, params, ents, rels, h=None):
  """Float64 ``[Q, N]`` of what ranking sorts (``models.ranking_distances``)."""
  p = to_f64(params)
  q = np_transform(model, p, ents, rels)
  d = np.sum((q[:, None, :] - p["entity"][None, :, :]) ** 2, axis=-1)
  if "bias_tail" in p:
    d = h(np_softplus(p["scale"][rels])[:, None] * d) - p["bias_tail"][None, :]
  return d


def _masked(d, index, ents, rels):
  d = d.copy()
  if index is not None:
    rows, cols = index.answers(ents, rels)
    d[rows, cols] = np.inf
  return d


def _check_against(d64, ids, got, k):
  """``ids``/``got`` are the ``min(k, N)`` best of the float64 rows ``d64`` in argsort order:
  where the id differs from the reference's, the two distances tie in float32 rounding."""
  want = np.argsort(d64, axis=1, kind="stable")[:, :min(k, d64.shape[1])]
  assert ids.shape == want.shape == got.shape
  mine = np.take_along_axis(d64, ids.astype(np.int64), axis=1)
  ref = np.take_along_axis(d64, want, axis=1)
  finite = np.isfinite(ref)
  np.testing.assert_array_equal(np.isfinite(mine), finite)
  np.testing.assert_allclose(mine[finite], ref[finite], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-5, atol=1e-6)
  swapped = ids != want
  assert swapped.mean() < 0.02  # only float32 near-ties may swap
  both = swapped & finite
  assert np.all(np.abs(mine[both] - ref[both]) <= 1e-5 * np.abs(ref[both]))
  for row in ids:  # every id once
    assert len(set(row.tolist())) == len(row)


@pytest.mark.parametrize("model", ["TransE", pytest.param("RotL", marks=pytest.mark.slow)])
@pytest.mark.parametrize("filtered", [False, True])
def test_chunked_top_k_matches_float64_brute_force(rng, model, filtered):
  data = _graph()
  n = data.num_entities
  params = random_params(rng, model, n, data.num_relations, 6, 0.5)
  index = FilterIndex(data) if filtered else None
  ents, rels = _queries(rng, data, 40)
  d64 = _masked(_np_distances(model, params, ents, rels), index, ents, rels)
  if filtered:
    assert np.isinf(d64).sum() >= 40  # the filter removes something
  for k, chunk in ((1, 7), (13, 7), (n + 5, 16), (20, 1000)):  # k > chunk, k > N, chunk > N
    ids, got = topk.top_k(params, model, ents, rels, k, index, entity_chunk=chunk)
    _check_against(d64, ids, got, k)


def test_entity_biases_rank_by_the_full_score(rng):
  data = _graph(seed=1)
  params = random_params(rng, "RotE", data.num_entities, data.num_relations, 4,
                         entity_bias="head_tail")
  h = np_activation("hanon")
  act = activations.get_activation("hanon")
  ents, rels = _queries(rng, data, 20)
  index = FilterIndex(data)
  d64 = _masked(_np_distances("RotE", params, ents, rels, h), index, ents, rels)
  ids, got = topk.top_k(params, "RotE", ents, rels, 9, index, act, entity_chunk=8)
  _check_against(d64, ids, got, 9)


def _tie_params(entity_rows, num_relations=1):
  """TransE with zero translations and integer entity rows: every distance is an exact
  small integer, so ties are exact."""
  ent = np.asarray(entity_rows, np.float32)
  r2 = 2 * num_relations
  return {"entity": jnp.asarray(ent), "translation": jnp.zeros((r2, ent.shape[1]), jnp.float32),
          "scale": jnp.zeros((r2,), jnp.float32)}


def test_hand_made_ties_keep_the_smallest_id_first():
  # 23 entities on a line with repeated positions: ties within and across chunks of 5.
  pos = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6]
  params = _tie_params([[p, 0.0] for p in pos])
  ents = np.arange(len(pos))
  rels = np.zeros(len(pos), np.int64)
  dense = np.asarray([[(pos[a] - pos[b]) ** 2 for b in range(len(pos))] for a in ents], float)
  for k, chunk in ((1, 5), (3, 4), (4, 1), (7, 23), (23, 5), (6, 5)):
    ids, got = topk.top_k(params, "TransE", ents, rels, k, entity_chunk=chunk)
    want = np.argsort(dense, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(got, np.take_along_axis(dense, want, 1))


def test_filtered_answers_and_nan_and_inf_come_last_in_numpy_order():
  """+inf (known answers, overflow) after every finite distance, NaN after +inf, each group
  by id, as ``np.argsort(kind="stable")``; a NaN of either sign counts as NaN."""
  rows = [[0.0], [1.0], [np.nan], [2.0], [1e30], [1.0], [np.inf], [0.0], [np.nan], [3.0],
          [1e30], [2.0]]
  params = _tie_params(rows)
  n = len(rows)
  data = KGData("tie", [f"e{i}" for i in range(n)], ["r"],
                np.array([[0, 0, 3], [0, 0, 9], [0, 0, 7]], np.int32),
                np.zeros((0, 3), np.int32), np.zeros((0, 3), np.int32))
  index = FilterIndex(data)
  ents, rels = np.array([0, 1, 0]), np.array([0, 0, 1])
  with np.errstate(invalid="ignore", over="ignore"):
    e = np.asarray(rows, np.float32)
    d = (e[ents] ** 2 + (e ** 2).T - 2 * e[ents] @ e.T)
  d = np.where(d < 0, 0, d)
  assert np.isnan(d[:, 6]).all() and np.isinf(d[:, 4]).all()  # inf - inf, overflow
  for filt in (None, index):
    dd = _masked(d, filt, ents, rels)
    for chunk in (5, 12):
      ids, got = topk.top_k(params, "TransE", ents, rels, n, filt, entity_chunk=chunk)
      want = np.argsort(dd, axis=1, kind="stable")
      np.testing.assert_array_equal(ids, want)
      np.testing.assert_array_equal(got, np.take_along_axis(dd, want, 1))


def test_chunk_sizes_bound_the_block():
  for n in (1, 7, 1000, 10 ** 6, 10 ** 8):
    for k in (1, 10, 1000, 10 ** 6):
      q, chunk = topk.chunk_sizes(n, k)
      assert 1 <= chunk <= min(n, topk.ENTITY_CHUNK) and 1 <= q <= topk.QUERY_CHUNK
      assert q * (chunk + 2 * min(k, n)) <= topk.BLOCK_ELEMENTS or q == 1
  with pytest.raises(ValueError):
    topk.chunk_sizes(10, 0)
  with pytest.raises(ValueError, match="k must be at least 1"):
    topk.top_k(_tie_params([[0.0]]), "TransE", [0], [0], 0)


@pytest.mark.slow
def test_query_counts_compile_few_sizes(rng):
  """Every count of queries runs on a few padded sizes (the compiled programs, which would
  otherwise pile up one per count, are what made memory grow with a queries file)."""
  data = _graph(seed=2)
  params = random_params(rng, "DistMult", data.num_entities, data.num_relations, 4)
  index = FilterIndex(data)
  topk._chunk_top_k.clear_cache()  # pylint: disable=protected-access
  for count in (1, 5, 7, 40, 60, 64, 333):
    ents, rels = _queries(rng, data, count)
    topk.top_k(params, "DistMult", ents, rels, 4, index, entity_chunk=16)
  assert topk._chunk_top_k._cache_size() == 4  # 1, 8, 64, 256  # pylint: disable=protected-access


@pytest.mark.slow
def test_pair_distances_match_float64_and_the_dense_rows(rng, monkeypatch):
  monkeypatch.setattr(topk, "PAIR_CHUNK", 32)  # several calls, the last one padded
  data = _graph(seed=3)
  n = data.num_entities
  for model, bias in (("RotL", "none"), ("RotatE", "tail")):
    params = random_params(rng, model, n, data.num_relations, 6, 0.5, entity_bias=bias)
    act = activations.get_activation("halin")
    ents, rels = _queries(rng, data, 75)
    tails = rng.integers(0, n, 75)
    got = topk.pair_distances(params, model, np.stack([ents, rels, tails], 1), act)
    want = _np_distances(model, params, ents, rels, np_activation("halin"))[np.arange(75), tails]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dense = np.asarray(candidate_distances(params, model, jnp.asarray(ents), jnp.asarray(rels),
                                           act))
    np.testing.assert_allclose(got, dense[np.arange(75), tails], rtol=1e-5, atol=1e-6)
  assert topk.pair_distances(params, model, np.zeros((0, 3), int)).shape == (0,)


def test_keys_order_as_numpy_argsort():
  """``lax.top_k`` of the keys gives ``np.argsort``'s order: -0.0 ties +0.0, NaN of either
  sign last (x86 makes negative NaNs)."""
  neg_nan = np.array(0xFFC00000, np.uint32).view(np.float32)  # x86's default NaN
  x = np.array([1.0, -0.0, 0.0, neg_nan, np.inf, np.nan, 0.5, -0.0], np.float32)
  assert np.signbit(x[3]) and np.isnan(x[3])
  _, order = jax.lax.top_k(topk._keys(jnp.asarray(x)), len(x))  # pylint: disable=protected-access
  np.testing.assert_array_equal(order, np.argsort(x, kind="stable"))
  assert list(np.argsort(x, kind="stable")) == [1, 2, 7, 6, 0, 4, 3, 5]


def test_transform_of_padding_queries_is_harmless(rng):
  """A single query is padded to a power of two; its answer is the one it has among many."""
  data = _graph(seed=4)
  params = random_params(rng, "RotE", data.num_entities, data.num_relations, 4)
  ents, rels = _queries(rng, data, 37)
  ids, got = topk.top_k(params, "RotE", ents, rels, 6, entity_chunk=9)
  for i in (0, 17, 36):
    one_ids, one = topk.top_k(params, "RotE", ents[i:i + 1], rels[i:i + 1], 6, entity_chunk=9)
    np.testing.assert_array_equal(one_ids[0], ids[i])
    np.testing.assert_allclose(one[0], got[i], rtol=1e-6)

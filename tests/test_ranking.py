"""Filtered ranking: hand-made tie cases, metrics, and an end-to-end brute-force check."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hale_jax import ranking
from hale_jax.data import from_named_triples
from reference import (SPLITS, known_answers, np_ranks, np_transform, random_params,
                       split_queries)
from hale_jax.ranking import Evaluator

from tests import helpers

INF = np.inf
NAN = np.nan

# compiled once per shape; the hand-made cases share shapes by padding the filter to 8 pairs
jit_ranks = jax.jit(ranking.ranks_from_distances)


def ranks(distances, targets, pairs=(), n=None):
  """Calls ranks_from_distances; ``pairs`` are (row, col) filter pairs (padding added)."""
  d = np.asarray(distances, np.float32)
  n = d.shape[1] if n is None else n
  pairs = list(pairs) + [(0, n)] * (8 - len(pairs))  # padding pairs, as the Evaluator makes
  rows = np.array([p[0] for p in pairs], np.int32)
  cols = np.array([p[1] for p in pairs], np.int32)
  opt, pess = jit_ranks(d, np.asarray(targets, np.int32), rows, cols)
  assert opt.dtype == np.int32 and pess.dtype == np.int32
  return np.asarray(opt).tolist(), np.asarray(pess).tolist()


def test_ties_count_optimistic_and_pessimistic():
  # target 0 at 1: one candidate closer (0.5), two tied (entities 1 and 2)
  assert ranks([[1, 1, 1, 0.5]], [0]) == ([2], [4])
  assert ranks([[1, 1, 2, 0.5]], [0]) == ([2], [3])


def test_all_equal_row():
  assert ranks([[2, 2, 2, 2, 2]], [3]) == ([1], [5])


def test_strictly_best_and_worst():
  assert ranks([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], [0, 2]) == ([1, 3], [1, 3])


def test_filtered_entities_removed_even_when_closer_or_tied():
  # target 0 at 1; entity 1 tied, entity 2 closer, entity 3 farther: filter 1 and 2.
  assert ranks([[1, 1, 0.5, 2]], [0], [(0, 1), (0, 2)]) == ([1], [1])
  # filtering only the tied one
  assert ranks([[1, 1, 0.5, 2]], [0], [(0, 1)]) == ([2], [2])
  # filtering only the closer one
  assert ranks([[1, 1, 0.5, 2]], [0], [(0, 2)]) == ([1], [2])


def test_target_listed_in_filter_still_competes():
  # the target's own pair is in the filter; entity 2 is closer and still counts
  assert ranks([[0.5, 1, 0.2]], [0], [(0, 0)]) == ([2], [2])
  # duplicated filter pairs (a triple in two splits) are harmless
  assert ranks([[0.5, 1, 0.2, 0.5]], [0], [(0, 0), (0, 0), (0, 3), (0, 3)]) == ([2], [2])


def test_filter_applies_to_its_own_row_only():
  d = [[1, 0.5, 0.2], [1, 0.5, 0.2]]
  assert ranks(d, [0, 0], [(1, 1), (1, 2)]) == ([3, 1], [3, 1])


def test_padding_pairs_are_ignored():
  d = np.array([[1.0, 2.0, 0.5]], np.float32)
  rows = np.array([0, 0, 0], np.int32)
  # column N and beyond: neither wrapped round to column 0 nor clamped onto column N-1 (= 2)
  cols = np.array([3, 4, 1000], np.int32)
  opt, pess = jit_ranks(d, np.array([0], np.int32), rows, cols)
  assert (int(opt[0]), int(pess[0])) == (2, 2)


def test_nan_target_ranks_last():
  assert ranks([[NAN, 0.5, 1, 2], [1, NAN, 0.3, 0.1]], [0, 0]) == ([4, 3], [4, 3])
  assert ranks([[NAN, NAN, NAN]], [1]) == ([3], [3])


def test_inf_target_rank_stays_within_n():
  # entity 1 is filtered, entities 2 and 3 are closer: both ranks should be 3
  assert ranks([[INF, 1, 2, 3]], [0], [(0, 1)]) == ([3], [3])
  # all at +inf: the others tie with the target, filtered ones do not count
  assert ranks([[INF, INF, INF, INF]], [0], [(0, 2)]) == ([1], [3])


def test_columns_beyond_num_candidates_never_compete():
  # columns 3 and 4 are padding rows of a sharded table: closer, tied, NaN -- none counts
  d = np.array([[1.0, 2.0, 1.0, 0.0, 1.0], [0.5, NAN, 3.0, NAN, 0.1]], np.float32)
  rows = np.zeros(8, np.int32)
  cols = np.full(8, 3, np.int32)
  opt, pess = jax.jit(ranking.ranks_from_distances, static_argnums=4)(
      d, np.array([0, 1], np.int32), rows, cols, 3)
  assert np.asarray(opt).tolist() == [1, 3]  # a NaN target ranks num_candidates, not 5
  assert np.asarray(pess).tolist() == [2, 3]
  full = jit_ranks(d, np.array([0, 1], np.int32), rows, np.full(8, 5, np.int32))
  assert np.asarray(full[0]).tolist() == [2, 5]  # without the mask the padding competes


def test_random_against_brute_force(rng):
  c, n, p = 30, 9, 60
  d = rng.integers(0, 5, (c, n)).astype(np.float32)  # many ties
  d[rng.random((c, n)) < 0.05] = NAN
  targets = rng.integers(0, n, c)
  rows = rng.integers(0, c, p)
  cols = rng.integers(0, n + 3, p)  # some padding beyond N
  filt = [set() for _ in range(c)]
  for r, col in zip(rows, cols):
    if col < n:
      filt[r].add(int(col))
  opt, pess = jit_ranks(d, targets.astype(np.int32), rows.astype(np.int32),
                                              cols.astype(np.int32))
  want_opt, want_pess = np_ranks(d, targets, filt)
  np.testing.assert_array_equal(np.asarray(opt), want_opt)
  np.testing.assert_array_equal(np.asarray(pess), want_pess)
  assert (np.asarray(opt) >= 1).all() and (np.asarray(pess) <= n).all()


def test_metrics_from_ranks(rng):
  opt = rng.integers(1, 30, 50)
  pess = opt + rng.integers(0, 5, 50)
  m = ranking.metrics_from_ranks(opt, pess)
  assert set(m) == {"realistic", "pessimistic", "optimistic"}
  for mode, r in (("realistic", (opt + pess) / 2.0), ("pessimistic", pess.astype(float)),
                  ("optimistic", opt.astype(float))):
    assert set(m[mode]) == {"mr", "mrr", "hits@1", "hits@3", "hits@10"}
    assert m[mode]["mr"] == pytest.approx(np.mean(r), rel=1e-12)
    assert m[mode]["mrr"] == pytest.approx(np.mean(1.0 / r), rel=1e-12)
    for k in (1, 3, 10):
      assert m[mode][f"hits@{k}"] == pytest.approx(np.mean(r <= k), rel=1e-12)


def test_metrics_realistic_half_ranks():
  # opt 1, pess 2 -> realistic 1.5: not a hit@1, MRR 2/3
  m = ranking.metrics_from_ranks(np.array([1, 3]), np.array([2, 3]))
  assert m["realistic"]["hits@1"] == 0.0
  assert m["optimistic"]["hits@1"] == 0.5
  assert m["realistic"]["mrr"] == pytest.approx((1 / 1.5 + 1 / 3) / 2)
  assert m["pessimistic"]["mr"] == pytest.approx(2.5)


# ----------------------------------------------------------------------------------------------
# End to end: Evaluator vs brute-force filtered ranking.

def _brute_force_ranks(data, model, params):
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  heads, rels, targets = split_queries(data, "test")
  q = np_transform(model, p, heads, rels)
  d = np.sum((q[:, None, :] - p["entity"][None, :, :]) ** 2, axis=-1)
  assert d.shape == (len(heads), data.num_entities)
  known = known_answers(data)
  filt = [known[(h, r)] - {t} for h, r, t in zip(heads, rels, targets)]
  return (*np_ranks(d, targets, filt), d, filt)


# The evaluator is model-agnostic beyond models.transform (checked per model in test_models.py).
@pytest.mark.parametrize("model", ["TransE"] + [pytest.param(m, marks=pytest.mark.slow)
                                                for m in ("DistMult", "RotL")])
def test_evaluator_matches_brute_force(rng, model):
  data = from_named_triples("tiny", SPLITS)
  assert data.num_entities == 8 and data.num_relations == 2
  params = random_params(rng, model, data.num_entities, data.num_relations, 4, 1.0)
  ev = ranking.Evaluator(data, "test", model, chunk=4)
  assert ev.num_queries == 2 * len(SPLITS["test"]) == 14
  opt, pess = ev.ranks(params)
  want_opt, want_pess, d, filt = _brute_force_ranks(data, model, params)
  # random float embeddings: no near ties that float32 could flip
  np.testing.assert_array_equal(opt, want_opt)
  np.testing.assert_array_equal(pess, want_pess)
  # the filter really removes something in this data set
  assert sum(len(f) for f in filt) >= 6
  assert max(len(f) for f in filt) >= 3
  # metrics are those of the ranks
  m = ev(params)
  assert m == ranking.metrics_from_ranks(opt, pess)
  # and the same parameters give the same answer again (compiled once, reused)
  opt2, pess2 = ev.ranks(params)
  np.testing.assert_array_equal(opt2, opt)
  np.testing.assert_array_equal(pess2, pess)


def test_evaluator_filtering_changes_ranks():
  """Hand-placed embeddings: other known answers closer than the target are filtered out."""
  data = from_named_triples("tiny", SPLITS)
  e = {name: i for i, name in enumerate(data.entities)}
  n, r2, dim = data.num_entities, 2 * data.num_relations, 2
  params = random_params(np.random.default_rng(0), "TransE", n, data.num_relations, dim)
  assert params["translation"].shape == (r2, dim)
  ent = np.zeros((n, dim), np.float32)
  # entities on a line; query (a, likes, ?) = position of a + 0 lands on a = 0.
  for name, x in zip("abcdefgh", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]):
    ent[e[name], 0] = x
  params = dict(params)
  params["entity"] = ent
  params["translation"] = np.zeros((r2, dim), np.float32)
  ev = ranking.Evaluator(data, "test", "TransE", chunk=4)
  opt, pess = ev.ranks(params)
  # first test query: (a, likes, e) with target e at distance 16; a itself (0) is closer and not
  # a known answer, b, c, d are known answers (filtered), f, g, h are farther: rank 2.
  assert SPLITS["test"][0] == ("a", "likes", "e")
  assert (opt[0], pess[0]) == (2, 2)
  # (a, likes, c): b, d, e are known answers and filtered; a is closer: rank 2.
  assert (opt[1], pess[1]) == (2, 2)


def test_candidate_distances_are_what_ranking_sorts(rng):
  """``candidate_distances``: the squared distance of each query to every entity without
  entity biases (the activation plays no part)."""
  data = from_named_triples("tiny", SPLITS)
  params = random_params(rng, "RotE", data.num_entities, data.num_relations, 4, 1.0)
  heads, rels, _ = split_queries(data, "test")
  fn = jax.jit(ranking.candidate_distances, static_argnames=("model", "activation"))
  got = np.asarray(fn(params, "RotE", heads, rels, jax.nn.sigmoid))
  assert got.shape == (len(heads), data.num_entities)
  q = np_transform("RotE", params, heads, rels)
  want = np.sum((q[:, None, :] - np.asarray(params["entity"], np.float64)[None]) ** 2, axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_ranking_halves_its_chunk_when_out_of_device_memory(fake_model, monkeypatch):
  m = fake_model
  act = m.activation
  normal = Evaluator(m.data, "test", "RotL", 32, m.filter_index(), activation=act,
                     log=helpers.quiet)(m.params)
  calls, lines = [], []
  helpers.oom_after_compile(monkeypatch, 16, calls)
  ev = Evaluator(m.data, "test", "RotL", 32, m.filter_index(), activation=act,
                 log=lines.append)
  assert ev(m.params) == normal
  assert ev.chunk == 16 and calls == [32, 16]
  assert len(lines) == 1, lines
  assert "out of device memory with chunks of 32 queries; retrying with 16" in lines[0]
  assert "--eval_chunk" in lines[0]
  assert ev(m.params) == normal and calls == [32, 16, 16] and len(lines) == 1  # stays at 16


def test_ranking_gives_up_on_other_errors_and_at_chunk_one(fake_model, monkeypatch):
  m = fake_model
  calls, lines = [], []
  helpers.oom_after_compile(monkeypatch, 0, calls)
  ev = Evaluator(m.data, "valid", "RotL", 2, m.filter_index(), activation=m.activation,
                 log=lines.append)
  with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
    ev(m.params)
  assert calls == [2, 1] and len(lines) == 1


@pytest.mark.slow
def test_out_of_memory_during_training_retries_once_per_split(tracked, portable):
  said = [l for l in tracked.lines + tracked.stdout if "out of device memory" in l]
  assert sorted(l.split(":")[0] for l in said) == ["ranking test", "ranking valid"], said
  assert set(tracked.oom_calls) == {32, 16}
  # The same three epochs as the portable run, ranked in chunks of 16 instead of 256.
  want = portable[2]
  assert tracked.results["metrics"]["valid"] == want["metrics"]["valid"]
  assert tracked.results["metrics"]["test"] == want["metrics"]["test"]
  assert [c["valid_mrr"] for c in tracked.results["curve"]] == \
      [c["valid_mrr"] for c in want["curve"]]


@pytest.mark.slow
def test_out_of_memory_retry_is_in_the_runs_log(tracked):
  assert any("out of device memory" in l for l in tracked.lines), tracked.lines


@pytest.mark.parametrize("seed", [0, 1])
def test_filter_index_for_answers_held_out_queries_as_the_full_index(seed):
  # a dense little graph: duplicates, triples shared across splits, reciprocal collisions
  from hale_jax.data import FilterIndex, KGData
  rng = np.random.default_rng(seed)
  n, r = 12, 3
  def draw(count):
    return np.stack([rng.integers(0, n, count), rng.integers(0, r, count),
                     rng.integers(0, n, count)], axis=1).astype(np.int32)
  train = draw(300)
  valid = np.concatenate([draw(15), train[:3]])
  test = np.concatenate([draw(15), valid[:2], train[5:6]])
  data = KGData("g", tuple(f"e{i}" for i in range(n)), tuple(f"r{i}" for i in range(r)),
                train, valid, test)
  full = FilterIndex(data)
  every_e, every_r = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(2 * r)))
  for splits in (("valid", "test"), ("valid",), ("test",)):
    kept = ranking.filter_index_for(data, splits)
    assert kept.counts(every_e, every_r).sum() < full.counts(every_e, every_r).sum()
    for split in splits:
      heads, rels, _ = ranking._split_queries(data, split)
      np.testing.assert_array_equal(kept.counts(heads, rels), full.counts(heads, rels))
      for got, want in zip(kept.answers(heads, rels), full.answers(heads, rels)):
        np.testing.assert_array_equal(got, want)  # the same answers in the same order

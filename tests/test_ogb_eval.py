"""OGB's protocol (hale_jax.ogb_eval): ranks against the given negatives, checked against a
float64 NumPy transcription of OGB's Evaluator, with hand-made ties."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hale_jax import activations, ogb_eval
from hale_jax.data import KGData
from hale_jax.ranking import metrics_from_ranks
from reference import np_activation, np_biased_scores, np_transform, random_params

NAN = np.nan
jit_ranks = jax.jit(ogb_eval.ranks_against_negatives)


def ranks(d):
  opt, pess = jit_ranks(np.asarray(d, np.float32))
  return np.asarray(opt).tolist(), np.asarray(pess).tolist()


def test_hand_made_ties():
  # column 0 is the target; one negative closer (0.5), two tied (1.0), one farther
  assert ranks([[1.0, 1.0, 0.5, 1.0, 2.0]]) == ([2], [4])
  # all tied; strictly best; strictly worst
  assert ranks([[3, 3, 3, 3], [0, 1, 2, 3], [9, 1, 2, 3]]) == ([1, 1, 4], [4, 1, 4])
  # the positive among its own negatives ties with itself (OGB does not filter)
  assert ranks([[0.7, 0.7, 0.9]]) == ([1], [2])


def test_nan_target_ranks_last_and_nan_negatives_never_count():
  assert ranks([[NAN, 0.1, 0.2, 0.3]]) == ([4], [4])
  assert ranks([[0.5, NAN, NAN, 0.1]]) == ([2], [2])


def ogb_metrics(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
  """OGB's Evaluator(name="ogbl-wikikg2") on scores (higher is better), in float64: its
  ``_eval_mrr`` lists (optimistic = negatives scoring higher, pessimistic = at least as high,
  rank = 0.5 (optimistic + pessimistic) + 1), averaged as its wikikg2 example does."""
  pos = np.asarray(pos, np.float64).reshape(-1, 1)
  neg = np.asarray(neg, np.float64)
  optimistic = (neg > pos).sum(axis=1)
  pessimistic = (neg >= pos).sum(axis=1)
  rank = 0.5 * (optimistic + pessimistic) + 1
  return {"mrr": float(np.mean(1.0 / rank)), "hits@1": float(np.mean(rank <= 1)),
          "hits@3": float(np.mean(rank <= 3)), "hits@10": float(np.mean(rank <= 10)),
          "mr": float(np.mean(rank))}


def reference_scores(model, params, data, split, h=None):
  """``(positive [2n], negatives [2n, K])`` model scores in float64, tail queries then head
  queries: ``-||q - e||^2`` without entity biases, else ``b_h + b_t - h(c_r ||q - e||^2)``."""
  triples, nr, neg = data.split(split), data.num_relations, data.negatives[split]
  heads = np.concatenate([triples[:, 0], triples[:, 2]])
  rels = np.concatenate([triples[:, 1], triples[:, 1] + nr])
  targets = np.concatenate([triples[:, 2], triples[:, 0]])
  cands = np.concatenate([neg[:, 1], neg[:, 0]])
  if h is not None:
    return np_biased_scores(model, params, np.stack([heads, rels, targets], 1), cands, h)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  q = np_transform(model, p, heads, rels)
  ent = p["entity"]
  pos = -np.sum((q - ent[targets]) ** 2, axis=-1)
  return pos, -np.sum((q[:, None, :] - ent[cands]) ** 2, axis=-1)


def tiny_data(rng, n_entities=15, k=9) -> KGData:
  """A random graph with given negatives, some ties made by hand: the target among its own
  negatives, and an entity (1) whose embedding the test makes equal to entity 0's."""
  def triples(n):
    return np.stack([rng.integers(0, n_entities, n), rng.integers(0, 3, n),
                     rng.integers(0, n_entities, n)], axis=1).astype(np.int32)
  splits = {"train": triples(40), "valid": triples(6), "test": triples(9)}
  negatives = {s: rng.integers(0, n_entities, (len(splits[s]), 2, k)).astype(np.int32)
               for s in ("valid", "test")}
  test, neg = splits["test"], negatives["test"]
  test[0, 2], neg[0, 1, :3] = 0, [0, 1, 0]  # tail query 0: itself twice, its twin once
  test[1, 0], neg[1, 0, 4] = 0, 1  # head query of triple 1: its twin among the heads
  test[2, 2], neg[2, 1, :] = 5, 5  # every negative is the target itself
  return KGData("tiny", tuple(f"e{i}" for i in range(n_entities)), ("r0", "r1", "r2"),
                negatives=negatives, **splits)


@pytest.mark.parametrize("model, bias", [("TransE", "none"), ("RotL", "none"),
                                         ("DistMult", "tail")])
def test_metrics_are_ogbs_on_the_models_scores(rng, model, bias):
  data = tiny_data(rng)
  params = random_params(rng, model, data.num_entities, data.num_relations, 6, 0.7,
                         entity_bias=bias)
  params["entity"] = params["entity"].at[1].set(params["entity"][0])  # twins: exact ties
  h_np = h_jax = None
  if bias != "none":
    params["bias_tail"] = params["bias_tail"].at[1].set(params["bias_tail"][0])
    h_np, h_jax = np_activation("hanon"), activations.get_activation("hanon", None, 10.0)
  ev = ogb_eval.OgbEvaluator(data, "test", model, chunk=4, activation=h_jax)
  assert ev.num_queries == 2 * len(data.test)
  opt, pess = ev.ranks(params)
  got = ev(params)
  assert got == metrics_from_ranks(opt, pess)
  pos, neg = reference_scores(model, params, data, "test", h_np)
  want = ogb_metrics(pos, neg)
  for key, value in want.items():
    assert got["realistic"][key] == pytest.approx(value, rel=1e-12), key
  # the hand-made ties: each negative that is the target (0) or its twin (1) ties with it
  neg, n = data.negatives["test"], len(data.test)
  assert pess[0] - opt[0] == np.isin(neg[0, 1], [0, 1]).sum() >= 3
  assert pess[n + 1] - opt[n + 1] == np.isin(neg[1, 0], [0, 1]).sum() >= 1
  assert (opt[2], pess[2]) == (1, 10)  # all nine negatives are the target
  assert got["optimistic"]["mrr"] >= got["realistic"]["mrr"] >= got["pessimistic"]["mrr"]


def test_blocks_and_padding_do_not_change_the_ranks(rng, monkeypatch):
  data = tiny_data(rng)
  params = random_params(rng, "RotE", data.num_entities, data.num_relations, 4, 1.0)
  whole = ogb_eval.OgbEvaluator(data, "valid", "RotE", chunk=64).ranks(params)
  monkeypatch.setattr(ogb_eval, "CHUNKS_PER_CALL", 2)
  ev = ogb_eval.OgbEvaluator(data, "valid", "RotE", chunk=2)  # 12 queries in blocks of 4
  assert ev.compile(params) >= 0
  for got, want in zip(ev.ranks(params), whole):
    np.testing.assert_array_equal(got, want)
  groups = ev.breakdown(params, "direction")
  assert groups["tail"]["count"] == groups["head"]["count"] == len(data.valid)
  by_relation = ev.breakdown(params, "relation")
  assert sum(g["count"] for g in by_relation.values()) == 2 * len(data.valid)


def test_the_protocol_needs_given_negatives(rng):
  data = tiny_data(rng)
  plain = KGData("plain", data.entities, data.relations, data.train, data.valid, data.test)
  with pytest.raises(ValueError) as err:
    ogb_eval.make_evaluator("ogb", plain, "test", "TransE")
  message = str(err.value)
  assert "\n" not in message and "plain ships none" in message
  assert "--eval_protocol=filtered" in message
  with pytest.raises(ValueError, match="unknown evaluation protocol"):
    ogb_eval.check_protocol("sampled", data)
  assert isinstance(ogb_eval.make_evaluator("filtered", data, "test", "TransE"),
                    ogb_eval.Evaluator)

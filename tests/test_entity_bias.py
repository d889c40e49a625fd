"""KGEmb's learned entity biases (``--bias``): the baselines' loss, ranking and inference.

References are float64 NumPy; the negatives are drawn with the same key the loss uses (that
is the sampling, not the arithmetic under test).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import activations, checkpoints, evaluation, inference, models, train
from hale_jax.data import from_named_triples
from test_baselines import np_advneg, np_allneg, np_samneg
from test_evaluation import SPLITS, np_ranks
from test_losses import np_activation
from test_models import np_softplus, np_transform, random_params

N, R2, D, B, M = 15, 6, 8, 10, 7


def _biased_params(rng, model):
  params = dict(random_params(rng, model, N, R2, D, init_scale=0.3))
  params["bias_head"] = jnp.asarray(rng.normal(0, 1.0, N), jnp.float32)
  params["bias_tail"] = jnp.asarray(rng.normal(0, 1.0, N), jnp.float32)
  return params


def _batch(rng):
  return np.stack([rng.integers(0, N, B), rng.integers(0, R2, B), rng.integers(0, N, B)], axis=1)


def np_biased_scores(model, params, batch, candidates, h):
  """``[B]`` positive and ``[B, C]`` candidate scores ``b_h + b_t - h(c_r ||q - e||^2)``."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  heads, rels, tails = batch[:, 0], batch[:, 1], batch[:, 2]
  q = np_transform(model, p, heads, rels)
  c = np_softplus(p["scale"][rels])
  ent = p["entity"]
  pos = p["bias_head"][heads] + p["bias_tail"][tails] - h(c * np.sum((q - ent[tails]) ** 2, -1))
  d = np.sum((q[:, None, :] - ent[candidates]) ** 2, axis=-1)
  cand = p["bias_head"][heads][:, None] + p["bias_tail"][candidates] - h(c[:, None] * d)
  return pos, cand


@pytest.mark.parametrize("loss,model,act", [
    ("samneg", "RotE", "identity"), ("samneg", "RotL", "hanon"), ("advneg", "TransE", "identity"),
    ("allneg", "DistMult", "hanon")])
def test_biased_baseline_loss_matches_numpy(rng, loss, model, act):
  params = _biased_params(rng, model)
  batch = _batch(rng)
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  margin = 0.5
  got = train.batch_loss(params, jnp.asarray(batch, jnp.int32), key,
                         model=models.canonical_model(model),
                         activation=activations.get_activation(act), lam=0.3, num_sampled=3,
                         loss=loss, num_negatives=M, margin=margin, adv_temperature=0.7)
  h = np_activation(act)
  if loss == "allneg":
    pos, cand = np_biased_scores(model, params, batch, np.arange(N)[None, :], h)
    want = np_allneg(cand, batch[:, 2])[0]
  else:
    negs = np.asarray(jax.random.randint(key, (B, M), 0, N))
    pos, cand = np_biased_scores(model, params, batch, negs, h)
    want = (np_samneg(pos, cand, margin) if loss == "samneg"
            else np_advneg(pos, cand, 0.7, margin))[0]
  np.testing.assert_allclose(float(got), want, rtol=2e-5)


def test_biases_get_gradients_and_check_grads(rng, x64):
  params = {k: jnp.asarray(v, jnp.float64) for k, v in _biased_params(rng, "RotE").items()}
  batch = jnp.asarray(_batch(rng), jnp.int32)
  loss = functools.partial(train.batch_loss, batch=batch, key=jax.random.PRNGKey(3),
                           model="rote", activation=activations.get_activation("hanon"), lam=0.3,
                           num_sampled=3, loss="samneg", num_negatives=M)
  grads = jax.grad(loss)(params)
  heads, tails = np.asarray(batch[:, 0]), np.asarray(batch[:, 2])
  # a head bias moves only with the heads of the batch: the others get exactly 0
  untouched = np.setdiff1d(np.arange(N), heads)
  np.testing.assert_array_equal(np.asarray(grads["bias_head"])[untouched], 0.0)
  assert np.all(np.asarray(grads["bias_head"])[heads] != 0.0)
  assert np.any(np.asarray(grads["bias_tail"])[tails] != 0.0)
  bias_only = lambda bh, bt: loss({**params, "bias_head": bh, "bias_tail": bt})  # noqa: E731
  check_grads(bias_only, (params["bias_head"], params["bias_tail"]), order=1, modes=("rev",),
              eps=1e-6)


def test_ranking_distances_with_and_without_bias(rng):
  params = _biased_params(rng, "RotL")
  heads, rels = rng.integers(0, N, B), rng.integers(0, R2, B)
  q = models.transform("RotL", params, heads, rels)
  h = np_activation("hanon")
  got = np.asarray(models.ranking_distances(params, q, rels, activations.get_activation("hanon")))
  _, cand = np_biased_scores("RotL", params, np.stack([heads, rels, heads], 1),
                             np.arange(N)[None, :], h)
  head_bias = np.asarray(params["bias_head"], np.float64)[heads][:, None]
  np.testing.assert_allclose(got, head_bias - cand, rtol=1e-5, atol=1e-5)
  plain = {k: v for k, v in params.items() if not k.startswith("bias_")}
  np.testing.assert_allclose(np.asarray(models.ranking_distances(plain, q, rels)),
                             np.asarray(models.squared_distances(q, params["entity"])))


def test_tail_bias_decides_a_hand_made_ranking():
  """Three candidates at squared distances 1, 4, 9 from the query; a tail bias of 5 on the
  farthest lifts it to first place (9 - 5 = 4 - 0 would tie with the middle one: 5.5 is used to
  make it strict), and equal biases change nothing."""
  data = from_named_triples("line", {"train": [("a", "r", "b"), ("a", "r", "c")],
                                     "valid": [("a", "r", "d")], "test": [("a", "r", "d")]})
  e = {n: i for i, n in enumerate(data.entities)}
  params = dict(models.init_params(jax.random.PRNGKey(0), "TransE", 4, 2, 1, 1.0,
                                   entity_bias=True))
  pos = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
  params["entity"] = jnp.asarray([[pos[n]] for n in data.entities], jnp.float32)
  params["translation"] = jnp.zeros((2, 1), jnp.float32)
  identity = activations.get_activation("identity")
  ev = evaluation.Evaluator(data, "test", "TransE", chunk=2, activation=identity)
  # (a, r, d): unfiltered competitors are a (distance 0) only; b, c are known answers
  assert ev.ranks(params)[0][0] == 2
  params["bias_tail"] = params["bias_tail"].at[e["d"]].set(9.5)  # 9 - 9.5 < 0 - 0
  assert ev.ranks(params)[0][0] == 1
  params["bias_tail"] = jnp.full((4,), 3.0, jnp.float32)
  assert ev.ranks(params)[0][0] == 2
  # ties: 9 - 9 == 0 - 0 gives optimistic 1, pessimistic 2
  params["bias_tail"] = jnp.zeros((4,), jnp.float32).at[e["d"]].set(9.0)
  opt, pess = ev.ranks(params)
  assert (opt[0], pess[0]) == (1, 2)


def test_evaluator_with_bias_matches_brute_force(rng):
  data = from_named_triples("tiny", SPLITS)
  params = dict(models.init_params(jax.random.PRNGKey(int(rng.integers(2**31))), "RotE",
                                   data.num_entities, 2 * data.num_relations, 4, 1.0,
                                   entity_bias=True))
  params["bias_tail"] = jnp.asarray(rng.normal(0, 2.0, data.num_entities), jnp.float32)
  params["scale"] = jnp.asarray(rng.normal(0, 0.5, 2 * data.num_relations), jnp.float32)
  act = "halin"
  ev = evaluation.Evaluator(data, "test", "RotE", chunk=4,
                            activation=activations.get_activation(act))
  opt, pess = ev.ranks(params)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  nr = data.num_relations
  known = {}
  for h_, r_, t_ in np.concatenate([data.train, data.valid, data.test]):
    known.setdefault((h_, r_), set()).add(t_)
    known.setdefault((t_, r_ + nr), set()).add(h_)
  queries = [(h_, r_, t_) for h_, r_, t_ in data.test] + [(t_, r_ + nr, h_)
                                                          for h_, r_, t_ in data.test]
  heads, rels, targets = (np.array([q[i] for q in queries]) for i in range(3))
  q = np_transform("RotE", p, heads, rels)
  d = np.sum((q[:, None, :] - p["entity"][None]) ** 2, axis=-1)
  score = np_activation(act)(np_softplus(p["scale"][rels])[:, None] * d) - p["bias_tail"][None]
  want_opt, want_pess = np_ranks(score, targets, [known[(h_, r_)] - {t_} for h_, r_, t_ in queries])
  np.testing.assert_array_equal(opt, want_opt)
  np.testing.assert_array_equal(pess, want_pess)


def test_config_bias_modes():
  assert train.uses_entity_bias(train.Config(loss="samneg"))
  assert train.uses_entity_bias(train.Config(loss="advneg"))
  assert not train.uses_entity_bias(train.Config(loss="hale"))
  assert not train.uses_entity_bias(train.Config(loss="allneg"))
  assert train.uses_entity_bias(train.Config(loss="allneg", bias="learn"))
  assert not train.uses_entity_bias(train.Config(loss="samneg", bias="none"))
  with pytest.raises(ValueError, match="bias=learn applies"):
    train.Config(loss="nonneg", bias="learn").validate()
  with pytest.raises(ValueError, match="unknown bias"):
    train.Config(bias="constant").validate()


def test_older_runs_without_the_bias_field_still_resume():
  old = {"config": {"loss": "hale", "model": "RotL"}, "vocab_sha256": "x"}
  new = {"config": {"loss": "hale", "model": "RotL", "bias": "auto"}, "vocab_sha256": "x"}
  assert checkpoints.mismatch(old, new) == []
  old_samneg = {"config": {"loss": "samneg", "model": "RotL"}, "vocab_sha256": "x"}
  new_samneg = {"config": {"loss": "samneg", "model": "RotL", "bias": "auto"}, "vocab_sha256": "x"}
  assert checkpoints.mismatch(old_samneg, new_samneg) != []  # it would now learn biases


def test_samneg_run_learns_biases_and_ranks_with_them(tmp_path):
  """A short SamNeg run end to end: the biases are trained, saved, and used by evaluate_run
  and top_k exactly as by the training-time evaluator."""
  from hale_jax import synthetic  # pylint: disable=import-outside-toplevel
  data = synthetic.generate()
  cfg = train.Config(model="RotE", dim=8, loss="samneg", activation="identity", batch_size=64,
                     num_negatives=8, max_epochs=3, max_seconds=0, eval_every=3,
                     learning_rate=0.01, checkpoint_every_seconds=0)
  spec = {"kind": "synthetic"}
  results = train.train(cfg, data, tmp_path / "run", log=lambda s: None, data_spec=spec)
  run, data2, params = inference.load_run(tmp_path / "run")
  assert np.any(np.asarray(params["bias_tail"]) != 0.0)
  again = inference.evaluate_run(tmp_path / "run", "test")
  assert again["realistic"]["mrr"] == pytest.approx(results["metrics"]["test"]["realistic"]["mrr"],
                                                    rel=1e-6)
  name = data2.entities[int(data2.test[0, 0])]
  rel = data2.relations[int(data2.test[0, 1])]
  top = inference.top_k(params, "RotE", data2, head=name, relation=rel, k=5, filtered=False,
                        activation=inference.run_activation(run))
  d = np.asarray(inference.query_distances(params, jnp.array([int(data2.test[0, 0])]),
                                           jnp.array([int(data2.test[0, 1])]), model="rote",
                                           activation=inference.run_activation(run)))[0]
  assert [n for n, _ in top] == [data2.entities[i] for i in np.argsort(d, kind="stable")[:5]]

  # export: the biases go out per entity, never cut to the relation count
  out = inference.export_run(tmp_path / "run", "tsv", tmp_path / "tsv")
  lines = (out / "entities_bias_tail.tsv").read_text().splitlines()
  assert len(lines) == data2.num_entities
  name0, value0 = lines[0].split("\t")
  assert name0 == data2.entities[0]
  assert float(value0) == pytest.approx(float(params["bias_tail"][0]), rel=1e-6)
  assert not list(out.glob("relations_bias*"))
  npz = np.load(inference.export_run(tmp_path / "run", "npz", tmp_path / "e.npz"))
  np.testing.assert_array_equal(npz["bias_head"], np.asarray(params["bias_head"]))

"""KGEmb's learned entity biases (``--bias``): the baselines' loss, ranking and inference.

References are float64 NumPy (``reference.np_biased_scores``); the negatives are drawn with the
same key the loss uses (that is the sampling, not the arithmetic under test).  HaLE's tail
biases are tested in test_tail_bias.py.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from hale_jax import (activations, config, distances, ranking, inference, models, objective,
                      trained_model)
from hale_jax.data import from_named_triples
from reference import (SPLITS, known_answers, np_activation, np_advneg, np_allneg,
                       np_biased_scores, np_ranks, np_samneg, np_softplus, np_transform,
                       random_batch, random_params, seeded_rng, split_queries)

N, NR, D, B, M = 15, 3, 8, 10, 7
R2 = 2 * NR


def _biased_params(rng, model, dtype=None):
  """Random parameters with KGEmb's head and tail biases ``N(0, 1)``."""
  return random_params(rng, model, N, NR, D, init_scale=0.3, dtype=dtype,
                       entity_bias="head_tail")


def _loss(loss, model, act, **kw):
  cfg = config.Config.make(model=model, loss=loss, activation=act, num_negatives=M,
                           batch_size=B, alpha=0.3, **kw)
  return objective.make_loss(cfg.objective, model, cfg.num_sampled)


def _check_biased_baseline(test, loss, model, act):
  rng = seeded_rng(test.id())
  params = _biased_params(rng, model)
  batch = random_batch(rng, N, NR, B)
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  margin = 0.5
  fn = test.variant(_loss(loss, model, act, margin=margin, adv_temperature=0.7))
  got = fn(params, jnp.asarray(batch), key)
  chex.assert_shape(got, ())
  h = np_activation(act)
  if loss == "allneg":  # b_h is the same for every candidate: the softmax ignores it
    _, cand = np_biased_scores(model, params, batch, np.arange(N)[None, :], h)
    want = np_allneg(cand, batch[:, 2])[0]
  else:
    negs = np.asarray(jax.random.randint(key, (B, M), 0, N))
    pos, cand = np_biased_scores(model, params, batch, negs, h)
    want = (np_samneg(pos, cand, margin) if loss == "samneg"
            else np_advneg(pos, cand, 0.7, margin))[0]
  chex.assert_trees_all_close(got, want, rtol=2e-5)


class BiasedBaselineTest(chex.TestCase):
  """KGEmb's SamNeg with entity biases through ``objective.make_loss``, jitted and not (the
  eager variant in the slow tier)."""

  @chex.variants(with_jit=True)
  def test_biased_samneg_matches_numpy(self):
    _check_biased_baseline(self, "samneg", "RotE", "identity")


@pytest.mark.slow
class EagerBiasedBaselineTest(chex.TestCase):

  @chex.variants(without_jit=True)
  def test_biased_samneg_matches_numpy(self):
    _check_biased_baseline(self, "samneg", "RotE", "identity")


@pytest.mark.slow
class MoreBiasedBaselinesTest(chex.TestCase):
  """HA + SamNeg on RotL, AdvNeg and AllNeg (tail biases only), with entity biases."""

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(
      ("samneg_RotL_hanon", "samneg", "RotL", "hanon"),
      ("allneg_DistMult_hanon", "allneg", "DistMult", "hanon"),
      ("advneg_TransE_identity", "advneg", "TransE", "identity"))
  def test_biased_baseline_loss_matches_numpy(self, loss, model, act):
    _check_biased_baseline(self, loss, model, act)


@pytest.mark.slow
def test_biases_get_gradients_and_check_grads(rng, x64):
  params = _biased_params(rng, "RotE", jnp.float64)
  batch = jnp.asarray(random_batch(rng, N, NR, B))
  samneg = _loss("samneg", "RotE", "hanon")
  loss = jax.jit(lambda p: samneg(p, batch, jax.random.PRNGKey(3)))
  check_grads(loss, (params,), order=1, modes=("rev",), eps=1e-6)
  grads = jax.grad(loss)(params)  # reuses check_grads' compilations
  heads, tails = np.asarray(batch[:, 0]), np.asarray(batch[:, 2])
  # a head bias moves only with the heads of the batch: the others get exactly 0
  untouched = np.setdiff1d(np.arange(N), heads)
  np.testing.assert_array_equal(np.asarray(grads["bias_head"])[untouched], 0.0)
  assert np.all(np.asarray(grads["bias_head"])[heads] != 0.0)
  assert np.any(np.asarray(grads["bias_tail"])[tails] != 0.0)


def test_ranking_distances_with_and_without_bias(rng):
  params = _biased_params(rng, "RotL")
  heads, rels = rng.integers(0, N, B), rng.integers(0, R2, B)
  q = jax.jit(models.transform, static_argnums=0)("RotL", params, heads, rels)
  h = np_activation("hanon")
  ranking = jax.jit(models.ranking_distances, static_argnums=3)
  got = np.asarray(ranking(params, q, rels, activations.get_activation("hanon")))
  _, cand = np_biased_scores("RotL", params, np.stack([heads, rels, heads], 1),
                             np.arange(N)[None, :], h)
  head_bias = np.asarray(params["bias_head"], np.float64)[heads][:, None]
  np.testing.assert_allclose(got, head_bias - cand, rtol=1e-5, atol=1e-5)
  plain = {k: v for k, v in params.items() if not k.startswith("bias_")}
  np.testing.assert_allclose(np.asarray(ranking(plain, q, rels, None)),
                             np.asarray(distances.squared_distances(q, params["entity"])), rtol=1e-6)


def test_tail_bias_decides_a_hand_made_ranking():
  """Three candidates at squared distances 1, 4, 9 from the query; a tail bias of 5 on the
  farthest lifts it to first place (9 - 5 = 4 - 0 would tie with the middle one: 5.5 is used to
  make it strict), and equal biases change nothing."""
  data = from_named_triples("line", {"train": [("a", "r", "b"), ("a", "r", "c")],
                                     "valid": [("a", "r", "d")], "test": [("a", "r", "d")]})
  e = {n: i for i, n in enumerate(data.entities)}
  params = random_params(np.random.default_rng(0), "TransE", 4, data.num_relations, 1,
                         entity_bias="tail")
  pos = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
  params["entity"] = jnp.asarray([[pos[n]] for n in data.entities], jnp.float32)
  params["translation"] = jnp.zeros((2, 1), jnp.float32)
  params["scale"] = jnp.full((2,), np.log(np.expm1(1.0)), jnp.float32)  # c_r = 1
  params["bias_tail"] = jnp.zeros((4,), jnp.float32)
  identity = activations.get_activation("identity")
  ev = ranking.Evaluator(data, "test", "TransE", chunk=2, activation=identity)
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
  params = random_params(rng, "RotE", data.num_entities, data.num_relations, 4, 1.0,
                         entity_bias="tail")
  params["bias_tail"] = jnp.asarray(rng.normal(0, 2.0, data.num_entities), jnp.float32)
  act = "halin"
  ev = ranking.Evaluator(data, "test", "RotE", chunk=4,
                            activation=activations.get_activation(act))
  opt, pess = ev.ranks(params)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  heads, rels, targets = split_queries(data, "test")
  q = np_transform("RotE", p, heads, rels)
  d = np.sum((q[:, None, :] - p["entity"][None]) ** 2, axis=-1)
  score = np_activation(act)(np_softplus(p["scale"][rels])[:, None] * d) - p["bias_tail"][None]
  known = known_answers(data)
  filt = [known[(h, r)] - {t} for h, r, t in zip(heads, rels, targets)]
  want_opt, want_pess = np_ranks(score, targets, filt)
  np.testing.assert_array_equal(opt, want_opt)
  np.testing.assert_array_equal(pess, want_pess)


def test_config_bias_modes():
  """Which tables a run learns (``objective.bias_tables``): KGEmb's b_h and b_t for samneg and
  advneg by default; b_t alone for the losses that rank a query's tails against each other."""
  want = {("samneg", "auto"): "head_tail", ("advneg", "auto"): "head_tail",
          ("samneg", "learn"): "head_tail", ("advneg", "learn"): "head_tail",
          ("samneg", "none"): "none", ("advneg", "none"): "none",
          ("hale", "auto"): "none", ("allneg", "auto"): "none", ("nonneg", "auto"): "none",
          ("hale", "learn"): "tail", ("allneg", "learn"): "tail",
          ("hale", "none"): "none", ("allneg", "none"): "none", ("nonneg", "none"): "none"}
  for (loss, bias), tables in want.items():
    cfg = config.Config.make(loss=loss, bias=bias)
    assert objective.bias_tables(cfg.objective.loss, cfg.objective.bias) == tables, (loss, bias)
  assert objective.BIAS_MODES == ("auto", "learn", "none")
  with pytest.raises(ValueError, match="bias=learn applies"):
    config.Config.make(loss="nonneg", bias="learn")
  with pytest.raises(ValueError, match="unknown bias"):
    config.Config.make(bias="constant")


@pytest.mark.slow
def test_samneg_run_learns_biases_and_ranks_with_them(tmp_path):
  """A short SamNeg run end to end: the biases are trained, saved, and used by
  ``TrainedModel.evaluate`` and ``predict_tails`` exactly as by the training-time evaluator."""
  from hale_jax import synthetic  # pylint: disable=import-outside-toplevel
  from hale_jax.loop import train  # pylint: disable=import-outside-toplevel
  data = synthetic.generate()
  cfg = config.Config.make(model="RotE", dim=8, loss="samneg", activation="identity",
                           batch_size=64, num_negatives=8, max_epochs=3, max_seconds=0,
                           eval_every=3, learning_rate=0.01, checkpoint_every_seconds=0)
  spec = {"kind": "synthetic"}
  results = train(cfg, data, tmp_path / "run", log=lambda s: None, data_spec=spec)
  model = trained_model.load(tmp_path / "run")
  data2, params = model.data, model.params
  assert sorted(k for k in params if k.startswith("bias")) == ["bias_head", "bias_tail"]
  assert np.any(np.asarray(params["bias_tail"]) != 0.0)
  assert np.any(np.asarray(params["bias_head"]) != 0.0)
  again = model.evaluate("test")
  assert again["realistic"]["mrr"] == pytest.approx(results["metrics"]["test"]["realistic"]["mrr"],
                                                    rel=1e-6)
  name = data2.entities[int(data2.test[0, 0])]
  rel = data2.relations[int(data2.test[0, 1])]
  h = model.activation
  top = [(a.name, a.distance) for a in model.predict_tails(name, rel, k=5, filtered=False)[0]]
  d = np.asarray(ranking.candidate_distances(params, "rote", jnp.array([int(data2.test[0, 0])]),
                                                jnp.array([int(data2.test[0, 1])]), h))[0]
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

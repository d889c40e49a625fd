"""hale_jax.objective: each training loss of a batch of triples against float64 NumPy.

``make_loss(cfg.objective, model, k)`` gives ``loss(params, batch [B, 3], key)``; the references
transform the heads with ``reference.np_transform`` and score with the paper's formulas.
Entity biases are tested in test_entity_bias.py (baselines) and test_tail_bias.py (HaLE).
"""

from __future__ import annotations

import dataclasses
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import config, objective, step
from reference import (np_activation, np_advneg, np_allneg, np_batch_loss, np_biased_scores,
                       np_nonneg, np_samneg, np_scaled_distances, random_batch, random_params,
                       rel_err, seeded_rng)

# One set of sizes: N entities, NR = |R| relations, D dimensions, B queries, K sampled queries.
N, NR, D, B = 20, 3, 8, 12
ALPHA = 0.25  # k = ceil(0.25 * 12) = 3
K = 3
M = 7  # samneg/advneg negatives per query


def _config(**kw) -> config.Config:
  return config.Config.make(**{"batch_size": B, "alpha": ALPHA, "num_negatives": M,
                               "max_epochs": 1, "max_seconds": 0, **kw})


def _loss(cfg: config.Config, uniformity=None):
  return objective.make_loss(cfg.objective, cfg.model.model, cfg.num_sampled, uniformity)


def np_objective(cfg: config.Config, params, batch, key):
  """The float64 value of ``cfg``'s loss on ``batch`` (unbiased parameters)."""
  o = cfg.objective
  h = np_activation(o.activation, o.beta, o.gamma)
  model = cfg.model.model
  if o.loss == "hale":
    return np_batch_loss(model, params, batch, h, o.lam, cfg.num_sampled, o.pos_square,
                         o.rel_scale)
  if o.loss == "allneg":
    _, scores = np_biased_scores(model, params, batch, np.arange(N)[None, :], h, o.rel_scale)
    return np_allneg(scores, batch[:, 2])[0]
  if o.loss == "nonneg":
    pos, _ = np_scaled_distances(model, params, batch, o.rel_scale)
    return np_nonneg(-h(pos), params["entity"], o.nonneg_weight)[0]
  # the same negatives as the loss draws from its key (the sampling, not the arithmetic)
  negs = np.asarray(jax.random.randint(key, (B, o.num_negatives), 0, N))
  pos, neg = np_biased_scores(model, params, batch, negs, h, o.rel_scale)
  if o.loss == "samneg":
    return np_samneg(pos, neg, o.margin)[0]
  return np_advneg(pos, neg, o.adv_temperature, o.margin)[0]


# loss -> (model, settings): every loss once, spread over the models, the plain ("identity")
# and hardness-aware activations, and the loss-specific settings.
LOSS_CASES = {
    "hale": ("RotL", dict(activation="hanon", lam=0.7)),
    "samneg": ("RotE", dict(activation="identity", margin=2.0, bias="none")),
    "advneg": ("TransE", dict(activation="hanon", adv_temperature=0.5, margin=1.0,
                              bias="none")),
    "allneg": ("DistMult", dict(activation="halin", beta=4.0, gamma=6.0)),
    "nonneg": ("RotatE", dict(activation="identity", nonneg_weight=0.3, rel_scale=False)),
}


def _check_loss(loss, variant, seed_name):
  rng = seeded_rng(seed_name)
  model, settings = LOSS_CASES[loss]
  cfg = _config(model=model, loss=loss, **settings)
  params = random_params(rng, model, N, NR, D, init_scale=0.2)
  batch = jnp.asarray(random_batch(rng, N, NR, B))
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  got = variant(_loss(cfg))(params, batch, key)
  chex.assert_shape(got, ())
  chex.assert_type(got, jnp.float32)
  chex.assert_trees_all_close(got, np_objective(cfg, params, batch, key), rtol=2e-5)


# The sampled-negative losses (their PRNG draw compiles slowly) in the slow tier; the quick tier
# has SamNeg with entity biases in test_entity_bias.py.
@pytest.mark.parametrize("loss", [n if n not in ("samneg", "advneg")
                                  else pytest.param(n, marks=pytest.mark.slow)
                                  for n in LOSS_CASES])
def test_each_loss_matches_numpy(request, loss):
  """Every loss of ``objective.LOSSES`` through ``make_loss``, jitted as training runs it (the
  losses themselves are also checked eagerly in test_losses.py and test_baselines.py)."""
  _check_loss(loss, jax.jit, request.node.nodeid)


def test_registry():
  assert tuple(objective.BUILDERS) == objective.LOSSES == tuple(LOSS_CASES)
  assert set(objective.PAPER_LOSSES) - set(objective.BIASED_LOSSES) == {"nonneg"}
  assert set(objective.BIASED_LOSSES) <= set(objective.LOSSES)
  cfg = _config()
  bogus = types.SimpleNamespace(**{**dataclasses.asdict(cfg.objective), "loss": "bogus"})
  with pytest.raises(ValueError, match="unknown loss 'bogus'"):
    objective.make_loss(bogus, "RotL", 3)
  with pytest.raises(ValueError, match="unknown model"):
    objective.make_loss(cfg.objective, "MuRP", 3)
  assert cfg.num_sampled == K


# HaLE on every model (the transform is the only model-specific part of the loss), with
# PosSquare on and off, c_r learned or fixed, and each activation.
@pytest.mark.parametrize("model,activation,pos_square,rel_scale", [
    ("TransE", "hanon", True, True),
    pytest.param("DistMult", "halin", True, False, marks=pytest.mark.slow),
    pytest.param("RotatE", "hanon", False, True, marks=pytest.mark.slow),
    pytest.param("RotE", "linear2x", False, True, marks=pytest.mark.slow),
    pytest.param("RotL", "xexp", True, False, marks=pytest.mark.slow)])
def test_hale_matches_numpy_on_every_model(rng, model, activation, pos_square, rel_scale):
  lam = float(rng.uniform(0.1, 1.0))
  cfg = _config(model=model, activation=activation, lam=lam, pos_square=pos_square,
                rel_scale=rel_scale)
  # init_scale 0.2 keeps c_r ||.||^2 in the range where every activation is still informative
  params = random_params(rng, model, N, NR, D, init_scale=0.2)
  batch = jnp.asarray(random_batch(rng, N, NR, B))
  loss = jax.jit(_loss(cfg))
  got = loss(params, batch, None)
  want = np_batch_loss(model, params, batch, np_activation(activation), lam, K, pos_square,
                       rel_scale)
  np.testing.assert_allclose(float(got), want, rtol=2e-5)
  # HaLE samples nothing: the key plays no part
  assert float(loss(params, batch, jax.random.PRNGKey(5))) == float(got)


def test_score_batch(rng):
  params = random_params(rng, "RotE", N, NR, D, init_scale=0.3)
  batch = random_batch(rng, N, NR, B)
  for rel_scale in (True, False):
    s = jax.jit(objective.score_batch, static_argnums=(2, 3))(params, batch, "rote", rel_scale)
    pos, _ = np_scaled_distances("RotE", params, batch, rel_scale)
    np.testing.assert_allclose(np.asarray(s.pos), pos, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(s.heads), batch[:, 0])
    np.testing.assert_array_equal(np.asarray(s.tails), batch[:, 2])
    chex.assert_shape([s.pos, s.scale], (B,))
    chex.assert_shape(s.queries, (B, D))
    assert s.pos_bias is None and s.entity_bias is None
  np.testing.assert_array_equal(np.asarray(s.scale), 1.0)  # c_r = 1 without rel_scale


# ----------------------------------------------------------------------------------------------
# The uniformity term: plain or chunked.


@pytest.mark.parametrize("model,activation,rel_scale",
                         [pytest.param("RotL", "hanon", True, marks=pytest.mark.slow),
                          ("TransE", "xexp", False)])
def test_chunked_hale_matches_plain(rng, model, activation, rel_scale):
  """The chunked uniformity LSE gives the plain loss's value and gradients (N = 45 entities in
  chunks of 16: the last chunk overlaps the previous one)."""
  n = 45
  cfg = _config(model=model, activation=activation, rel_scale=rel_scale, lse_chunk=16)
  params = random_params(rng, model, n, NR, D, init_scale=0.2)
  batch = jnp.asarray(random_batch(rng, n, NR, B))
  chunked_fn, form = objective.choose_uniformity(cfg.objective, n, allow_chunks=True)
  assert form == "chunks of 16"
  plain = jax.jit(jax.value_and_grad(_loss(cfg)))
  fused = jax.jit(jax.value_and_grad(_loss(cfg, chunked_fn)))
  (v_plain, g_plain), (v_chunk, g_chunk) = plain(params, batch, None), fused(params, batch, None)
  assert rel_err(v_chunk, v_plain) < 1e-5
  assert g_chunk.keys() == g_plain.keys() == params.keys()
  for key in g_plain:
    assert rel_err(g_chunk[key], g_plain[key]) < 1e-5, key


@pytest.mark.slow
def test_chunked_hale_check_grads_float64(rng, x64):
  """The custom VJP of the chunked LSE, seen through the whole objective, against finite
  differences (float64)."""
  n = 21
  cfg = _config(model="RotE", lse_chunk=8)
  params = random_params(rng, "RotE", n, NR, D, init_scale=0.3, dtype=jnp.float64)
  batch = jnp.asarray(random_batch(rng, n, NR, B))
  uniformity, form = objective.choose_uniformity(cfg.objective, n, allow_chunks=True)
  assert form == "chunks of 8"
  loss = jax.jit(lambda p: _loss(cfg, uniformity)(p, batch, None))
  assert loss(params).dtype == jnp.float64
  check_grads(loss, (params,), order=1, modes=("rev",), eps=1e-6)
  np.testing.assert_allclose(float(loss(params)),
                             np_batch_loss("RotE", params, batch, np_activation("hanon"), 0.3, K),
                             rtol=1e-12)


def test_default_lse_chunk_per_backend():
  """None means 4096 on CPU and 65536 on GPU/TPU; an explicit chunk is kept (0: all at once)."""
  assert objective.default_lse_chunk("cpu") == 4096
  assert objective.default_lse_chunk("gpu") == objective.default_lse_chunk("tpu") == 65536
  assert objective.default_lse_chunk() == objective.default_lse_chunk(jax.default_backend())
  assert objective.effective_lse_chunk(None) == objective.default_lse_chunk()
  assert objective.effective_lse_chunk(7) == 7
  assert objective.effective_lse_chunk(0) == 0
  assert _config().objective.lse_chunk is None


def test_choose_uniformity_forms_and_compiled_loop(rng):
  """Chunks only when allowed and ``0 < chunk < N``; otherwise the plain ``[k, N]`` form, whose
  compiled step has no loop."""
  n = 40
  forms = {(chunk, allow): objective.choose_uniformity(_config(lse_chunk=chunk).objective, n,
                                                       allow)[1]
           for chunk in (None, 0, 10, n, 10 * n) for allow in (True, False)}
  assert forms == {**{(c, a): "plain" for c in (None, 0, 10, n, 10 * n) for a in (True, False)},
                   (10, True): "chunks of 10"}
  if jax.default_backend() != "gpu":  # the fused kernel runs on a GPU only; elsewhere: chunks
    fused = _config(lse="fused", lse_chunk=10).objective
    assert objective.choose_uniformity(fused, n, True)[1] == "chunks of 10"
    assert objective.choose_uniformity(fused, n, False)[1] == "plain"
  params = random_params(rng, "RotL", n, NR, D, init_scale=0.2)
  batch = jnp.asarray(random_batch(rng, n, NR, B))

  def hlo(chunk, allow=True):
    loss, form = step.make_loss(_config(lse_chunk=chunk), n, allow_chunks=allow)
    return form, jax.jit(jax.grad(loss)).lower(params, batch, None).as_text()

  for chunk in (0, n):
    form, text = hlo(chunk)
    assert form == "plain" and "while" not in text
  form, text = hlo(n // 4)
  assert form == "chunks of 10" and "while" in text
  form, text = hlo(n // 4, allow=False)
  assert form == "plain" and "while" not in text

"""HaLE with learned tail biases (hale_jax.losses, "Tail biases") against float64 NumPy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import activations, chunked, losses, models, train
from test_chunked import rel_err
from test_losses import FD_EPS, np_activation, np_logsumexp
from test_models import random_params


def np_hale_loss_biased(pos, sampled, pos_bias, entity_bias, h, lam, pos_square=True):
  hp = h(pos)
  alignment = np.mean(hp * hp) if pos_square else np.mean(hp)
  uniformity = np.mean(np_logsumexp(entity_bias[None, :] - h(sampled), axis=-1))
  return lam * alignment - np.mean(pos_bias) + uniformity


def _biased_inputs(rng, b, k, n):
  return (rng.uniform(0.0, 3.0, b), rng.uniform(0.0, 3.0, (k, n)), rng.normal(0.0, 1.0, b),
          rng.normal(0.0, 1.0, n))


@pytest.mark.parametrize("pos_square", [True, False])
@pytest.mark.parametrize("name", ["hanon", "halin", "identity"])
def test_biased_hale_loss_matches_numpy(rng, x64, name, pos_square):
  pos, sampled, pb, eb = _biased_inputs(rng, 9, 3, 13)
  lam = float(rng.uniform(0.1, 2.0))
  h = activations.get_activation(name)
  got = losses.hale_loss(*map(jnp.asarray, (pos, sampled)), h, lam, pos_square,
                         jnp.asarray(pb), jnp.asarray(eb))
  want = np_hale_loss_biased(pos, sampled, pb, eb, np_activation(name), lam, pos_square)
  np.testing.assert_allclose(float(got), want, rtol=1e-12)


def test_biased_hale_loss_gradients_float64(rng, x64):
  pos, sampled, pb, eb = map(jnp.asarray, _biased_inputs(rng, 6, 2, 7))
  h = activations.get_activation("hanon")
  f = lambda *a: losses.hale_loss(a[0], a[1], h, 0.7, True, a[2], a[3])  # noqa: E731
  check_grads(f, (pos, sampled, pb, eb), order=1, modes=("rev",), eps=FD_EPS)
  # The biases' gradient: -1/B per positive occurrence + the mean softmax over sampled queries.
  g_eb = jax.grad(f, argnums=3)(pos, sampled, pb, eb)
  scores = np.asarray(eb)[None, :] - np_activation("hanon")(np.asarray(sampled))
  softmax = np.exp(scores - np_logsumexp(scores, axis=-1)[:, None])
  np.testing.assert_allclose(np.asarray(g_eb), softmax.mean(axis=0), rtol=1e-10)
  np.testing.assert_allclose(np.asarray(jax.grad(f, argnums=2)(pos, sampled, pb, eb)),
                             np.full(6, -1 / 6), rtol=1e-12)


def test_zero_biases_give_the_paper_loss(rng):
  pos, sampled, _, _ = _biased_inputs(rng, 5, 2, 8)
  h = activations.get_activation("hanon")
  pos, sampled = jnp.asarray(pos, jnp.float32), jnp.asarray(sampled, jnp.float32)
  plain = losses.hale_loss(pos, sampled, h, 0.3)
  zero = losses.hale_loss(pos, sampled, h, 0.3, True, jnp.zeros(5), jnp.zeros(8))
  assert float(plain) == float(zero)


def test_bias_arguments_come_in_pairs(rng):
  h = activations.get_activation("hanon")
  with pytest.raises(ValueError, match="both"):
    losses.hale_loss(jnp.ones(3), jnp.ones((2, 4)), h, 0.3, True, jnp.zeros(3), None)
  with pytest.raises(ValueError, match="both"):
    chunked.hale_loss_chunked(jnp.ones(3), jnp.ones((2, 4)), jnp.ones(2), jnp.ones((5, 4)), h,
                              0.3, 2, True, "float32", None, jnp.zeros(5))
  with pytest.raises(ValueError, match="bias"):
    chunked.uniformity_lse(jnp.ones((2, 4)), jnp.ones(2), jnp.ones((5, 4)), h, 2,
                           bias=jnp.zeros(4))


@pytest.mark.parametrize("n,chunk", [(37, 8), (23, 64), (13, 1), (29, 29)])
def test_chunked_biased_lse_matches_numpy_and_check_grads(rng, x64, n, chunk):
  k, d = 3, 4
  q = jnp.asarray(rng.normal(0.0, 0.3, (k, d)))
  s = jnp.asarray(rng.uniform(0.5, 1.5, k))
  e = jnp.asarray(rng.normal(0.0, 0.3, (n, d)))
  b = jnp.asarray(rng.normal(0.0, 1.0, n))
  h = activations.get_activation("hanon")
  got = chunked.uniformity_lse(q, s, e, h, chunk, bias=b)
  d2 = np.sum((np.asarray(q)[:, None] - np.asarray(e)[None]) ** 2, axis=-1)
  want = np_logsumexp(np.asarray(b)[None] - np_activation("hanon")(np.asarray(s)[:, None] * d2))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
  weights = jnp.asarray(rng.normal(size=k))
  f = jax.jit(lambda q, s, e, b: jnp.dot(weights, chunked.uniformity_lse(q, s, e, h, chunk,
                                                                         bias=b)))
  check_grads(f, (q, s, e, b), order=1, modes=("rev",), eps=FD_EPS)


@pytest.mark.parametrize("model", ["TransE", "RotL"])
def test_batch_loss_with_tail_biases_chunked_matches_plain(rng, model):
  n, r2, d, b, k = 45, 6, 8, 12, 3
  params = random_params(rng, model, n, r2, d, init_scale=0.2)
  params = {key: jnp.asarray(v, jnp.float32) for key, v in params.items()}
  params["bias_head"] = jnp.asarray(rng.normal(size=n), jnp.float32)
  params["bias_tail"] = jnp.asarray(rng.normal(size=n), jnp.float32)
  batch = jnp.asarray(np.stack([rng.integers(0, n, b), rng.integers(0, r2, b),
                                rng.integers(0, n, b)], axis=1), jnp.int32)
  kw = dict(model=models.canonical_model(model), activation=activations.get_activation("hanon"),
            lam=0.3, num_sampled=k)
  plain = jax.jit(jax.value_and_grad(functools.partial(train.batch_loss, **kw)))
  fused = jax.jit(jax.value_and_grad(functools.partial(train.batch_loss, lse_chunk=16, **kw)))
  (v_plain, g_plain), (v_chunk, g_chunk) = plain(params, batch), fused(params, batch)
  assert rel_err(v_chunk, v_plain) < 1e-5
  for key in g_plain:
    assert rel_err(g_chunk[key], g_plain[key]) < 1e-5, key
  # The biases enter the loss: b_t of the batch's tails and b of every entity; b_h does not.
  assert float(jnp.abs(g_plain["bias_tail"]).sum()) > 0
  assert float(jnp.abs(g_plain["bias_head"]).sum()) == 0
  no_bias = {key: v for key, v in params.items() if not key.startswith("bias")}
  assert abs(float(v_plain) - float(plain(no_bias, batch)[0])) > 1e-3


def test_config_accepts_bias_learn_for_hale_only_where_defined():
  train.Config(loss="hale", bias="learn", max_epochs=1).validate()
  assert train.uses_entity_bias(train.Config(loss="hale", bias="learn"))
  assert not train.uses_entity_bias(train.Config(loss="hale"))  # auto: the paper's loss
  with pytest.raises(ValueError, match="bias"):
    train.Config(loss="nonneg", bias="learn", max_epochs=1).validate()


def test_biased_hale_run_on_a_mesh_matches_one_device(tmp_path):
  """A short HaLE + tail-bias run end to end: the biases train, rank, and come out the same on
  8 devices (entity rows padded) as on one."""
  from test_mesh_training import _config, _graph, _same_metrics, _same_params  # pylint: disable=import-outside-toplevel
  runs = {}
  with jax.enable_x64(True):
    for mesh in ("none", "data:1,model:8"):
      cfg = _config(model="TransE", bias="learn", mesh=mesh)
      runs[mesh] = train.train(cfg, _graph(), tmp_path / mesh.replace(":", "_"),
                               log=lambda s: None)
  _same_metrics(runs["data:1,model:8"], runs["none"])
  _same_params(tmp_path / "data_1,model_8", tmp_path / "none")
  with np.load(tmp_path / "none" / "best_params.npz") as p:
    assert np.any(p["bias_tail"] != 0.0) and "bias_head" not in p.files  # HaLE never reads b_h


def test_only_losses_that_read_the_head_bias_get_one():
  for loss, bias, tables in [("hale", "learn", ["bias_tail"]), ("allneg", "learn", ["bias_tail"]),
                             ("samneg", "auto", ["bias_head", "bias_tail"]),
                             ("advneg", "learn", ["bias_head", "bias_tail"]), ("hale", "auto", [])]:
    cfg = train.Config(model="TransE", dim=4, loss=loss, bias=bias)
    state = jax.eval_shape(train.init_fn(cfg, 10, 4))
    assert sorted(k for k in state.params if k.startswith("bias")) == tables, (loss, bias)
    assert train.uses_head_bias(cfg) == ("bias_head" in tables)


def test_resume_drops_the_unused_head_bias_of_an_older_checkpoint(tmp_path, monkeypatch):
  """Runs of HaLE with tail biases checkpointed before 2026-11-28 held a bias_head table of
  zeros (and its Adam moments).  Resuming one drops it and goes on as the new layout would."""
  from test_mesh_training import _config, _graph, _same_metrics, _same_params  # pylint: disable=import-outside-toplevel
  cfg = _config(model="TransE", bias="learn")
  calls = []

  def stop_after_two():
    calls.append(None)
    return "test stop" if len(calls) == 2 else None

  with jax.enable_x64(True):
    reference = train.train(cfg, _graph(), tmp_path / "new", log=lambda s: None)
    with monkeypatch.context() as patch:  # the old layout: init also made bias_head
      patch.setattr(train, "uses_head_bias", lambda config: True)
      with pytest.raises(train.Interrupted):
        train.train(cfg, _graph(), tmp_path / "old", log=lambda s: None,
                    should_stop=stop_after_two)
    lines = []
    res = train.train(cfg, _graph(), tmp_path / "old", log=lines.append)
  assert any("unused bias_head" in line for line in lines), lines
  assert any("resumed from" in line and "epoch 2" in line for line in lines), lines
  assert res["timings"]["resumed"] and res["metrics"]["epochs"] == 3
  _same_metrics(res, reference)  # b_h was zeros with zero gradient: dropping it changes nothing
  with np.load(tmp_path / "old" / "best_params.npz") as p:
    assert "bias_head" not in p.files
  _same_params(tmp_path / "old", tmp_path / "new")

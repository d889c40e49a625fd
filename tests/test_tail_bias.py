"""HaLE with learned tail biases (hale_jax.losses, "Tail biases") against float64 NumPy."""

from __future__ import annotations

import functools
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from hale_jax import activations, chunked, config, losses, objective, step
from reference import (FD_EPS, np_activation, np_batch_loss, np_hale_loss, np_logsumexp,
                       np_uniformity_lse, random_batch, random_params, rel_err, seeded_rng)


def _biased_inputs(rng, b, k, n):
  return (rng.uniform(0.0, 3.0, b), rng.uniform(0.0, 3.0, (k, n)), rng.normal(0.0, 1.0, b),
          rng.normal(0.0, 1.0, n))


CASES = (("hanon_square", "hanon", True), ("halin_plain", "halin", False),
         ("identity_square", "identity", True))


class BiasedHaleLossTest(chex.TestCase):
  """hale_loss with tail biases, jitted and not (the eager variant in the slow tier), against
  NumPy in float64."""

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_biased_hale_loss_matches_numpy(self, name, pos_square):
    _check_biased_hale_loss(self, name, pos_square)


@pytest.mark.slow
class EagerBiasedHaleLossTest(chex.TestCase):

  @chex.variants(without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_biased_hale_loss_matches_numpy(self, name, pos_square):
    _check_biased_hale_loss(self, name, pos_square)


def _check_biased_hale_loss(test, name, pos_square):
  rng = seeded_rng(test.id())
  pos, sampled, pb, eb = _biased_inputs(rng, 9, 3, 13)
  lam = float(rng.uniform(0.1, 2.0))
  h = activations.get_activation(name)
  with jax.enable_x64(True):
    fn = test.variant(functools.partial(losses.hale_loss, activation=h, lam=lam,
                                        pos_square=pos_square))
    got = fn(*map(jnp.asarray, (pos, sampled)), pos_bias=jnp.asarray(pb),
             entity_bias=jnp.asarray(eb))
    chex.assert_type(got, jnp.float64)
  want = np_hale_loss(pos, sampled, np_activation(name), lam, pos_square, pb, eb)
  chex.assert_trees_all_close(got, want, rtol=1e-12)


def test_biased_hale_loss_gradients_float64(rng, x64):
  pos, sampled, pb, eb = map(jnp.asarray, _biased_inputs(rng, 6, 2, 7))
  h = activations.get_activation("hanon")
  f = jax.jit(lambda *a: losses.hale_loss(a[0], a[1], h, 0.7, True, a[2], a[3]))
  check_grads(f, (pos, sampled, pb, eb), order=1, modes=("rev",), eps=FD_EPS)
  # The biases' gradient: -1/B per positive occurrence + the mean softmax over sampled queries.
  _, _, g_pb, g_eb = jax.grad(f, argnums=(0, 1, 2, 3))(pos, sampled, pb, eb)
  scores = np.asarray(eb)[None, :] - np_activation("hanon")(np.asarray(sampled))
  softmax = np.exp(scores - np_logsumexp(scores, axis=-1)[:, None])
  np.testing.assert_allclose(np.asarray(g_eb), softmax.mean(axis=0), rtol=1e-10)
  np.testing.assert_allclose(np.asarray(g_pb), np.full(6, -1 / 6), rtol=1e-12)


def test_zero_biases_give_the_paper_loss(rng):
  pos, sampled, _, _ = _biased_inputs(rng, 5, 2, 8)
  h = activations.get_activation("hanon")
  pos, sampled = jnp.asarray(pos, jnp.float32), jnp.asarray(sampled, jnp.float32)
  loss = jax.jit(functools.partial(losses.hale_loss, activation=h, lam=0.3))
  plain = loss(pos, sampled)
  zero = loss(pos, sampled, pos_bias=jnp.zeros(5), entity_bias=jnp.zeros(8))
  assert float(plain) == float(zero)


def test_bias_arguments_come_in_pairs():
  h = activations.get_activation("hanon")
  with pytest.raises(ValueError, match="both"):
    losses.hale_loss(jnp.ones(3), jnp.ones((2, 4)), h, 0.3, True, jnp.zeros(3), None)
  with pytest.raises(ValueError, match="both"):
    losses.hale_loss(jnp.ones(3), jnp.ones((2, 4)), h, 0.3, True, None, jnp.zeros(4))
  with pytest.raises(ValueError, match="bias"):
    chunked.uniformity_lse(jnp.ones((2, 4)), jnp.ones(2), jnp.ones((5, 4)), h, 2,
                           entity_bias=jnp.zeros(4))


@pytest.mark.parametrize("n,chunk", [(37, 8)] + [pytest.param(n, c, marks=pytest.mark.slow)
                                                  for n, c in [(23, 64), (13, 1), (29, 29)]])
def test_chunked_biased_lse_matches_numpy_and_check_grads(rng, x64, n, chunk):
  k, d = 3, 4
  q = jnp.asarray(rng.normal(0.0, 0.3, (k, d)))
  s = jnp.asarray(rng.uniform(0.5, 1.5, k))
  e = jnp.asarray(rng.normal(0.0, 0.3, (n, d)))
  b = jnp.asarray(rng.normal(0.0, 1.0, n))
  h = activations.get_activation("hanon")
  weights = jnp.asarray(rng.normal(size=k))
  lse = jax.jit(lambda q, s, e, b: chunked.uniformity_lse(q, s, e, h, chunk, entity_bias=b))
  np.testing.assert_allclose(np.asarray(lse(q, s, e, b)),
                             np_uniformity_lse(q, s, e, np_activation("hanon"), b), rtol=1e-10)
  f = jax.jit(lambda q, s, e, b: jnp.dot(weights, lse(q, s, e, b)))
  check_grads(f, (q, s, e, b), order=1, modes=("rev",), eps=FD_EPS)


def _biased_problem(rng, model):
  n, nr, d, b = 45, 3, 8, 12
  params = random_params(rng, model, n, nr, d, init_scale=0.2, entity_bias="head_tail")
  batch = jnp.asarray(random_batch(rng, n, nr, b))
  cfg = config.Config.make(model=model, lse_chunk=16, batch_size=b, alpha=0.25)
  return params, batch, cfg, n


@pytest.mark.parametrize("model", ["TransE", pytest.param("RotL", marks=pytest.mark.slow)])
def test_objective_with_tail_biases_matches_numpy(rng, model):
  """HaLE's objective on parameters with tail biases has the value of the NumPy reference; the
  biases enter the loss (b_t of the batch's tails and b of every entity), a head bias table,
  if any, does not."""
  params, batch, cfg, _ = _biased_problem(rng, model)
  k = cfg.num_sampled
  value, grads = jax.jit(jax.value_and_grad(objective.make_loss(cfg.objective, model, k)))(
      params, batch, None)
  want = np_batch_loss(model, params, batch, np_activation("hanon"), 0.3, k)
  np.testing.assert_allclose(float(value), want, rtol=2e-5)
  no_bias = {key: v for key, v in params.items() if not key.startswith("bias")}
  unbiased = np_batch_loss(model, no_bias, batch, np_activation("hanon"), 0.3, k)
  assert abs(want - unbiased) > 1e-3  # the biases matter here, so the comparison is sharp
  assert float(jnp.abs(grads["bias_tail"]).sum()) > 0
  assert float(jnp.abs(grads["bias_head"]).sum()) == 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["TransE"])  # RotL's chunked loss: test_objective.py
def test_objective_with_tail_biases_chunked_matches_plain(rng, model):
  """The same value and gradients with the chunked uniformity term (N = 45, chunks of 16)."""
  params, batch, cfg, n = _biased_problem(rng, model)
  k = cfg.num_sampled
  uniformity, form = objective.choose_uniformity(cfg.objective, n, allow_chunks=True)
  assert form == "chunks of 16"
  plain = jax.jit(jax.value_and_grad(objective.make_loss(cfg.objective, model, k)))
  fused = jax.jit(jax.value_and_grad(objective.make_loss(cfg.objective, model, k, uniformity)))
  (v_plain, g_plain), (v_chunk, g_chunk) = plain(params, batch, None), fused(params, batch, None)
  assert rel_err(v_chunk, v_plain) < 1e-5
  assert g_chunk.keys() == g_plain.keys()
  for key in g_plain:
    assert rel_err(g_chunk[key], g_plain[key]) < 1e-5, key


def test_config_accepts_bias_learn_for_hale_only_where_defined():
  cfg = config.Config.make(loss="hale", bias="learn", max_epochs=1)
  assert objective.bias_tables(cfg.objective.loss, cfg.objective.bias) == "tail"
  assert objective.bias_tables("hale", "auto") == "none"  # auto: the paper's loss
  with pytest.raises(ValueError, match="bias"):
    config.Config.make(loss="nonneg", bias="learn", max_epochs=1)


def test_only_losses_that_read_the_head_bias_get_one():
  for loss, bias, tables in [("hale", "learn", ["bias_tail"]), ("allneg", "learn", ["bias_tail"]),
                             ("samneg", "auto", ["bias_head", "bias_tail"]),
                             ("advneg", "learn", ["bias_head", "bias_tail"]), ("hale", "auto", [])]:
    cfg = config.Config.make(model="TransE", dim=4, loss=loss, bias=bias)
    state = jax.eval_shape(step.init_fn(cfg, 10, 2))
    assert sorted(k for k in state.params if k.startswith("bias")) == tables, (loss, bias)
    assert (objective.bias_tables(loss, bias) == "head_tail") == ("bias_head" in tables)
    for name in tables:
      assert state.params[name].shape == (10,)


# ----------------------------------------------------------------------------------------------
# End to end on a mesh (float64: training amplifies rounding, so only float64 tells a layout
# bug from summation order).

RTOL = 1e-5


def _assert_rel_close(actual, expected, what=""):
  a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert a.shape == b.shape, (what, a.shape, b.shape)
  err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
  assert err <= RTOL, f"{what}: relative error {err:.3g} > {RTOL}"


@pytest.mark.slow
def test_biased_hale_run_on_a_mesh_matches_one_device(tmp_path):
  """A short HaLE + tail-bias run end to end: the biases train, rank, and come out the same on
  8 devices (entity rows padded) as on one."""
  from hale_jax import synthetic  # pylint: disable=import-outside-toplevel
  from hale_jax.loop import train  # pylint: disable=import-outside-toplevel
  graph = synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)
  runs = {}
  with jax.enable_x64(True):
    for mesh in ("none", "data:1,model:8"):
      cfg = config.Config.make(model="TransE", dim=16, batch_size=64, lse_chunk=0, max_epochs=3,
                               max_seconds=0, eval_every=1, learning_rate=0.01, dtype="float64",
                               bias="learn", mesh=mesh)
      runs[mesh] = train(cfg, graph, tmp_path / mesh.replace(":", "_"), log=lambda s: None)
  one, many = runs["none"], runs["data:1,model:8"]
  assert many["layout"]["mesh"] == "data:1,model:8" and one["layout"]["mesh"] is None
  assert many["metrics"]["best_epoch"] == one["metrics"]["best_epoch"]
  for split in ("valid", "test"):
    for mode, m in many["metrics"][split].items():
      for key, value in m.items():
        assert value == pytest.approx(one["metrics"][split][mode][key], rel=1e-6), (split, mode)
  np.testing.assert_allclose([c["loss"] for c in many["curve"]],
                             [c["loss"] for c in one["curve"]], rtol=RTOL)
  with np.load(Path(tmp_path) / "data_1,model_8" / "best_params.npz") as pa, \
       np.load(Path(tmp_path) / "none" / "best_params.npz") as pb:
    assert sorted(pa.files) == sorted(pb.files)
    for k in pa.files:
      _assert_rel_close(pa[k], pb[k], what=k)
    assert np.any(pb["bias_tail"] != 0.0) and "bias_head" not in pb.files  # HaLE never reads b_h

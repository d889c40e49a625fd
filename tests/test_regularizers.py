"""The training levers that are off by default: N3/L2 penalties and query dropout
(hale_jax.regularizers, wired in hale_jax.objective), the parameter average and the warm-up
(hale_jax.optim), and a run that uses them all (validated on the average; resumed equal)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from hale_jax import config, objective, optim, regularizers, step, synthetic
from hale_jax.data import with_reciprocals
from hale_jax.layout import Layout
from hale_jax.loop import Interrupted, train
from hale_jax.mesh import single_device_mesh
from hale_jax.program import Program
from tests import helpers
from reference import (np_activation, np_hale_loss, np_model_distance2, np_softplus,
                       np_transform, random_batch, random_params, to_f64)

N, NR, D, B, K = 20, 3, 8, 12, 3


def _np_penalty(power, heads, tails):
  heads, tails = np.asarray(heads, np.float64), np.asarray(tails, np.float64)
  return np.sum(np.abs(heads) ** power + np.abs(tails) ** power, axis=-1)


@pytest.mark.parametrize("name,power", [("n3", 3), ("l2", 2)])
def test_penalty_against_numpy_and_its_gradient(name, power, rng, x64):
  heads, tails = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
  got = regularizers.penalty_terms(name, heads, tails)
  np.testing.assert_allclose(got, _np_penalty(power, heads, tails), rtol=1e-13)
  grad = jax.grad(lambda h: jnp.sum(regularizers.penalty_terms(name, h, tails)))(heads)
  np.testing.assert_allclose(grad, power * np.abs(heads) ** (power - 1) * np.sign(heads),
                             rtol=1e-12)
  check_grads(lambda h, t: regularizers.penalty_terms(name, h, t), (heads, tails), order=2)
  np.testing.assert_array_equal(regularizers.penalty_terms("none", heads, tails), np.zeros(7))


def test_penalty_refuses_unknown_names_and_shapes():
  with pytest.raises(ValueError, match="unknown regularizer 'n2'; choose one of none, n3, l2"):
    regularizers.penalty_terms("n2", np.ones((2, 3)), np.ones((2, 3)))
  with pytest.raises(ValueError, match=r"must both be \[B, d\]"):
    regularizers.penalty_terms("n3", np.ones((2, 3)), np.ones((3, 3)))


def test_dropout_zeroes_at_its_rate_and_rescales_the_rest(rng):
  x = rng.normal(size=(400, 50)).astype(np.float32)
  np.testing.assert_array_equal(regularizers.dropout(jax.random.PRNGKey(0), x, 0.0), x)
  y = np.asarray(regularizers.dropout(jax.random.PRNGKey(1), x, 0.3))
  kept = y != 0
  assert abs(1 - kept.mean() - 0.3) < 0.01  # 20,000 draws: the share's std is 0.0032
  np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
  other = np.asarray(regularizers.dropout(jax.random.PRNGKey(2), x, 0.3)) != 0
  assert (kept != other).any()
  with pytest.raises(ValueError, match=r"dropout rate must lie in \[0, 1\)"):
    regularizers.dropout(jax.random.PRNGKey(0), x, 1.0)


def _config(**kw) -> config.Config:
  return config.Config.make(**{"model": "RotE", "batch_size": B, "alpha": 0.25, "dim": D,
                               "max_epochs": 1, "max_seconds": 0, **kw})


def _loss(cfg):
  return objective.make_loss(cfg.objective, cfg.model.model, cfg.num_sampled)


def test_hale_with_n3_and_query_dropout_against_numpy(rng, x64):
  """The loss with both levers on: queries dropped with the documented draw (the step key
  folded with 1), then Eq. 9 in float64, plus weight * mean N3 of each query's rows."""
  cfg = _config(regularizer="n3", reg_weight=0.07, query_dropout=0.25, dtype="float64")
  params = random_params(rng, "RotE", N, NR, D, dtype=jnp.float64)
  batch = random_batch(rng, N, NR, B)
  key = jax.random.PRNGKey(int(rng.integers(1 << 30)))
  p = to_f64(params)
  heads, rels, tails = batch[:, 0], batch[:, 1], batch[:, 2]
  keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, 1), 0.75, (B, D)))
  q = np.where(keep, np_transform("RotE", params, heads, rels) / 0.75, 0.0)
  c = np_softplus(p["scale"][rels])
  ent = p["entity"]
  pos = c * np_model_distance2(p, q, ent[tails], None)
  every = c[:, None] * np_model_distance2(p, q[:, None, :], ent[None], None)
  want = (np_hale_loss(pos, every[:K], np_activation("hanon"), 0.3)
          + 0.07 * np.mean(_np_penalty(3, ent[heads], ent[tails])))
  got = _loss(cfg)(params, jnp.asarray(batch), key)
  np.testing.assert_allclose(float(got), want, rtol=1e-10)
  # Without a key (a loss evaluated outside training) nothing is dropped.
  plain = _loss(cfg.replace(query_dropout=0.0))(params, jnp.asarray(batch), None)
  np.testing.assert_allclose(float(_loss(cfg)(params, jnp.asarray(batch), None)), float(plain),
                             rtol=1e-14)


def test_query_dropout_leaves_samneg_negatives_as_they_were(rng):
  """The dropout's draw is the key folded with 1: samneg's negatives, drawn from the key itself,
  are the same with and without it, so at rate -> 0 the losses agree."""
  cfg = _config(loss="samneg", num_negatives=5)
  params = random_params(rng, "RotE", N, NR, D)
  batch, key = jnp.asarray(random_batch(rng, N, NR, B)), jax.random.PRNGKey(3)
  tiny = _loss(cfg.replace(query_dropout=1e-9))(params, batch, key)
  np.testing.assert_allclose(float(tiny), float(_loss(cfg)(params, batch, key)), rtol=1e-6)
  assert float(_loss(cfg.replace(query_dropout=0.5))(params, batch, key)) != float(tiny)


def test_levers_off_leave_the_loss_function_itself(rng):
  base = _config()
  assert objective.query_noise(base.objective, jax.random.PRNGKey(0)) is None
  loss = _loss(base)
  assert objective.regularized(loss, "n3", 0.0) is loss
  assert objective.regularized(loss, "none", 0.5) is loss


@pytest.mark.parametrize("kw,message", [
    (dict(ema_decay=1.0), r"--ema_decay must lie in \[0, 1\)"),
    (dict(query_dropout=1.0), r"--query_dropout must lie in \[0, 1\)"),
    (dict(reg_weight=-0.1), "--reg_weight must be >= 0"),
    (dict(warmup_epochs=-1), "--warmup_epochs must be >= 0"),
    (dict(regularizer="dura"), "unknown regularizer 'dura'"),
    (dict(model="AttH", query_dropout=0.1), "--query_dropout applies to the Euclidean models"),
])
def test_bad_lever_settings_are_clear_errors(kw, message):
  with pytest.raises(ValueError, match=message):
    _config(**kw)


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_parameter_average_against_numpy(inner, rng, x64):
  decay = float(rng.uniform(0.5, 0.99))
  base = optax.sgd(0.1) if inner == "sgd" else optax.adam(0.05)
  tx = optim.parameter_average(base, decay)
  params = {"a": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.asarray(rng.normal(size=5))}
  state, plain_state = tx.init(params), base.init(params)
  average = {k: np.asarray(v, np.float64) for k, v in params.items()}
  plain = dict(params)
  for _ in range(6):
    grads = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
    updates, state = tx.update(grads, state, params)
    plain_updates, plain_state = base.update(grads, plain_state, plain)
    for k in params:  # the updates are the wrapped optimiser's
      np.testing.assert_array_equal(updates[k], plain_updates[k])
    params = optax.apply_updates(params, updates)
    plain = optax.apply_updates(plain, plain_updates)
    average = {k: decay * average[k] + (1 - decay) * np.asarray(params[k]) for k in params}
  got = optim.averaged_params(state)
  for k in params:
    np.testing.assert_allclose(got[k], average[k], rtol=1e-13)
    assert not np.allclose(got[k], params[k])


def test_averaged_params_found_inside_injected_hyperparams():
  params = {"w": jnp.ones(3)}
  assert optim.averaged_params(optim.make_optimizer("adam", 0.1).init(params)) is None
  scheduled = optim.make_optimizer("adam", 0.1, "cosine", ema_decay=0.9).init(params)
  assert "learning_rate" in scheduled.hyperparams
  np.testing.assert_array_equal(optim.averaged_params(scheduled)["w"], np.ones(3))
  warm = optim.make_optimizer("adagrad", 0.1, warmup_epochs=2).init(params)
  assert "learning_rate" in warm.hyperparams  # a warm-up needs the injected rate
  with pytest.raises(ValueError, match="needs the parameters"):
    optim.parameter_average(optax.sgd(0.1), 0.9).update(params, warm, None)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_warmup_rises_linearly_then_follows_the_schedule(schedule):
  for epoch in range(12):
    scheduled = optim.learning_rate_at(schedule, 0.2, epoch, 0.0, max_epochs=12)
    warmed = optim.learning_rate_at(schedule, 0.2, epoch, 0.0, max_epochs=12, warmup_epochs=3)
    factor = (epoch + 1) / 4 if epoch < 3 else 1.0
    assert warmed == pytest.approx(factor * scheduled, rel=1e-15)
  assert optim.learning_rate_at("constant", 0.2, 0, 0.0, max_epochs=12, warmup_epochs=3) == 0.05


# --------------------------------------------------------------------------------- runs

def _quiet(line):
  del line


@pytest.fixture(scope="module")
def graph():
  return synthetic.generate(seed=5, num_trees=2, branching=3, depth=3)


def _run_config(**kw):
  return config.Config.make(**{
      "model": "RotE", "dim": 8, "batch_size": 64, "max_epochs": 4, "max_seconds": 0,
      "eval_every": 1, "learning_rate": 0.02, "checkpoint_every_seconds": 0, "mesh": "none",
      "ema_decay": 0.9, "warmup_epochs": 2, "regularizer": "n3", "reg_weight": 0.01,
      "query_dropout": 0.1, **kw})


@pytest.mark.slow
def test_a_run_validates_the_average(graph, tmp_path):
  """One epoch, one validation: the parameters kept as best are the optimiser's average after
  that epoch (the same epoch run by the program directly), not the trained parameters."""
  cfg = _run_config(max_epochs=1)
  train(cfg, graph, tmp_path / "run", log=_quiet)
  layout = Layout(single_device_mesh(), graph.num_entities)
  program = Program.build(cfg, layout, graph.num_relations)
  queries = with_reciprocals(graph.train, graph.num_relations).astype(np.int32)
  epoch, _ = program.epoch(queries.shape[0])
  state = step.set_learning_rate(program.init_state(), step.learning_rate_at(cfg, 0, 0.0))
  state, _ = epoch(state, layout.place_training_set(queries))
  average = step.evaluated_params(state)
  with np.load(tmp_path / "run" / "best_params.npz") as best:
    for name in best.files:
      np.testing.assert_allclose(best[name], average[name], rtol=1e-6, atol=1e-7)
    assert not np.allclose(best["entity"], state.params["entity"])


@pytest.mark.slow
def test_a_run_with_every_lever_resumes_equal(graph, tmp_path):
  cfg = _run_config()
  whole = train(cfg, graph, tmp_path / "whole", log=_quiet)
  with pytest.raises(Interrupted):
    train(cfg, graph, tmp_path / "cut", log=_quiet, should_stop=helpers.stop_after(2))
  again = train(cfg, graph, tmp_path / "cut", log=_quiet)
  assert again["timings"]["resumed"] is True
  assert [c["learning_rate"] for c in again["curve"]] == [c["learning_rate"]
                                                         for c in whole["curve"]]
  assert [c["learning_rate"] for c in whole["curve"]][:3] == pytest.approx([0.02 / 3, 0.04 / 3,
                                                                            0.02])
  assert again["metrics"] == whole["metrics"]

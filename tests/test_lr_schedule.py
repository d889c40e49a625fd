"""The learning-rate schedule: its formula, that the optimiser really uses the rate set between
epochs, and a scheduled run end to end (one device and an 8-device mesh, with a resume)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import optim, step, synthetic
from hale_jax.config import Config
from hale_jax.data import with_reciprocals
from hale_jax.layout import Layout
from hale_jax.program import Program
from hale_jax.loop import Interrupted, train
from hale_jax.mesh import single_device_mesh
from tests import helpers


def _quiet(line):
  del line


@pytest.fixture(scope="module")
def small_graph():
  return synthetic.generate(seed=3, num_trees=2, branching=3, depth=3)


def _config(**kw) -> Config:
  base = dict(model="RotE", dim=8, batch_size=64, max_epochs=6, max_seconds=0, eval_every=2,
              learning_rate=0.02, lr_schedule="cosine", checkpoint_every_seconds=0, mesh="none")
  base.update(kw)
  return Config.make(**base)


def _reference_cosine(lr, p):
  return lr * 0.5 * (1.0 + np.cos(np.pi * min(p, 1.0)))


def test_cosine_against_formula_on_random_budgets(rng):
  for _ in range(50):
    max_epochs = int(rng.integers(0, 50))
    max_seconds = float(rng.choice([0.0, rng.uniform(1, 100)]))
    if not max_epochs and not max_seconds:
      max_epochs = 7
    lr = float(rng.uniform(1e-4, 1e-1))
    cfg = _config(max_epochs=max_epochs, max_seconds=max_seconds, learning_rate=lr)
    epoch, seconds = int(rng.integers(0, 60)), float(rng.uniform(0, 120))
    fractions = ([epoch / max_epochs] if max_epochs else []) + (
        [seconds / max_seconds] if max_seconds else [])
    want = _reference_cosine(lr, max(fractions))
    got = step.learning_rate_at(cfg, epoch, seconds)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert got == optim.learning_rate_at("cosine", lr, epoch, seconds, max_epochs, max_seconds)


def test_cosine_hand_values_and_constant():
  cfg = _config(max_epochs=10, learning_rate=0.4)
  assert step.learning_rate_at(cfg, 0, 0.0) == pytest.approx(0.4)
  assert step.learning_rate_at(cfg, 5, 0.0) == pytest.approx(0.2)
  assert step.learning_rate_at(cfg, 10, 0.0) == pytest.approx(0.0, abs=1e-15)
  timed = _config(max_epochs=0, max_seconds=8.0, learning_rate=0.4)
  assert step.learning_rate_at(timed, 3, 2.0) == pytest.approx(
      0.4 * 0.5 * (1 + math.cos(math.pi / 4)))
  both = _config(max_epochs=4, max_seconds=100.0, learning_rate=0.4)  # the epochs end first
  assert step.learning_rate_at(both, 2, 1.0) == pytest.approx(0.2)
  const = _config(lr_schedule="constant", learning_rate=0.3)
  assert step.learning_rate_at(const, 5, 5.0) == 0.3


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown lr_schedule 'step'; choose one of constant, cosine"):
    _config(lr_schedule="step")
  with pytest.raises(ValueError, match="unknown lr_schedule 'step'; choose one of constant, cosine"):
    optim.learning_rate_at("step", 0.1, 0, 0.0, max_epochs=3)
  with pytest.raises(ValueError, match="unknown optimizer 'sgd'; choose one of adam, adagrad"):
    optim.make_optimizer("sgd", 0.1)


def _single(data, cfg):
  """A one-device layout's initial state, training set and jitted epoch for ``cfg``."""
  layout = Layout(single_device_mesh(), data.num_entities)
  program = Program.build(cfg, layout, data.num_relations)
  queries = with_reciprocals(data.train, data.num_relations).astype(np.int32)
  epoch, _ = program.epoch(queries.shape[0])
  return program.init_state(), layout.place_training_set(queries), epoch


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_the_rate_set_between_epochs_is_the_rate_used(small_graph, optimizer, x64):
  """One epoch at rate r from the same state moves the parameters exactly as the plain optimiser
  at rate r does, and rate 0 leaves them where they were."""
  cfg = _config(optimizer=optimizer, dtype="float64")  # float64: the paths agree to ~1e-15
  start, queries, epoch_fn = _single(small_graph, cfg)
  assert start.params["entity"].dtype == jnp.float64
  frozen, _ = epoch_fn(step.set_learning_rate(jax.tree.map(jnp.copy, start), 0.0), queries)
  for name, table in frozen.params.items():
    np.testing.assert_array_equal(table, start.params[name])
  rate = 0.0137
  moved, _ = epoch_fn(step.set_learning_rate(jax.tree.map(jnp.copy, start), rate), queries)
  plain_cfg = cfg.replace(lr_schedule="constant", learning_rate=rate)
  plain_start, plain_queries, plain_fn = _single(small_graph, plain_cfg)
  plain, _ = plain_fn(plain_start, plain_queries)
  for name, table in plain.params.items():
    np.testing.assert_allclose(moved.params[name], table, rtol=1e-10, atol=1e-12)
    assert not np.array_equal(table, start.params[name])


def test_constant_schedule_keeps_the_plain_optimiser_state(small_graph):
  cfg = _config(lr_schedule="constant")
  layout = Layout(single_device_mesh(), small_graph.num_entities)
  state = Program.build(cfg, layout, small_graph.num_relations).init_state()
  assert not hasattr(state.opt_state, "hyperparams")
  assert step.set_learning_rate(state, 1.0).opt_state is state.opt_state
  cosine = Program.build(_config(), layout, small_graph.num_relations).init_state()
  rate = cosine.opt_state.hyperparams["learning_rate"]
  changed = step.set_learning_rate(cosine, 0.5).opt_state.hyperparams["learning_rate"]
  assert float(changed) == 0.5 and changed.dtype == rate.dtype
  assert changed.sharding == rate.sharding


@pytest.fixture(scope="module")
def scheduled(small_graph, tmp_path_factory):
  """6 epochs of the cosine schedule on one device: (workdir, results)."""
  workdir = tmp_path_factory.mktemp("scheduled") / "run"
  return workdir, train(_config(), small_graph, workdir, log=_quiet)


@pytest.mark.slow
def test_scheduled_run_records_a_falling_rate_and_resumes(small_graph, scheduled, tmp_path):
  run_dir, res = scheduled
  cfg = _config()
  rates = [c["learning_rate"] for c in res["curve"]]  # epochs 2, 4, 6: rates of epochs 1, 3, 5
  np.testing.assert_allclose(rates, [_reference_cosine(0.02, p) for p in (1 / 6, 3 / 6, 5 / 6)],
                             rtol=1e-12)
  assert res["metrics"]["test"]["realistic"]["mrr"] > 0.0
  # Stop after 3 epochs, then resume to 6: the same curve of rates and the same parameters.
  with pytest.raises(Interrupted):
    train(cfg, small_graph, tmp_path / "resumed", log=_quiet, should_stop=helpers.stop_after(3))
  again = train(cfg, small_graph, tmp_path / "resumed", log=_quiet)
  assert again["timings"]["resumed"] is True
  assert [c["learning_rate"] for c in again["curve"]] == rates
  with np.load(tmp_path / "resumed" / "best_params.npz") as got, \
       np.load(run_dir / "best_params.npz") as want:
    for name in want.files:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_scheduled_run_on_an_eight_device_mesh(small_graph, scheduled, tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
  _, one = scheduled
  mesh = train(_config(mesh="data:4,model:2"), small_graph, tmp_path / "mesh", log=_quiet)
  assert mesh["layout"]["mesh"] == "data:4,model:2"
  assert [c["learning_rate"] for c in mesh["curve"]] == [c["learning_rate"] for c in one["curve"]]
  np.testing.assert_allclose([c["valid_mrr"] for c in mesh["curve"]],
                             [c["valid_mrr"] for c in one["curve"]], atol=2e-3)

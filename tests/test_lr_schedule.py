"""The learning-rate schedule: its formula, that the optimiser really uses the rate set between
epochs, and a scheduled run end to end (one device and an 8-device mesh, with a resume)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import synthetic, train


@pytest.fixture(scope="module")
def small_graph():
  return synthetic.generate(seed=3, num_trees=2, branching=3, depth=3)


def _config(**kw):
  base = dict(model="RotE", dim=8, batch_size=64, max_epochs=6, max_seconds=0, eval_every=2,
              learning_rate=0.02, lr_schedule="cosine", checkpoint_every_seconds=0, mesh="none")
  base.update(kw)
  return train.Config(**base)


def _reference_cosine(lr, p):
  return lr * 0.5 * (1.0 + np.cos(np.pi * min(p, 1.0)))


def test_cosine_against_formula_on_random_budgets():
  rng = np.random.default_rng(0)
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
    assert train.learning_rate_at(cfg, epoch, seconds) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_cosine_hand_values_and_constant():
  cfg = _config(max_epochs=10, learning_rate=0.4)
  assert train.learning_rate_at(cfg, 0, 0.0) == pytest.approx(0.4)
  assert train.learning_rate_at(cfg, 5, 0.0) == pytest.approx(0.2)
  assert train.learning_rate_at(cfg, 10, 0.0) == pytest.approx(0.0, abs=1e-15)
  timed = _config(max_epochs=0, max_seconds=8.0, learning_rate=0.4)
  assert train.learning_rate_at(timed, 3, 2.0) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi / 4)))
  both = _config(max_epochs=4, max_seconds=100.0, learning_rate=0.4)  # the epochs end first
  assert train.learning_rate_at(both, 2, 1.0) == pytest.approx(0.2)
  const = _config(lr_schedule="constant", learning_rate=0.3)
  assert train.learning_rate_at(const, 5, 5.0) == 0.3


def test_unknown_schedule_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown lr_schedule 'step'; choose one of constant, cosine"):
    _config(lr_schedule="step").validate()


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_the_rate_set_between_epochs_is_the_rate_used(small_graph, optimizer, x64):
  """One epoch at rate r from the same state moves the parameters exactly as the plain optimiser
  at rate r does, and rate 0 leaves them where they were."""
  cfg = _config(optimizer=optimizer, dtype="float64")  # float64: the paths agree to ~1e-15
  queries = jnp.asarray(train.with_reciprocals(small_graph.train, small_graph.num_relations))
  epoch_fn, _ = train.make_epoch_fn(cfg, queries.shape[0])
  start = train.init_state(cfg, small_graph)
  frozen, _ = epoch_fn(train.set_learning_rate(jax.tree.map(jnp.copy, start), 0.0), queries)
  for name, table in frozen.params.items():
    np.testing.assert_array_equal(table, start.params[name])
  rate = 0.0137
  moved, _ = epoch_fn(train.set_learning_rate(jax.tree.map(jnp.copy, start), rate), queries)
  plain_cfg = _config(optimizer=optimizer, lr_schedule="constant", learning_rate=rate,
                      dtype="float64")
  plain_fn, _ = train.make_epoch_fn(plain_cfg, queries.shape[0])
  plain, _ = plain_fn(train.init_state(plain_cfg, small_graph), queries)
  for name, table in plain.params.items():
    np.testing.assert_allclose(moved.params[name], table, rtol=1e-10, atol=1e-12)
    assert not np.array_equal(table, start.params[name])


def test_constant_schedule_keeps_the_plain_optimiser_state(small_graph):
  state = train.init_state(_config(lr_schedule="constant"), small_graph)
  assert not hasattr(state.opt_state, "hyperparams")
  assert train.set_learning_rate(state, 1.0) is state


def test_scheduled_run_records_a_falling_rate_and_resumes(small_graph, tmp_path):
  cfg = _config()
  res = train.train(cfg, small_graph, tmp_path / "run", log=lambda s: None)
  rates = [c["learning_rate"] for c in res["curve"]]  # epochs 2, 4, 6: rates of epochs 1, 3, 5
  np.testing.assert_allclose(rates, [_reference_cosine(0.02, p) for p in (1 / 6, 3 / 6, 5 / 6)],
                             rtol=1e-12)
  assert res["metrics"]["test"]["realistic"]["mrr"] > 0.0
  # Stop after 3 epochs, then resume to 6: the same curve of rates and the same parameters.
  calls = {"n": 0}

  def stop_after_three():
    calls["n"] += 1
    return "test stop" if calls["n"] == 3 else None

  with pytest.raises(train.Interrupted):
    train.train(cfg, small_graph, tmp_path / "resumed", log=lambda s: None,
                should_stop=stop_after_three)
  again = train.train(cfg, small_graph, tmp_path / "resumed", log=lambda s: None)
  assert [c["learning_rate"] for c in again["curve"]] == rates
  got = np.load(tmp_path / "resumed" / "best_params.npz")
  want = np.load(tmp_path / "run" / "best_params.npz")
  for name in want.files:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_scheduled_run_on_an_eight_device_mesh(small_graph, tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
  one = train.train(_config(), small_graph, tmp_path / "one", log=lambda s: None)
  mesh = train.train(_config(mesh="data:4,model:2"), small_graph, tmp_path / "mesh",
                     log=lambda s: None)
  assert [c["learning_rate"] for c in mesh["curve"]] == [c["learning_rate"] for c in one["curve"]]
  np.testing.assert_allclose([c["valid_mrr"] for c in mesh["curve"]],
                             [c["valid_mrr"] for c in one["curve"]], atol=2e-3)


def test_runs_recorded_before_the_schedule_resume_only_at_a_constant_rate():
  """Runs recorded before ``lr_schedule`` existed trained at a constant rate: they resume (and
  finished cells of ``benchmarks/reproduce.py`` are reused) under ``constant``, not ``cosine``."""
  from hale_jax import checkpoints
  old = {"config": {"loss": "hale", "model": "RotL", "lam": 0.3}, "vocab_sha256": "x"}
  same = {"config": {**old["config"], "lr_schedule": "constant"}, "vocab_sha256": "x"}
  assert checkpoints.mismatch(old, same) == []
  cosine = {"config": {**old["config"], "lr_schedule": "cosine"}, "vocab_sha256": "x"}
  assert checkpoints.mismatch(old, cosine) == ["lr_schedule (None vs 'cosine')"]

"""End-to-end training, callbacks, reproducibility, the results file, workdir safety and the
launcher.

Compilation dominates every run here (a few seconds against well under a second of epochs),
so runs are shared between tests through module-scoped fixtures.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import models, objective, rundir, synthetic
from hale_jax.callbacks import Callback, Validation
from hale_jax.config import Config
from hale_jax.loop import train
from reference import np_allneg, np_samneg, np_softplus, np_transform, to_f64

REPO = Path(__file__).resolve().parents[1]


def _quiet(line):
  del line


@pytest.fixture(scope="module")
def small_graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _config(**kw) -> Config:
  base = dict(model="RotL", dim=16, batch_size=256, max_epochs=40, max_seconds=0,
              eval_every=20, learning_rate=0.01)
  base.update(kw)
  return Config.make(**base)


def _chance_mrr(data) -> float:
  return float(np.mean(1.0 / np.arange(1, data.num_entities + 1)))


class Recorder(Callback):
  """Keeps what every hook receives."""

  def __init__(self):
    self.starts, self.validations, self.ends, self.params = [], [], [], []

  def on_start(self, info):
    self.starts.append(info)

  def on_validation(self, v):
    self.validations.append(v)
    # v.params are the live state's: the next epoch donates their buffers, so copy them.
    self.params.append({k: np.array(a) for k, a in v.params.items()})

  def on_end(self, results):
    self.ends.append(results)


@pytest.fixture(scope="module")
def learned(small_graph, tmp_path_factory):
  """40 epochs of RotL with a recording callback: (workdir, results, recorder, log lines)."""
  workdir = tmp_path_factory.mktemp("learned") / "run"
  recorder, lines = Recorder(), []
  results = train(_config(), small_graph, workdir, log=lines.append, callbacks=[recorder])
  return workdir, results, recorder, lines


@pytest.mark.slow
def test_training_learns_far_above_chance(small_graph, learned):
  workdir, res, _, _ = learned
  test = res["metrics"]["test"]
  assert test["realistic"]["mrr"] > 10 * _chance_mrr(small_graph)
  assert test["pessimistic"]["mrr"] <= test["realistic"]["mrr"] <= test["optimistic"]["mrr"]
  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(res))
  assert on_disk["config"] == _config().flat()
  assert on_disk["metrics"]["epochs"] == 40
  assert on_disk["metrics"]["stop_reason"] == "max_epochs 40 reached"
  assert [c["epoch"] for c in on_disk["curve"]] == [20, 40]
  assert {"compile_seconds", "train_seconds", "eval_seconds"} <= set(on_disk["timings"])
  host = on_disk["timings"]["host_seconds_per_step"]
  per_epoch = on_disk["timings"]["seconds_per_epoch"]
  assert 0 < host * on_disk["metrics"]["steps"] / 40 <= per_epoch  # a share of the epoch's time
  assert on_disk["versions"]["jax"] == jax.__version__
  assert on_disk["layout"] == {"mesh": None, "processes": 1}
  names = (workdir / "entities.tsv").read_text().splitlines()
  assert names[0] == f"0\t{small_graph.entities[0]}" and len(names) == small_graph.num_entities
  run = json.loads((workdir / "run.json").read_text())
  assert run["config"] == on_disk["config"] and run["dataset"] == small_graph.name


@pytest.mark.slow
def test_callbacks_see_the_start_every_validation_and_the_results(small_graph, learned):
  workdir, res, recorder, lines = learned
  assert len(recorder.starts) == 1
  start = recorder.starts[0]
  assert start["config"] == _config() and Path(start["workdir"]) == workdir
  assert start["epoch"] == 0 and start["steps_per_epoch"] == res["metrics"]["steps"] // 40
  assert [v.epoch for v in recorder.validations] == [20, 40]
  for v, point in zip(recorder.validations, res["curve"]):
    assert isinstance(v, Validation)
    assert set(v.metrics) == {"realistic", "pessimistic", "optimistic"}
    assert v.metrics["realistic"]["mrr"] == point["valid_mrr"]
    assert v.loss == point["loss"] and v.learning_rate == point["learning_rate"] == 0.01
    assert v.step == v.epoch * start["steps_per_epoch"]
    assert v.max_epochs == 40 and v.max_seconds == 0
    assert set(v.params) == set(recorder.params[0])
    assert v.params["entity"].shape == (small_graph.num_entities, 16)
    assert v.triples_per_second > 0 and v.train_seconds > 0
  best = max(recorder.validations, key=lambda v: v.metrics["realistic"]["mrr"])
  last = recorder.validations[-1]
  assert last.best == best.metrics["realistic"] and last.best_epoch == best.epoch
  assert res["metrics"]["best_epoch"] == best.epoch
  assert recorder.validations[0].improved
  assert res["metrics"]["valid"]["realistic"] == best.metrics["realistic"]
  assert recorder.ends == [res]
  # The progress printer is always there: one line per validation.
  assert sum(line.startswith("epoch ") for line in lines) == 2, lines


class StopAtFirstValidation:
  """A callback with one hook only (a plain object: hooks are looked up by name)."""

  def __init__(self):
    self.seen = []

  def on_validation(self, v):
    self.seen.append(v.epoch)
    return f"valid MRR {v.metrics['realistic']['mrr']:.3f} is enough"


@pytest.fixture(scope="module")
def stopped(small_graph, tmp_path_factory):
  """The ``learned`` config again, ended by a callback at its first validation (epoch 20)."""
  workdir = tmp_path_factory.mktemp("stopped") / "run"
  stopper, ends = StopAtFirstValidation(), Recorder()
  res = train(_config(), small_graph, workdir, log=_quiet, callbacks=[stopper, ends])
  return workdir, res, stopper, ends


def _params(workdir):
  with np.load(Path(workdir) / "best_params.npz") as f:
    return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_a_callback_stops_training_early(stopped):
  workdir, res, stopper, ends = stopped
  assert stopper.seen == [20]
  reason = res["metrics"]["stop_reason"]
  assert reason.startswith("valid MRR ") and reason.endswith(" is enough")
  assert res["metrics"]["epochs"] == 20 and [c["epoch"] for c in res["curve"]] == [20]
  on_disk = json.loads((workdir / "results.json").read_text())
  assert on_disk["metrics"]["stop_reason"] == reason
  assert ends.ends == [res] and [v.epoch for v in ends.validations] == [20]
  # The best-valid parameters were tested as usual and the final state checkpointed.
  assert res["metrics"]["best_epoch"] == 20 and (workdir / "best_params.npz").exists()
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == \
      [str(res["metrics"]["steps"])]  # numbered by the optimiser steps done


@pytest.mark.slow
def test_same_seed_same_result(learned, stopped):
  """The ``stopped`` run is the ``learned`` config again: its first 20 epochs are the same
  bits (losses, validation, parameters)."""
  _, a, recorder, _ = learned
  b_dir, b, *_ = stopped
  for key in ("epoch", "loss", "valid_mrr", "valid_hits@10", "learning_rate"):
    assert b["curve"][0][key] == a["curve"][0][key], key
  assert b["metrics"]["valid"]["realistic"] == recorder.validations[0].metrics["realistic"]
  pb = _params(b_dir)
  assert sorted(pb) == sorted(recorder.params[0])
  for k, v in recorder.params[0].items():
    np.testing.assert_array_equal(pb[k], v)


@pytest.mark.slow
def test_finished_run_is_kept_and_a_different_one_refused(small_graph, learned, tmp_path):
  src, first, *_ = learned
  workdir = tmp_path / "w"
  shutil.copytree(src, workdir)
  before = (workdir / "results.json").read_text()
  cfg = _config()
  lines = []
  again = train(cfg, small_graph, workdir, log=lines.append)  # already finished: not retrained
  assert again == json.loads(before) and (workdir / "results.json").read_text() == before
  assert any("already finished" in line for line in lines), lines
  # A setting a resume may change does not make it another run.
  assert train(cfg.replace(eval_chunk=64), small_graph, workdir, log=_quiet) == again
  for changed in ("dim", "seed"):
    with pytest.raises(FileExistsError, match=changed):
      train(cfg.replace(**{changed: 8}), small_graph, workdir, log=_quiet)
  assert (workdir / "results.json").read_text() == before
  other = synthetic.generate(seed=1, num_trees=3, branching=3, depth=4)  # other entities
  with pytest.raises(FileExistsError, match="vocabulary"):
    train(cfg, other, workdir, log=_quiet)
  # results.json without run.json: some other program's output, refused too.
  stray = tmp_path / "stray"
  stray.mkdir()
  (stray / "results.json").write_text("{}")
  with pytest.raises(rundir.WorkdirError, match="not a hale_jax run's"):
    train(cfg, small_graph, stray, log=_quiet)
  assert sorted(p.name for p in stray.iterdir()) == ["results.json"]
  # --overwrite trains the other run; another seed gives other parameters.
  res = train(cfg.replace(seed=8), small_graph, workdir, log=_quiet, overwrite=True)
  assert json.loads((workdir / "results.json").read_text())["config"]["seed"] == 8
  assert json.loads((workdir / "run.json").read_text())["config"]["seed"] == 8
  assert res["curve"][0]["loss"] != first["curve"][0]["loss"]
  assert not np.array_equal(_params(workdir)["entity"], _params(src)["entity"])


# Each model with one of the baseline losses: a train() call costs a compilation, so the
# models and the losses share their runs (RotL with HaLE is the ``learned`` run).
MODEL_LOSS = [("TransE", "samneg"), ("DistMult", "allneg"), ("RotatE", "advneg"),
              ("RotE", "nonneg")]


@pytest.mark.slow
@pytest.mark.parametrize("model, loss", MODEL_LOSS)
def test_every_model_and_baseline_loss_trains(small_graph, tmp_path, model, loss):
  epochs = 60 if loss in ("samneg", "advneg") else 15
  cfg = _config(model=model, loss=loss, activation="identity", max_epochs=epochs,
                eval_every=epochs, num_negatives=32)
  res = train(cfg, small_graph, tmp_path / loss, log=_quiet)
  assert all(np.isfinite(c["loss"]) for c in res["curve"])
  assert res["config"]["model"] == model and res["config"]["loss"] == loss
  with np.load(tmp_path / loss / "best_params.npz") as p:
    tables = set(p.files)
  # KGEmb's b_h + b_t for samneg and advneg (bias auto); none for the others.
  assert ({"bias_head", "bias_tail"} <= tables) == (loss in ("samneg", "advneg"))
  mrr = res["metrics"]["test"]["realistic"]["mrr"]
  # SamNeg learns slowly (as in the paper's Fig. 2); NonNeg has no negatives: it only must run.
  if loss == "samneg":
    assert mrr > 1.3 * _chance_mrr(small_graph)
  elif loss != "nonneg":
    assert mrr > 5 * _chance_mrr(small_graph)
  else:
    assert mrr > 0.0


@pytest.mark.slow
def test_baseline_losses_match_numpy(small_graph):
  # Jitted: one compilation each instead of one per eager op.
  params = jax.jit(models.init_params, static_argnums=(0, 2, 3, 4, 5))(
      "RotE", jax.random.PRNGKey(0), small_graph.num_entities, small_graph.num_relations, 8,
      0.3)
  batch = jnp.asarray(small_graph.train[:16])
  key = jax.random.PRNGKey(5)
  e = to_f64(params)["entity"]
  q = np_transform("RotE", params, batch[:, 0], batch[:, 1])
  c = np_softplus(to_f64(params)["scale"])[np.asarray(batch[:, 1])]
  t = np.asarray(batch[:, 2])
  pos = -c * ((q - e[t]) ** 2).sum(-1)  # identity activation: score = -c_r d^2

  def loss_fn(**kw):
    cfg = Config.make(model="RotE", dim=8, activation="identity", bias="none", **kw)
    return jax.jit(objective.make_loss(cfg.objective, "RotE", num_sampled=2))

  negs = np.asarray(jax.random.randint(key, (16, 8), 0, small_graph.num_entities))
  neg = -c[:, None] * ((q[:, None, :] - e[negs]) ** 2).sum(-1)
  want, _ = np_samneg(pos, neg, margin=6.0)
  got = loss_fn(loss="samneg", num_negatives=8, margin=6.0)(params, batch, key)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)

  scores = -c[:, None] * ((q[:, None, :] - e[None]) ** 2).sum(-1)
  want_all, _ = np_allneg(scores, t)
  got_all = loss_fn(loss="allneg")(params, batch, key)
  np.testing.assert_allclose(float(got_all), want_all, rtol=1e-5)
  # Without c_r the scale parameters get no gradient.
  grads = jax.grad(loss_fn(rel_scale=False))(params, batch, key)
  assert not np.any(np.asarray(grads["scale"]))


# ----------------------------------------------------------------------------- the launcher

def _write_tiny(folder: Path):
  folder.mkdir()
  g = synthetic.generate(seed=2, num_trees=1, branching=2, depth=3)
  for s in ("train", "valid", "test"):
    rows = g.split(s)
    (folder / f"{s}.txt").write_text("".join(
        f"{g.entities[h]}\t{g.relations[r]}\t{g.entities[t]}\n" for h, r, t in rows))


def _launch(*args, cwd=REPO):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "hale_jax.launch", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_launch_runs_and_refuses_bad_input(tmp_path):
  data = tmp_path / "tiny"
  _write_tiny(data)
  out = _launch(f"--data_dir={data}", "--dim=8", "--batch_size=32", "--max_epochs=2",
                "--max_seconds=0", f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 0, out.stderr
  assert "test (realistic ties)" in out.stdout and "test (pessimistic ties)" in out.stdout
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["metrics"]["epochs"] == 2
  assert results["run"]["argv"][1:] == [f"--data_dir={data}", "--dim=8", "--batch_size=32",
                                        "--max_epochs=2", "--max_seconds=0",
                                        f"--workdir={tmp_path / 'run'}"]
  run = json.loads((tmp_path / "run" / "run.json").read_text())
  assert run["data"]["kind"] == "folder" and run["data"]["path"] == str(data.resolve())

  # An earlier run's results are never overwritten silently.
  again = _launch(f"--data_dir={data}", "--dim=4", "--batch_size=32", "--max_epochs=1",
                  "--max_seconds=0", f"--workdir={tmp_path / 'run'}")
  assert again.returncode == 2
  assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr
  assert "Traceback" not in again.stderr

  with open(data / "valid.txt", "a") as f:
    f.write("a\tb\n")
  bad = _launch(f"--data_dir={data}", "--max_epochs=1", f"--workdir={tmp_path / 'bad'}")
  assert bad.returncode == 2
  line = bad.stderr.strip()
  assert line.count("\n") == 0 and "valid.txt:" in line and "Traceback" not in line
  assert not (tmp_path / "bad").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["RotH", "RefH", "AttH"])
def test_hyperbolic_models_learn_with_hale(small_graph, tmp_path, model):
  """40 epochs of HaLE (the ``learned`` run's settings) with each hyperbolic model: far above
  chance, like RotL."""
  res = train(_config(model=model), small_graph, tmp_path / model, log=_quiet)
  assert all(np.isfinite(c["loss"]) for c in res["curve"])
  assert res["metrics"]["test"]["realistic"]["mrr"] > 5 * _chance_mrr(small_graph)

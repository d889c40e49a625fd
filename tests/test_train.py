"""End-to-end training, reproducibility, results file, workdir safety and the launcher."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hale_jax import synthetic, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _config(**kw):
  base = dict(model="RotL", dim=16, batch_size=256, max_epochs=40, max_seconds=0,
              eval_every=20, learning_rate=0.01)
  base.update(kw)
  return train.Config(**base)


def test_training_learns_far_above_chance(small_graph, tmp_path):
  res = train.train(_config(), small_graph, tmp_path / "run", log=lambda s: None)
  chance_mrr = np.mean(1.0 / np.arange(1, small_graph.num_entities + 1))
  test = res["metrics"]["test"]
  assert test["realistic"]["mrr"] > 10 * chance_mrr
  assert test["pessimistic"]["mrr"] <= test["realistic"]["mrr"] <= test["optimistic"]["mrr"]
  on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
  assert on_disk["metrics"]["test"] == test
  assert on_disk["config"]["model"] == "RotL"
  assert on_disk["metrics"]["epochs"] == 40
  assert [c["epoch"] for c in on_disk["curve"]] == [20, 40]
  assert {"compile_seconds", "train_seconds", "eval_seconds"} <= set(on_disk["timings"])
  host, per_epoch = on_disk["timings"]["host_seconds_per_step"], on_disk["timings"]["seconds_per_epoch"]
  assert 0 < host * on_disk["metrics"]["steps"] / 40 <= per_epoch  # a share of the epoch's time
  assert on_disk["versions"]["jax"] == jax.__version__
  names = (tmp_path / "run" / "entities.tsv").read_text().splitlines()
  assert names[0] == f"0\t{small_graph.entities[0]}" and len(names) == small_graph.num_entities


@pytest.mark.parametrize("model", ["TransE", "DistMult", "RotatE", "RotE"])
def test_every_model_trains(small_graph, tmp_path, model):
  res = train.train(_config(model=model, max_epochs=10, eval_every=10), small_graph,
                    tmp_path / model, log=lambda s: None)
  assert np.isfinite(res["curve"][-1]["loss"])
  assert res["metrics"]["test"]["realistic"]["mrr"] > 0.0


def test_same_seed_same_result(small_graph, tmp_path):
  cfg = _config(max_epochs=3, eval_every=3)
  a = train.train(cfg, small_graph, tmp_path / "a", log=lambda s: None)
  b = train.train(cfg, small_graph, tmp_path / "b", log=lambda s: None)
  assert a["metrics"]["test"] == b["metrics"]["test"]
  pa, pb = np.load(tmp_path / "a" / "best_params.npz"), np.load(tmp_path / "b" / "best_params.npz")
  for k in pa.files:
    np.testing.assert_array_equal(pa[k], pb[k])
  c = train.train(_config(max_epochs=3, eval_every=3, seed=7), small_graph, tmp_path / "c",
                  log=lambda s: None)
  assert not np.array_equal(np.load(tmp_path / "c" / "best_params.npz")["entity"], pa["entity"])


def test_finished_run_is_kept_and_a_different_one_refused(small_graph, tmp_path):
  cfg = _config(max_epochs=1, eval_every=1)
  first = train.train(cfg, small_graph, tmp_path / "w", log=lambda s: None)
  before = (tmp_path / "w" / "results.json").read_text()
  again = train.train(cfg, small_graph, tmp_path / "w", log=lambda s: None)  # already finished
  assert again == first and (tmp_path / "w" / "results.json").read_text() == before
  with pytest.raises(FileExistsError, match="dim"):
    train.train(_config(max_epochs=1, eval_every=1, dim=8), small_graph, tmp_path / "w",
                log=lambda s: None)
  assert (tmp_path / "w" / "results.json").read_text() == before
  other = synthetic.generate(seed=1, num_trees=3, branching=3, depth=4)  # other entities
  with pytest.raises(FileExistsError, match="vocabulary"):
    train.train(cfg, other, tmp_path / "w", log=lambda s: None)
  train.train(_config(max_epochs=1, eval_every=1, dim=8), small_graph, tmp_path / "w",
              log=lambda s: None, overwrite=True)
  assert json.loads((tmp_path / "w" / "results.json").read_text())["config"]["dim"] == 8


def test_bad_config_is_refused():
  for bad in (dict(alpha=0.0), dict(model="ComplEx"), dict(optimizer="sgd"),
              dict(max_seconds=0, max_epochs=0), dict(dim=0), dict(activation="relu")):
    with pytest.raises(ValueError):
      _config(**bad).validate()


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


def test_launch_runs_and_refuses_bad_input(tmp_path):
  data = tmp_path / "tiny"
  _write_tiny(data)
  out = _launch(f"--data_dir={data}", "--dim=8", "--batch_size=32", "--max_epochs=2",
                "--max_seconds=0", f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 0, out.stderr
  assert "test (realistic ties)" in out.stdout and "test (pessimistic ties)" in out.stdout
  assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["epochs"] == 2

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


@pytest.mark.parametrize("flagfile", sorted(p.name for p in (REPO / "launch").glob("*.flags")))
def test_flagfiles_parse(flagfile):
  from absl import flags
  import hale_jax.launch  # noqa: F401  (defines the flags)
  fl = flags.FLAGS
  try:
    fl(["launch", f"--flagfile={REPO / 'launch' / flagfile}"])  # raises on unknown/bad values
    assert fl["dataset"].present and fl["max_seconds"].value > 0
    assert fl["model"].value == "RotL"
  finally:
    fl.unparse_flags()


@pytest.mark.parametrize("loss", ["samneg", "advneg", "allneg", "nonneg"])
def test_baseline_losses_train(small_graph, tmp_path, loss):
  epochs = 60 if loss in ("samneg", "advneg") else 15
  cfg = _config(loss=loss, activation="identity", max_epochs=epochs, eval_every=epochs,
                num_negatives=32)
  res = train.train(cfg, small_graph, tmp_path / loss, log=lambda s: None)
  assert all(np.isfinite(c["loss"]) for c in res["curve"])
  chance_mrr = np.mean(1.0 / np.arange(1, small_graph.num_entities + 1))
  mrr = res["metrics"]["test"]["realistic"]["mrr"]
  # SamNeg learns slowly (as in the paper's Fig. 2); NonNeg has no negatives: it only must run.
  if loss == "samneg":
    assert mrr > 1.3 * chance_mrr
  elif loss != "nonneg":
    assert mrr > 5 * chance_mrr


def test_batch_loss_baselines_match_numpy(small_graph):
  from hale_jax import baselines, models
  import jax.numpy as jnp
  params = models.init_params(jax.random.PRNGKey(0), "RotE", small_graph.num_entities,
                              2 * small_graph.num_relations, 8, init_scale=0.3)
  batch = jnp.asarray(small_graph.train[:16])
  key = jax.random.PRNGKey(5)
  act = lambda x: x  # identity
  e = np.asarray(params["entity"], np.float64)
  q = np.asarray(models.transform("RotE", params, batch[:, 0], batch[:, 1]), np.float64)
  c = np.log1p(np.exp(np.asarray(params["scale"], np.float64)))[np.asarray(batch[:, 1])]
  t = np.asarray(batch[:, 2])
  pos = -c * ((q - e[t]) ** 2).sum(-1)
  negs = np.asarray(jax.random.randint(key, (16, 8), 0, small_graph.num_entities))
  neg = -c[:, None] * ((q[:, None, :] - e[negs]) ** 2).sum(-1)
  softplus = lambda z: np.logaddexp(0.0, z)
  want = np.mean(np.concatenate([softplus(-(pos + 6.0)), softplus(neg + 6.0).ravel()]))
  got = train.batch_loss(params, batch, key, model="rote", activation=act, lam=0.3,
                         num_sampled=2, loss="samneg", num_negatives=8, margin=6.0)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  d_all = -c[:, None] * ((q[:, None, :] - e[None]) ** 2).sum(-1)
  lse = np.log(np.exp(d_all - d_all.max(1, keepdims=True)).sum(1)) + d_all.max(1)
  want_all = np.mean(lse - d_all[np.arange(16), t])
  got_all = train.batch_loss(params, batch, key, model="rote", activation=act, lam=0.3,
                             num_sampled=2, loss="allneg")
  np.testing.assert_allclose(float(got_all), want_all, rtol=1e-5)
  # Without c_r the scale parameters get no gradient.
  grads = jax.grad(train.batch_loss)(params, batch, key, model="rote", activation=act, lam=0.3,
                                     num_sampled=2, rel_scale=False)
  assert not np.any(np.asarray(grads["scale"]))
  del baselines

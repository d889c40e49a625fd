"""benchmarks.self_rank against a NumPy brute force, on a run folder made by hand (the generated
graph's run.json and random RotL parameters in best_params.npz; nothing is trained)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks import self_rank
from hale_jax import dataspec, models, rundata, rundir, runfiles
from hale_jax.config import Config

SPEC = dataspec.Synthetic()
TRANSFORM = jax.jit(models.transform, static_argnums=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  data = SPEC.load()
  workdir = tmp_path_factory.mktemp("run")
  rundir.write_run(workdir, rundir.run_spec(Config.make(model="RotL", dim=8), data, SPEC))
  rundata.keep_data(workdir, data, SPEC)
  shapes = jax.eval_shape(lambda: models.init_params("RotL", jax.random.PRNGKey(0),
                                                     data.num_entities, data.num_relations, 8))
  rng = np.random.default_rng(3)
  params = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in shapes.items()}
  runfiles.write_npz(workdir / "best_params.npz", params)
  return workdir, data, {k: v.astype(np.float64) for k, v in params.items()}


def test_top1_breakdown_against_brute_force(run_dir):
  workdir, data, params = run_dir
  got = self_rank.top1_breakdown(str(workdir), "test", chunk=512, min_queries=1)
  nr, t = data.num_relations, data.test
  heads = np.concatenate([t[:, 0], t[:, 2]])
  rels = np.concatenate([t[:, 1], t[:, 1] + nr])
  targets = np.concatenate([t[:, 2], t[:, 0]])
  q = np.asarray(TRANSFORM("rotl", params, heads, rels), np.float64)
  d = ((q[:, None, :] - params["entity"][None]) ** 2).sum(-1)
  known = {}
  for h, r, tt in np.concatenate([data.train, data.valid, data.test]):
    known.setdefault((h, r), set()).add(tt)
    known.setdefault((tt, r + nr), set()).add(h)
  for i, (h, r, tt) in enumerate(zip(heads, rels, targets)):
    d[i, [c for c in known[(h, r)] if c != tt]] = np.inf
  top = np.argmin(d, axis=1)
  assert got["queries"] == len(heads)
  assert got["hits@1"] == pytest.approx(np.mean(top == targets))
  assert got["self@1"] == pytest.approx(np.mean(top == heads))
  assert sum(n for n, _, _ in got["relations"].values()) == len(heads)


@pytest.mark.slow
def test_relation_geometry_against_numpy(run_dir):
  workdir, data, params = run_dir
  counts = np.bincount(data.train[:, 1])
  rid = int(np.argmax(counts))  # only the largest relation (both directions) is kept
  geo = self_rank.relation_geometry(str(workdir), min_triples=int(counts.max()))
  name = data.relations[rid]
  assert sorted(geo) == [name, f"{name}^-1"]
  rows = data.train[data.train[:, 1] == rid]
  q = np.asarray(TRANSFORM("rotl", params, rows[:, 0], np.full(len(rows), rid)))
  c = np.log1p(np.exp(params["scale"][rid]))
  assert geo[name]["triples"] == len(rows)
  assert geo[name]["own_median"] == pytest.approx(
      np.median(c * ((q - params["entity"][rows[:, 0]]) ** 2).sum(1)), rel=1e-4)
  assert geo[name]["target_median"] == pytest.approx(
      np.median(c * ((q - params["entity"][rows[:, 2]]) ** 2).sum(1)), rel=1e-4)
  pairs = params["rotation"][rid].reshape(-1, 2)
  assert geo[name]["identity_planes"] == pytest.approx(
      np.mean(pairs[:, 0] / np.linalg.norm(pairs, axis=1) > 0.99))
